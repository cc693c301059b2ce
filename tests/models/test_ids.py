"""IdRegistry: dense rows, read-only reads, bounded capacity with TTL eviction, JSON state."""

from __future__ import annotations

import json
import random

import pytest

from models.base import grown_size
from models.errors import ModelConfigError
from models.ids import IdRegistry


def test_rows_are_dense_and_stable_per_kind() -> None:
    reg = IdRegistry()
    users = reg.assign("user", ["a", "b", "a", "c"], now_ms=0).tolist()
    assert users == [0, 1, 0, 2]
    assert reg.assign("item", ["a"], now_ms=0).tolist() == [0]  # kinds are separate spaces
    assert reg.rows("user", ["c", "b", "a"]).tolist() == [2, 1, 0]
    assert reg.ids("user", [2, 0]) == ["c", "a"]
    assert reg.size("user") == grown_size(3, 0)


def test_reads_never_change_the_registry() -> None:
    reg = IdRegistry(max_users=2, ttl_ms=10)
    reg.assign("user", ["a"], now_ms=0)
    before = reg.state_dict()
    assert reg.rows("user", ["a", "nobody"]).tolist() == [0, -1]
    reg.ids("user", [0])
    reg.counts("user")
    assert reg.state_dict() == before
    assert reg.live("user") == 1


def test_full_registry_refuses_until_ids_expire_then_evicts_least_recently_seen() -> None:
    reg = IdRegistry(max_users=3, max_items=3, ttl_ms=100)
    reg.assign("user", ["a", "b", "c"], now_ms=0)
    reg.assign("user", ["a"], now_ms=50)  # a seen later than b and c
    assert reg.assign("user", ["d", "d"], now_ms=100).tolist() == [-1, -1]
    assert reg.counts("user").refused == 1  # one id refused, however often it appears
    rows = reg.assign("user", ["d", "e"], now_ms=101)  # b and c (seen at 0) are expired
    assert sorted(rows.tolist()) == [1, 2]
    assert reg.rows("user", ["b", "c"]).tolist() == [-1, -1]
    assert reg.rows("user", ["a"]).tolist() == [0]
    assert reg.pop_evicted("user").tolist() == [1, 2]
    assert reg.pop_evicted("user").tolist() == []  # popping clears
    assert reg.counts("user").evicted == 2
    assert reg.live("user") == 3


def test_random_workload_keeps_rows_bounded_and_unique() -> None:
    rng = random.Random(7)
    cap = 16
    reg = IdRegistry(max_users=cap, max_items=cap, ttl_ms=50)
    now = 0
    for _ in range(200):
        now += rng.randrange(0, 20)
        ids = [f"u{rng.randrange(60)}" for _ in range(rng.randrange(1, 8))]
        rows = reg.assign("user", ids, now).tolist()
        for id_, row in zip(ids, rows, strict=True):
            assert -1 <= row < cap
            if row >= 0:
                assert reg.rows("user", [id_]).tolist() == [row]
        live = reg.live("user")
        assert live <= cap
        assert sorted(reg.rows("user", reg.ids("user", range(live))).tolist()) == list(range(live))
    counts = reg.counts("user")
    assert counts.evicted > 0
    assert reg.size("user") <= grown_size(cap, 0)


def test_state_round_trips_through_json_and_behaves_the_same() -> None:
    reg = IdRegistry(max_users=3, max_items=2, ttl_ms=10)
    reg.assign("user", ["a", "b", "c"], now_ms=0)
    reg.assign("user", ["b"], now_ms=5)
    reg.assign("item", ["x"], now_ms=5)
    state = json.loads(json.dumps(reg.state_dict()))
    copy = IdRegistry(max_users=3, max_items=2, ttl_ms=10)
    copy.load_state_dict(state)
    assert copy.state_dict() == reg.state_dict()
    # the same next step on both: the least recently seen expired id goes first
    assert copy.assign("user", ["d"], 12).tolist() == reg.assign("user", ["d"], 12).tolist()
    assert copy.state_dict() == reg.state_dict()


def test_validation_names_the_bad_value() -> None:
    with pytest.raises(ModelConfigError, match="max_users"):
        IdRegistry(max_users=0)
    with pytest.raises(ModelConfigError, match="ttl_ms"):
        IdRegistry(ttl_ms=0)
    reg = IdRegistry()
    with pytest.raises(ValueError, match="'movie'"):
        reg.rows("movie", ["a"])
    with pytest.raises(ValueError, match="not live"):
        reg.ids("user", [0])
    big = IdRegistry(max_users=3)
    big.assign("user", ["a", "b", "c"], now_ms=0)
    with pytest.raises(ModelConfigError, match="more than max 2"):
        IdRegistry(max_users=2).load_state_dict(big.state_dict())
