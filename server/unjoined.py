"""The signalling sockets each client address holds open without having joined, capped per address (no I/O)."""

from __future__ import annotations


class UnjoinedSockets:
    """Counts, per client address, the sockets between their upgrade and their join (or close), for one process.

    A socket that has joined no longer counts: a joined participant is limited by the link it holds. Addresses
    whose count falls to zero are forgotten, so the table holds only addresses with a socket open now.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        self.limit = limit
        self._held: dict[str, int] = {}

    def open(self, address: str) -> UnjoinedSocket | None:
        """Count a new socket from `address`; None, and nothing counted, when `address` is at the limit."""
        held = self._held.get(address, 0)
        if held >= self.limit:
            return None
        self._held[address] = held + 1
        return UnjoinedSocket(self, address)

    def held(self, address: str) -> int:
        """How many sockets `address` holds open without having joined."""
        return self._held.get(address, 0)

    @property
    def total(self) -> int:
        """Unjoined sockets of all addresses."""
        return sum(self._held.values())

    @property
    def addresses(self) -> int:
        """Addresses holding at least one unjoined socket."""
        return len(self._held)

    def _release(self, address: str) -> None:
        held = self._held[address] - 1
        if held:
            self._held[address] = held
        else:
            del self._held[address]


class UnjoinedSocket:
    """One socket's place in the count, from its upgrade until it has joined or closed, whichever comes first."""

    __slots__ = ("_sockets", "address", "counted")

    def __init__(self, sockets: UnjoinedSockets, address: str) -> None:
        self._sockets = sockets
        self.address = address
        self.counted = True

    def joined(self) -> None:
        """The socket joined: it no longer counts."""
        self._release()

    def closed(self) -> None:
        """The socket closed, joined or not (joined already released it: then nothing changes)."""
        self._release()

    def _release(self) -> None:
        if self.counted:
            self.counted = False
            self._sockets._release(self.address)
