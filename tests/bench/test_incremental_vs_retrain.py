"""bench/incremental_vs_retrain.py on a tiny synthetic stream: the document's invariants."""

from __future__ import annotations

import importlib.util
import json
import random
import sys
from pathlib import Path
from types import ModuleType

import pytest

from stream.behaviours import Behaviour
from stream.evaluation.prequential import ProtocolSettings, split_stream
from stream.events import Interaction
from stream.settings.training import TrainerSettings
from tests.stream.learn.budgets import UNCAPPED

BENCH = Path(__file__).resolve().parents[2] / "bench" / "incremental_vs_retrain.py"
BEHAVIOURS = {"click": Behaviour(1.0, 10_000_000)}


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("incremental_vs_retrain", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through it
    spec.loader.exec_module(module)
    return module


def _stream(events: int = 400, seed: int = 3) -> list[Interaction]:
    rng = random.Random(seed)
    return [
        Interaction(f"u{rng.randrange(30)}", f"i{int(rng.paretovariate(1.2)) % 60}", "click", ts)
        for ts in range(1_000, 1_000 + events * 1_000, 1_000)
    ]


def _settings(bench: ModuleType, **overrides: object) -> object:
    values: dict[str, object] = {
        "trainer": TrainerSettings(dim=8, device="cpu", batch_size=256, **UNCAPPED),  # type: ignore[arg-type]
        "epochs": (1, 2),
        "warmup_epochs": 1,
        "chunks": 2,
        "micro_batch": 10,
        "behaviours": BEHAVIOURS,
    }
    values.update(overrides)
    return bench.BenchSettings(**values)


def test_prefix_splits_into_the_evals_first_chunks(bench: ModuleType) -> None:
    stream = _stream(403)  # uneven: the eval's first chunks are one event longer
    settings = _settings(bench, chunks=3)
    prefix, protocol = bench.eval_prefix(stream, settings)
    warm, chunks = split_stream(stream, ProtocolSettings(warmup=0.5, chunks=10))
    again_warm, again = split_stream(prefix, protocol)
    assert again_warm == warm
    assert again == chunks[:3]


def test_document_invariants(bench: ModuleType) -> None:
    settings = _settings(bench)
    document = bench.measure(_stream(), settings, "cmd", {"events": 400})
    json.dumps(document)  # serialisable as written
    assert set(document) == set(bench.KEYS)
    assert document["device"]["kind"] == "cpu" and document["device"]["torch_threads"] >= 1
    chunk_events = document["settings"]["chunk_events"]
    assert len(chunk_events) == settings.chunks
    events = sum(chunk_events)
    methods = document["methods"]
    assert set(methods) == {"static", "incremental", "retrain@1", "retrain@2"}
    for name, figures in methods.items():
        for metric in ("recall@20", "ndcg@20", "mrr"):
            assert 0.0 <= figures[metric] <= 1.0
        assert figures["events"] == events
        assert figures["seconds_per_1000_events"] == pytest.approx(
            1000 * figures["seconds"] / events
        )
        assert figures["cpu_seconds_per_1000_events"] == pytest.approx(
            1000 * figures["cpu_seconds"] / events
        )
        if name != "static":
            assert figures["seconds"] > 0
    assert methods["incremental"]["learn_calls"] == events // settings.micro_batch
    for epochs in settings.epochs:
        assert methods[f"retrain@{epochs}"]["retrains"] == settings.chunks
        assert methods[f"retrain@{epochs}"]["epochs"] == epochs

    same = document["same_quality"]
    chosen = methods[same["retrain"]]
    assert same["retrain_value"] == chosen["recall@20"]
    assert same["matched"] == (chosen["recall@20"] >= methods["incremental"]["recall@20"])
    incremental_cost = methods["incremental"]["seconds_per_1000_events"]
    assert document["incremental_seconds_per_1000_events"] == incremental_cost
    assert document["retrain_seconds_per_1000_events"] == chosen["seconds_per_1000_events"]
    assert document["ratio"] == pytest.approx(chosen["seconds_per_1000_events"] / incremental_cost)
    assert document["goal_met"] == (document["ratio"] >= document["goal"])


def test_choose_retrain_prefers_the_cheapest_match(bench: ModuleType) -> None:
    figures = {
        "incremental": {"recall@20": 0.2, "seconds": 1.0},
        "retrain@1": {"recall@20": 0.1, "seconds": 2.0},
        "retrain@5": {"recall@20": 0.2, "seconds": 5.0},
        "retrain@9": {"recall@20": 0.3, "seconds": 9.0},
    }
    assert bench.choose_retrain(figures) == ("retrain@5", True)
    figures["incremental"]["recall@20"] = 0.5
    assert bench.choose_retrain(figures) == ("retrain@9", False)


def test_settings_refuse_bad_values(bench: ModuleType) -> None:
    for bad in ({"epochs": ()}, {"epochs": (0,)}, {"epochs": (2, 2)}, {"chunks": 11}):
        with pytest.raises(ValueError):
            _settings(bench, **bad)
