"""Per client address limits, in memory and without I/O: the signalling sockets open without a join, and the
rate of link checks."""

from __future__ import annotations

from server.consultation import TokenBucket


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


class AddressRate:
    """A token bucket per client address (`burst` at once, refilled at `rate` per second), for one process.

    An address idle long enough for its bucket to be full again is the same as an unknown one, so such addresses
    are forgotten whenever the table grows past `max_addresses`: the table stays bounded under a flood of
    addresses, and nobody is refused for an address that was busy long ago.
    """

    def __init__(self, rate: float, burst: float, *, max_addresses: int = 10_000) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate, self.burst, self.max_addresses = rate, burst, max_addresses
        self._buckets: dict[str, TokenBucket] = {}
        self._sweep_above = max_addresses  # doubles while busy addresses fill the table: amortised O(1) per call

    def allow(self, address: str, now: float) -> bool:
        """Take one token for `address` at time `now` (seconds, monotonic); False when it has none left."""
        bucket = self._buckets.get(address)
        if bucket is None:
            bucket = self._buckets[address] = TokenBucket(rate=self.rate, burst=self.burst)
        allowed = bucket.take(now)
        if len(self._buckets) > self._sweep_above:
            self._forget_idle(now)
        return allowed

    def _forget_idle(self, now: float) -> None:
        refill_s = self.burst / self.rate
        self._buckets = {a: b for a, b in self._buckets.items() if now - b.stamp < refill_s}
        self._sweep_above = max(self.max_addresses, 2 * len(self._buckets))

    @property
    def addresses(self) -> int:
        return len(self._buckets)
