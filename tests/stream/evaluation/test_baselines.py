"""The baselines against hand-built toy streams: orderings derived by hand, not copied."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import torch

from stream.behaviours import Behaviour
from stream.evaluation.knn import CooccurRecent, ItemKNN, cosine_neighbours
from stream.evaluation.popularity import AllTimePopularity, RecentPopularity, choose_window
from stream.evaluation.prequential import Method, ProtocolSettings, run_prequential
from stream.events import Interaction
from stream.state.graph_store import DecayedGraphStore

BEHAVIOURS = {"click": Behaviour(1.0, 10_000_000)}


def _click(user: str, item: str, ts: int) -> Interaction:
    return Interaction(user, item, "click", ts)


def _stream(pairs: Sequence[tuple[str, str]]) -> list[Interaction]:
    """Events in the order given, one millisecond apart."""
    return [_click(user, item, ts) for ts, (user, item) in enumerate(pairs)]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DecayedGraphStore]:
    with DecayedGraphStore(tmp_path / "graph", BEHAVIOURS) as graph:
        yield graph


def _ready(method: Method, events: Sequence[Interaction], store: DecayedGraphStore) -> Method:
    method.warmup(events)
    method.start(store)
    method.prepare(store)
    return method


def _ranking(method: Method, user: str, items: Sequence[str]) -> list[str]:
    """``items`` best first; asserts there are no ties among them."""
    scores = method.scores([user], list(items))[0].tolist()
    assert len(set(scores)) == len(scores), f"tied scores {dict(zip(items, scores, strict=True))}"
    return [item for _, item in sorted(zip(scores, items, strict=True), reverse=True)]


def test_popularity_all_ranks_by_event_count_over_all_history(store: DecayedGraphStore) -> None:
    events = _stream([("u1", "a"), ("u2", "a"), ("u3", "a"), ("u1", "b"), ("u2", "b"), ("u1", "c")])
    method = _ready(AllTimePopularity(), events, store)
    assert _ranking(method, "anyone", ["c", "a", "b"]) == ["a", "b", "c"]
    method.learn(store, _stream([("u4", "c")] * 3))  # c: 4 events, now the most
    assert _ranking(method, "anyone", ["a", "b", "c"]) == ["c", "a", "b"]


def test_popularity_recent_counts_only_the_window(store: DecayedGraphStore) -> None:
    old = _stream([(f"u{k}", "old") for k in range(10)])  # the all-time favourite
    recent = _stream([("v1", "new"), ("v2", "new"), ("v3", "newer")])
    method = _ready(RecentPopularity(window=3), old + recent, store)
    scores = dict(
        zip(["old", "new", "newer"], method.scores(["x"], ["old", "new", "newer"])[0], strict=True)
    )
    assert scores["old"] == 0.0  # ten events, all outside the last three
    assert _ranking(method, "x", ["newer", "new"]) == ["new", "newer"]
    # the window slides with what is learnt, and moves only on prepare (before a chunk)
    method.learn(store, _stream([("w", "newer")] * 2))
    assert _ranking(method, "x", ["newer", "new"]) == ["new", "newer"]
    method.prepare(store)
    assert _ranking(method, "x", ["newer", "new"]) == ["newer", "new"]


def _trending_warmup() -> list[Interaction]:
    """Thirty evergreen items taken early by many; later every user takes the item of the hour.

    A window reaching back to the evergreen items fills the top 20 with them; a short one
    ranks the hour's item first (it is a hit for the users who have not taken it yet).
    """
    pairs = [(f"e{u}", f"ever{k}") for k in range(30) for u in range(30)]
    for hour in range(40):
        pairs += [(f"t{u}", f"hour{hour}") for u in range(10)]
    return _stream(pairs)


def test_a_short_window_wins_when_the_held_out_warmup_follows_a_trend() -> None:
    warm = _trending_warmup()
    window, record = choose_window(warm)
    assert window in record["grid"] and window == record["chosen"]
    best = max(record["validation_recall@20"])
    assert record["validation_recall@20"][record["grid"].index(window)] == best
    # a window spanning the evergreen items ranks them first: a longer one cannot beat it
    assert window < len(warm) // 2
    assert record["validation_recall@20"][-1] < best


def test_the_window_is_chosen_on_the_warmup_alone() -> None:
    warm = _trending_warmup()
    window, record = choose_window(warm)
    later = len(warm) + 1_000  # every scored event after the warm-up
    calm = [(f"e{u}", f"ever{(u + 1) % 30}") for u in range(30)] * 10  # evergreen again
    busy = [(f"t{u % 10}", f"burst{u % 3}") for u in range(300)]  # a new trend
    described = []
    for tail in (calm, busy):
        stream = warm + [_click(u, i, later + ts) for ts, (u, i) in enumerate(tail)]
        settings = ProtocolSettings(warmup=0.8125, chunks=2, behaviours=BEHAVIOURS)
        result = run_prequential(stream, [RecentPopularity()], settings)
        assert result.warmup_events == len(warm)
        described.append(result.described["popularity-recent"])
    assert described[0] == described[1] == {"window_events": window, **record}


def test_itemknn_ranks_by_cosine_similarity_to_the_users_items(store: DecayedGraphStore) -> None:
    # "twin" always comes with "a"; "half" with "a" for half of a's users; "far" never
    pairs = [(f"u{k}", "a") for k in range(4)] + [(f"u{k}", "twin") for k in range(4)]
    pairs += [("u0", "half"), ("u1", "half"), ("z", "half"), ("z", "far"), ("y", "far")]
    pairs += [("me", "a")]
    method = _ready(ItemKNN(), _stream(pairs), store)
    # cos(a, twin) = 4/sqrt(5*4); cos(a, half) = 2/sqrt(5*3); cos(a, far) = 0
    assert _ranking(method, "me", ["far", "half", "twin"]) == ["twin", "half", "far"]
    assert method.scores(["me"], ["far"])[0, 0] == 0.0


def test_itemknn_keeps_only_each_items_nearest_neighbours() -> None:
    # items 0..3; 1 is most similar to 0, then 2, then 3 (cosine from overlaps)
    counts = torch.tensor(
        [[4.0, 3.0, 2.0, 1.0], [3.0, 3.0, 0.0, 0.0], [2.0, 0.0, 2.0, 0.0], [1.0, 0.0, 0.0, 1.0]]
    ).to_sparse()
    full = cosine_neighbours(counts, k=3).to_dense()
    one = cosine_neighbours(counts, k=1).to_dense()
    assert (full.diagonal() == 0).all()  # an item is not its own neighbour
    # W[j, i] = sim(i, j); each candidate j keeps its k nearest i
    assert ((one > 0).sum(dim=1) <= 1).all()
    assert one[0].argmax() == full[0].argmax() == 1  # item 0's nearest is item 1
    assert torch.equal(full, full.T)  # with every neighbour kept it is the symmetric cosine


def test_cooccur_recent_uses_only_the_last_five_items(store: DecayedGraphStore) -> None:
    # "old" co-occurs with "x" in another user's history; "i5" (recent) with "y"
    others = [("o1", "old"), ("o1", "x"), ("o2", "i5"), ("o2", "y")]
    mine = [("me", "old")] + [("me", f"i{k}") for k in range(1, 6)]  # old is 6th from last
    method = _ready(CooccurRecent(), _stream(others + mine), store)
    scores = dict(zip(["x", "y"], method.scores(["me"], ["x", "y"])[0].tolist(), strict=True))
    assert scores == {"x": 0.0, "y": 1.0}
    # taking "old" again makes it recent: "x" now co-occurs with one of the last five
    method.learn(store, [_click("me", "old", 100)])
    method.prepare(store)
    assert method.scores(["me"], ["x"])[0, 0] == 1.0


def test_cooccur_recent_counts_users_not_events(store: DecayedGraphStore) -> None:
    pairs = [("o1", "a"), ("o1", "b"), ("o1", "b"), ("o1", "b"), ("o2", "a"), ("o2", "c")]
    pairs += [("o3", "a"), ("o3", "c"), ("me", "a")]
    method = _ready(CooccurRecent(), _stream(pairs), store)
    # b co-occurs with a in one history (three events), c in two histories
    assert _ranking(method, "me", ["b", "c"]) == ["c", "b"]
