"""The prequential protocol on tiny synthetic streams: test before train, same chunks for all."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from torch import Tensor

from stream.behaviours import Behaviour
from stream.errors import ConfigError
from stream.evaluation.popularity import DecayedPopularity
from stream.evaluation.prequential import (
    PARTITION,
    TOPIC,
    Method,
    ProtocolSettings,
    run_prequential,
    split_stream,
)
from stream.events import Interaction
from stream.state.graph_store import DecayedGraphStore

BEHAVIOURS = {"click": Behaviour(1.0, 10_000_000)}


def _click(user: str, item: str, ts: int) -> Interaction:
    return Interaction(user, item, "click", ts)


class Spy(Method):
    """Records what the protocol shows it and checks the store at each call."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.learnt: list[Interaction] = []
        self.scored: list[tuple[list[str], list[str], int]] = []
        self.offsets_at_learn: list[tuple[int, int]] = []

    def start(self, store: DecayedGraphStore) -> None:
        self.started_at = _offset(store)

    def scores(self, users: Sequence[str], items: Sequence[str]) -> Tensor:
        self.scored.append((list(users), list(items), len(self.learnt)))
        return torch.zeros(len(users), len(items))

    def learn(self, store: DecayedGraphStore, batch: Sequence[Interaction]) -> None:
        self.learnt.extend(batch)
        self.offsets_at_learn.append((_offset(store), len(self.learnt)))


class Oracle(Method):
    """Knows the future: the sooner a user takes an item, the higher it scores."""

    name = "oracle"

    def __init__(self, future: Sequence[Interaction]) -> None:
        self.future = future

    def start(self, store: DecayedGraphStore) -> None:
        pass

    def scores(self, users: Sequence[str], items: Sequence[str]) -> Tensor:
        first: dict[tuple[str, str], int] = {}
        for e in self.future:
            first.setdefault((e.user_id, e.item_id), e.ts)
        return torch.tensor([[-first.get((u, i), 10**9) for i in items] for u in users]).float()


def _offset(store: DecayedGraphStore) -> int:
    pos = store.position(TOPIC, PARTITION)
    return pos[0] if pos else 0


def _stream() -> list[Interaction]:
    events = []
    ts = 0
    for round_ in range(6):
        for u in range(8):
            ts += 1
            events.append(_click(f"u{u}", f"i{(u + round_) % 7}", ts))
    return events


def test_split_by_count_and_by_duration() -> None:
    events = [_click("u", "i", ts) for ts in (0, 1, 2, 3, 10, 11, 30, 31, 32, 33)]
    warm, chunks = split_stream(events, ProtocolSettings(warmup=0.4, chunks=3))
    assert len(warm) == 4 and [len(c) for c in chunks] == [2, 2, 2]
    _, by_time = split_stream(events, ProtocolSettings(warmup=0.4, chunk_duration_ms=10))
    assert [[e.ts for e in c] for c in by_time] == [[10, 11], [30, 31, 32, 33]]
    with pytest.raises(ValueError, match="sorted"):
        split_stream(events[::-1], ProtocolSettings())
    with pytest.raises(ConfigError, match="warmup"):
        ProtocolSettings(warmup=1.0)


def test_methods_see_identical_chunks_after_scoring_and_after_the_store() -> None:
    stream = _stream()
    settings = ProtocolSettings(warmup=0.5, chunks=3, micro_batch=5, behaviours=BEHAVIOURS)
    spies = [Spy("a"), Spy("b")]
    result = run_prequential(stream, spies, settings)
    warm, chunks = split_stream(stream, settings)
    a, b = spies
    assert a.learnt == b.learnt == [e for c in chunks for e in c]
    assert a.scored == b.scored
    assert a.started_at == len(warm)
    # every learn call came after the store applied exactly the events learnt so far
    assert all(offset == len(warm) + n for offset, n in a.offsets_at_learn)
    # each chunk was scored before any of its events was learnt
    boundaries = [sum(len(c) for c in chunks[:i]) for i in range(len(chunks))]
    assert [learnt for _, _, learnt in a.scored] == boundaries
    assert [info.events for info in result.chunks] == [len(c) for c in chunks]


def test_methods_learn_only_what_the_store_applied_as_the_worker_does() -> None:
    # Every event carries an id; every third one is sent twice (a producer retry).
    stream = []
    for n, e in enumerate(_stream()):
        event = Interaction(e.user_id, e.item_id, e.event_type, e.ts, event_id=f"e{n}")
        stream.extend([event, event] if n % 3 == 0 else [event])
    settings = ProtocolSettings(warmup=0.5, chunks=3, micro_batch=4, behaviours=BEHAVIOURS)
    spy = Spy("a")
    run_prequential(stream, [spy], settings)
    _, chunks = split_stream(stream, settings)
    scored = [e for c in chunks for e in c]
    assert len({e.event_id for e in scored}) < len(scored)  # copies reach the chunks
    assert len(spy.learnt) == len({e.event_id for e in spy.learnt})  # none is learnt twice
    first_copies = {e.event_id for e in scored} - {e.event_id for e in stream[: -len(scored)]}
    assert {e.event_id for e in spy.learnt} == first_copies


def test_a_new_item_cannot_be_a_popularity_hit_in_its_first_chunk() -> None:
    warm = [_click(f"u{u}", f"old{k}", u * 10 + k) for u in range(10) for k in range(3)]
    fresh = [_click(f"u{u}", "new", 1000 + u) for u in range(5)]  # everyone's favourite
    later = [_click(f"u{u}", "new", 2000 + u) for u in range(5, 10)]
    stream = warm + fresh + later
    settings = ProtocolSettings(warmup=len(warm) / len(stream), chunks=2, behaviours=BEHAVIOURS)
    result = run_prequential(stream, [DecayedPopularity(BEHAVIOURS)], settings)
    first, second = result.methods["popularity"].chunks
    assert result.chunks[0].unseen_targets == first.metrics.queries == 5
    assert first.metrics.recall == 0.0
    # one chunk later it is the most popular item the users have not had
    assert second.metrics.means() == {"recall@20": 1.0, "ndcg@20": 1.0, "mrr": 1.0}


def test_an_oracle_scores_one_on_targets_seen_before() -> None:
    stream = _stream()
    settings = ProtocolSettings(warmup=0.5, chunks=2, behaviours=BEHAVIOURS)
    result = run_prequential(stream, [Oracle(stream[len(stream) // 2 :])], settings)
    assert all(info.unseen_targets == 0 for info in result.chunks)
    means = result.methods["oracle"].totals().means()
    assert means["recall@20"] == 1.0 and means["mrr"] == 1.0


def test_methods_are_named_once() -> None:
    with pytest.raises(ConfigError, match="once"):
        run_prequential(_stream(), [Spy("a"), Spy("a")], ProtocolSettings())
