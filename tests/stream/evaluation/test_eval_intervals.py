"""Bootstrap intervals, the cold/warm breakdown and target types."""

from __future__ import annotations

import random

import pytest

from stream.behaviours import DEFAULT_BEHAVIOURS, Behaviour
from stream.errors import ConfigError
from stream.evaluation.bootstrap import difference_interval, mean_interval
from stream.evaluation.metrics import QueryMetrics
from stream.evaluation.popularity import AllTimePopularity
from stream.evaluation.prequential import ProtocolSettings, run_prequential
from stream.evaluation.queries import History
from stream.evaluation.report import COLD_BELOW, result_document, split_cold_warm
from stream.events import Interaction


def _coin_flips(n: int, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [float(rng.random() < 0.3) for _ in range(n)]


def test_the_interval_contains_the_mean_and_shrinks_with_more_queries() -> None:
    widths = []
    for n in (50, 500, 5_000):
        values = _coin_flips(n)
        lo, hi = mean_interval(values) or (0.0, 0.0)
        assert lo < sum(values) / n < hi
        assert lo >= 0.0 and hi <= 1.0
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]


def test_a_constant_metric_has_an_interval_of_zero_width() -> None:
    lo, hi = mean_interval([0.4] * 100) or (0.0, 1.0)
    assert hi - lo == 0.0 and lo == pytest.approx(0.4)
    assert mean_interval([]) is None


def test_the_interval_is_seeded_and_paired() -> None:
    values = _coin_flips(300)
    assert mean_interval(values) == mean_interval(values)
    assert mean_interval(values, seed=1) != mean_interval(values, seed=2)
    # same queries resampled the same way: a method minus itself is exactly zero
    assert difference_interval(values, values) == (0.0, 0.0)
    better = [min(1.0, v + 0.5) for v in values]
    lo, _ = difference_interval(better, values) or (0.0, 0.0)
    assert lo > 0.0
    with pytest.raises(ValueError, match="paired"):
        difference_interval(values, values[:-1])


def _q(recall: float) -> QueryMetrics:
    return QueryMetrics(recall, recall, recall)


def test_cold_and_warm_split_on_prior_events() -> None:
    queries = [_q(0.0), _q(1.0), _q(0.5), _q(0.25)]
    cold, warm = split_cold_warm(queries, [1, COLD_BELOW, COLD_BELOW - 1, 100])
    assert cold == [queries[0], queries[2]] and warm == [queries[1], queries[3]]
    with pytest.raises(ValueError):
        split_cold_warm(queries, [1])


def test_cold_and_warm_queries_add_up_to_all_queries() -> None:
    rng = random.Random(3)
    behaviours = {"click": Behaviour(1.0, 10_000_000)}
    # users with very different activity, so both groups are non-empty
    stream = []
    for ts in range(2_000):
        user = f"u{min(int(rng.expovariate(0.05)), 200)}"
        stream.append(Interaction(user, f"i{rng.randrange(60)}", "click", ts))
    settings = ProtocolSettings(warmup=0.5, chunks=4, behaviours=behaviours)
    result = run_prequential(stream, [AllTimePopularity()], settings)
    document = result_document(result)
    m = document["methods"]["popularity-all"]
    assert m["cold"]["queries"] > 0 and m["warm"]["queries"] > 0
    assert (
        m["cold"]["queries"] + m["warm"]["queries"]
        == m["queries"]
        == sum(info.queries for info in result.chunks)
    )
    # the overall mean is the query-weighted mean of the two groups
    n_cold, n_warm = m["cold"]["queries"], m["warm"]["queries"]
    mixed = (m["cold"]["recall@20"] * n_cold + m["warm"]["recall@20"] * n_warm) / m["queries"]
    assert m["recall@20"] == pytest.approx(mixed)
    for group in (m, m["cold"], m["warm"]):
        for metric in ("recall@20", "ndcg@20", "mrr"):
            lo, hi = group[f"{metric}_ci95"]
            assert lo <= group[metric] <= hi


def test_only_target_types_make_targets_but_every_event_is_history() -> None:
    def event(user: str, item: str, kind: str) -> Interaction:
        return Interaction(user, item, kind, 0)

    history = History({"cart", "purchase"})
    history.add([event("a", "seen", "view"), event("b", "x", "view")])
    chunk = [
        event("a", "v", "view"),  # a view: history, never a target
        event("a", "c", "cart"),
        event("a", "seen", "purchase"),  # bought, but already had it (viewed): no target
        event("b", "p", "purchase"),
        event("new", "p", "purchase"),  # no history: not a query
    ]
    queries = history.queries(chunk)
    assert [(q.user, q.targets, q.prior_events) for q in queries] == [
        ("a", ["c"], 1),
        ("b", ["p"], 1),
    ]
    everything = History()
    everything.add([event("a", "seen", "view"), event("b", "x", "view")])
    assert [q.targets for q in everything.queries(chunk)] == [["v", "c"], ["p"]]


def test_target_types_must_be_behaviours() -> None:
    ProtocolSettings(behaviours=DEFAULT_BEHAVIOURS, target_types=frozenset({"cart"}))
    with pytest.raises(ConfigError, match="addtocart"):
        ProtocolSettings(behaviours=DEFAULT_BEHAVIOURS, target_types=frozenset({"addtocart"}))
