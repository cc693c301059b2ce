"""bench/seed_spread.py on a toy stream: the same queries under every seed, the seed the
only thing that moves, and a summary that is the spread of the runs it reports."""

from __future__ import annotations

import dataclasses
import random
import statistics

import pytest

from bench.seed_spread import dataset_spread, run_methods, spread
from stream.evaluation.catalogue import BASELINES
from stream.evaluation.metrics import METRICS
from stream.events import Interaction
from stream.settings import Settings
from stream.settings.commands import EvalSettings
from stream.settings.training import TrainerSettings


def _stream() -> list[Interaction]:
    """Users with a taste (a block of items), clicking in time order."""
    rng = random.Random(7)
    events, ts = [], 1_700_000_000_000
    for _ in range(600):
        user = rng.randrange(30)
        item = (user % 5) * 6 + rng.randrange(6) if rng.random() < 0.8 else rng.randrange(30)
        ts += 60_000
        events.append(Interaction(f"u{user}", f"i{item}", "click", ts))
    return events


def _settings() -> Settings:
    training = TrainerSettings(dim=8, batch_size=64, layers=1, trend_half_lives_ms=())
    return dataclasses.replace(
        Settings(),
        training=training,
        eval=EvalSettings(epochs=2, chunks=3, micro_batch=50, bootstrap_resamples=50),
    )


def test_the_spread_of_values() -> None:
    assert spread([0.5]) == {"mean": 0.5, "sd": 0.0, "min": 0.5, "max": 0.5}
    out = spread([0.1, 0.3, 0.2])
    assert out["mean"] == pytest.approx(0.2) and out["sd"] == pytest.approx(0.1)
    assert (out["min"], out["max"]) == (0.1, 0.3)


def test_every_seed_is_scored_on_the_same_queries_and_summarised_as_reported() -> None:
    events, settings = _stream(), _settings()
    report = dataset_spread(events, [0, 1, 2], settings)
    baselines, runs = report["baselines"], report["incremental_by_seed"]
    assert set(baselines) == set(BASELINES) and set(runs) == {"0", "1", "2"}
    queries = {figs["queries"] for figs in [*baselines.values(), *runs.values()]}
    assert queries == {report["queries"]} and report["queries"] > 0
    for metric in METRICS:
        values = [runs[seed][metric] for seed in ("0", "1", "2")]
        summary = report["incremental_spread"][metric]
        assert summary["mean"] == pytest.approx(statistics.fmean(values))
        assert summary["min"] == min(values) and summary["max"] == max(values)
        best = summary["best_baseline"]
        assert baselines[best][metric] == max(b[metric] for b in baselines.values())
        assert summary["mean_over_best_baseline"] == pytest.approx(
            summary["mean"] / baselines[best][metric]
        )
    # the seed moves the trainer: some figure differs between seeds
    assert len({tuple(runs[s][m] for m in METRICS) for s in runs}) > 1


def test_a_seed_run_again_gives_the_same_figures() -> None:
    """The spread comes from the seed alone: one seed run twice is the same run."""
    events, settings = _stream(), _settings()
    first = run_methods(events, ["incremental"], settings, 1)
    assert run_methods(events, ["incremental"], settings, 1) == first


def test_the_retrain_ceiling_is_spread_the_same_way() -> None:
    """``--method retrain``: each seed a refit from scratch, scored on the same queries."""
    events, settings = _stream(), _settings()
    report = dataset_spread(events, [0, 1], settings, "retrain")
    runs = report["retrain_by_seed"]
    assert set(runs) == {"0", "1"} and "incremental_by_seed" not in report
    assert {figs["queries"] for figs in runs.values()} == {report["queries"]}
    for metric in METRICS:
        values = [runs[seed][metric] for seed in ("0", "1")]
        assert report["retrain_spread"][metric]["mean"] == pytest.approx(statistics.fmean(values))
    assert runs["0"] == run_methods(events, ["retrain"], settings, 0)["retrain"]
