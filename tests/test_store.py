"""Consultations and membership against a real Redis: the embedded one and Debian's Redis 7."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from server.config import load_settings
from server.consultation import secret_digest
from server.store.connection import RedisHandle, open_redis
from server.store.consultations import ConsultationStore, Member

NOW = int(time.time() * 1000)


@pytest.fixture
async def handle(redis_env: dict[str, str]) -> AsyncIterator[RedisHandle]:
    handle = await open_redis(load_settings(redis_env))
    await handle.client.flushdb()
    yield handle
    await handle.close()


@pytest.fixture
def store(handle: RedisHandle) -> ConsultationStore:
    return ConsultationStore(handle.client, membership_ttl_s=45)


def member(pid: str, role: str = "citizen", node: str = "n1") -> Member:
    return Member(pid, role, node, role)  # type: ignore[arg-type]


async def test_created_tokens_resolve_and_only_their_digest_is_stored(
    store: ConsultationStore, handle: RedisHandle
) -> None:
    made = await store.create(now_ms=NOW, ttl_s=3600)
    assert await store.resolve(made.tokens["citizen"]) == (made.consultation, "citizen")
    assert await store.resolve(made.tokens["clinician"]) == (made.consultation, "clinician")
    assert await store.resolve("x" * 32) is None
    keys = {key.decode() async for key in handle.client.scan_iter("*")}
    values = b" ".join([await handle.client.dump(k) or b"" for k in keys])
    for token in made.tokens.values():
        assert f"stue:token:{secret_digest(token)}" in keys
        assert token.encode() not in values
        assert all(token not in key for key in keys)


async def test_join_lists_the_others_and_leave_returns_who_remains(store: ConsultationStore) -> None:
    made = await store.create(now_ms=NOW, ttl_s=3600)
    first = await store.join(made.consultation, member("p_a"), now_ms=NOW)
    assert first.others == [] and first.removed == []
    second = await store.join(made.consultation, member("p_b", "clinician", "n2"), now_ms=NOW)
    assert second.others == [first.member]
    assert await store.leave(made.consultation, first.member) == [second.member]
    assert await store.leave(made.consultation, first.member) is None  # already gone: nobody is told twice


async def test_join_order_is_kept_in_seq_among_members_present_together(store: ConsultationStore) -> None:
    made = await store.create(now_ms=NOW, ttl_s=3600)
    a = (await store.join(made.consultation, member("p_a"), now_ms=NOW)).member
    b = (await store.join(made.consultation, member("p_b", "clinician"), now_ms=NOW)).member
    assert b.seq > a.seq  # b joined while a was there: b is the newcomer of the pair (impolite)
    await store.leave(made.consultation, a)
    c = (await store.join(made.consultation, Member("p_c", "citizen", "n1", "citizen"), now_ms=NOW)).member
    assert c.seq > b.seq  # the order holds against everyone present, whatever has left meanwhile
    assert await store.member(made.consultation, "p_c") == c


def test_a_member_value_from_before_resume_still_reads() -> None:
    assert Member.decode("p_a", "citizen|n1|citizen") == Member("p_a", "citizen", "n1", "citizen", 0, "")
    now = Member("p_a", "citizen", "n1", "citizen", 7, "d" * 64)
    assert Member.decode("p_a", now.encode()) == now


async def test_a_membership_resumes_once_and_only_as_the_membership_that_was_read(store: ConsultationStore) -> None:
    made = await store.create(now_ms=NOW, ttl_s=3600)
    a = (await store.join(made.consultation, member("p_a"), now_ms=NOW)).member
    b = (await store.join(made.consultation, member("p_b", "clinician"), now_ms=NOW)).member
    moved = replace(a, node="n2", resume_digest="d" * 64)
    assert await store.resume(made.consultation, a, moved, now_ms=NOW + 1000) == [b]
    assert await store.member(made.consultation, "p_a") == moved
    # The old connection's view is stale now: it can neither resume, suspend nor remove the membership.
    assert await store.resume(made.consultation, a, replace(a, node="n3"), now_ms=NOW + 1000) is None
    assert not await store.suspend(made.consultation, a, deadline_ms=NOW + 2000)
    assert await store.leave(made.consultation, a) is None
    assert await store.member(made.consultation, "p_a") == moved
    # the resume pushed the deadline back by a whole membership TTL from then; b's ran out
    assert [s.participant for s in await store.sweep(now_ms=NOW + 45_500)] == ["p_b"]


async def test_a_suspended_membership_is_swept_at_its_deadline_unless_resumed(store: ConsultationStore) -> None:
    made = await store.create(now_ms=NOW, ttl_s=3600)
    a = (await store.join(made.consultation, member("p_a"), now_ms=NOW)).member
    b = (await store.join(made.consultation, member("p_b", "clinician"), now_ms=NOW)).member
    assert await store.suspend(made.consultation, a, deadline_ms=NOW + 1000)
    assert await store.sweep(now_ms=NOW + 999) == []
    swept = await store.sweep(now_ms=NOW + 1001)
    assert [(s.participant, s.remaining) for s in swept] == [("p_a", [b])]
    assert await store.resume(made.consultation, a, replace(a, node="n2"), now_ms=NOW + 1002) is None
    assert not await store.suspend(made.consultation, a, deadline_ms=NOW + 9000)


async def test_a_membership_past_its_deadline_cannot_be_resumed_before_the_sweep(store: ConsultationStore) -> None:
    made = await store.create(now_ms=NOW, ttl_s=3600)
    a = (await store.join(made.consultation, member("p_a"), now_ms=NOW)).member
    await store.suspend(made.consultation, a, deadline_ms=NOW + 1000)
    assert await store.resume(made.consultation, a, replace(a, node="n2"), now_ms=NOW + 1001) is None
    assert await store.resume(made.consultation, a, replace(a, node="n2"), now_ms=NOW + 999) == []


async def test_joining_with_the_same_link_replaces_the_old_connection(store: ConsultationStore) -> None:
    made = await store.create(now_ms=NOW, ttl_s=3600)
    await store.join(made.consultation, member("p_old"), now_ms=NOW)
    await store.join(made.consultation, member("p_doc", "clinician"), now_ms=NOW)
    result = await store.join(made.consultation, member("p_new"), now_ms=NOW + 10)
    assert [(r.member.participant, r.reason) for r in result.removed] == [("p_old", "replaced")]
    assert [m.participant for m in result.others] == ["p_doc"]


async def test_expired_memberships_are_swept_and_reported_once(store: ConsultationStore) -> None:
    made = await store.create(now_ms=NOW, ttl_s=3600)
    await store.join(made.consultation, member("p_a"), now_ms=NOW)
    await store.join(made.consultation, member("p_b", "clinician"), now_ms=NOW + 30_000)
    assert await store.sweep(now_ms=NOW + 44_000) == []
    swept = await store.sweep(now_ms=NOW + 46_000)
    assert [(s.participant, [m.participant for m in s.remaining]) for s in swept] == [("p_a", ["p_b"])]
    assert await store.sweep(now_ms=NOW + 46_000) == []
    # a membership refreshed in time survives; one already swept is reported lost
    lost = await store.refresh([(made.consultation, "p_b"), (made.consultation, "p_a")], now_ms=NOW + 60_000)
    assert lost == [(made.consultation, "p_a")]
    assert await store.sweep(now_ms=NOW + 80_000) == []


async def test_a_late_joiner_drops_members_whose_server_stopped_refreshing(store: ConsultationStore) -> None:
    made = await store.create(now_ms=NOW, ttl_s=3600)
    await store.join(made.consultation, member("p_crashed"), now_ms=NOW)
    result = await store.join(made.consultation, member("p_doc", "clinician"), now_ms=NOW + 50_000)
    assert result.others == []
    assert [(r.member.participant, r.reason) for r in result.removed] == [("p_crashed", "timeout")]


async def test_embedded_redis_keeps_consultations_across_restarts(tmp_path: Path) -> None:
    settings = load_settings({"STUE_DATA_DIR": str(tmp_path)})
    handle = await open_redis(settings)
    made = await ConsultationStore(handle.client, membership_ttl_s=45).create(now_ms=NOW, ttl_s=10**9 // 1000)
    await handle.close()
    assert (tmp_path / "appendonly.aof").exists() or (tmp_path / "appendonlydir").exists()
    handle = await open_redis(settings)
    try:
        store = ConsultationStore(handle.client, membership_ttl_s=45)
        assert await store.resolve(made.tokens["citizen"]) == (made.consultation, "citizen")
    finally:
        await handle.close()


async def test_refresh_in_batches_reports_exactly_the_lost_memberships(store: ConsultationStore) -> None:
    made = await store.create(now_ms=NOW, ttl_s=3600)
    for i in range(25):
        await store.join(
            made.consultation,
            Member(f"p_{i}", "citizen", "n1", f"link{i}"),
            now_ms=NOW,
        )
    pairs = [(made.consultation, f"p_{i}") for i in range(25)] + [(made.consultation, "p_gone")]
    assert await store.refresh(pairs, now_ms=NOW + 40_000, batch=7) == [(made.consultation, "p_gone")]
    assert await store.sweep(now_ms=NOW + 50_000) == []  # all 25 were pushed back to NOW + 85 s


async def test_the_members_hash_expires_with_its_consultation(store: ConsultationStore, handle: RedisHandle) -> None:
    now_ms = int(time.time() * 1000)  # NOW is taken at import; Redis expiries run on the real clock
    made = await store.create(now_ms=now_ms, ttl_s=3600)
    await store.join(made.consultation, member("p_a"), now_ms=now_ms)
    members_ttl = await handle.client.pttl(f"stue:c:{made.consultation}:members")
    consultation_ttl = await handle.client.pttl(f"stue:c:{made.consultation}")
    assert 3_500_000 < members_ttl <= 3_600_000
    assert abs(members_ttl - consultation_ttl) < 5_000
