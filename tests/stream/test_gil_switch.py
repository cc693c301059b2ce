"""The worker's GIL switch interval: a setting, validated, applied by the training loop
(process-wide: torch ops of the trainer thread wait on it for the ingest threads)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from stream.errors import ConfigError
from stream.metrics import PipelineMetrics
from stream.settings import load_settings
from stream.settings.sections import WorkerSettings
from stream.state.graph_store import DecayedGraphStore
from stream.training import SWITCH_INTERVAL_S, TrainingLoop, switch_interval_s
from tests.harness.worker_process import training_env


@pytest.fixture
def interval_kept() -> Iterator[None]:
    before = sys.getswitchinterval()
    yield
    sys.setswitchinterval(before)


@pytest.mark.usefixtures("interval_kept")
@pytest.mark.parametrize("value", ["0.5", None])
def test_the_training_loop_sets_the_interpreters_switch_interval(
    tmp_path: Path, value: str | None
) -> None:
    sys.setswitchinterval(0.02)  # neither the setting nor its default
    env = training_env(tmp_path, "gil") | {"STREAMGNN_STORE_PATH": str(tmp_path / "graph")}
    if value is not None:
        env["STREAMGNN_GIL_SWITCH_INTERVAL_MS"] = value
    settings = load_settings({}, env)
    with DecayedGraphStore(settings.store.path, settings.events.behaviours) as store:
        TrainingLoop(settings, store, PipelineMetrics())
    # unset: by device, and this trainer is on the CPU
    wanted_s = float(value) / 1000 if value is not None else SWITCH_INTERVAL_S["cpu"]
    assert sys.getswitchinterval() == pytest.approx(wanted_s)


def test_zero_means_by_device_and_a_value_wins_over_the_device() -> None:
    assert WorkerSettings().gil_switch_interval_ms == 0
    assert switch_interval_s(0, torch.device("cuda")) == SWITCH_INTERVAL_S["cuda"]
    assert switch_interval_s(0, torch.device("cpu")) == SWITCH_INTERVAL_S["cpu"]
    assert SWITCH_INTERVAL_S["cuda"] < SWITCH_INTERVAL_S["cpu"]
    assert switch_interval_s(2.0, torch.device("cuda")) == 0.002


@pytest.mark.parametrize("bad", [-1.0, 0.001, 1e300, float("nan"), float("inf")])
def test_a_switch_interval_that_cannot_work_is_refused(bad: float) -> None:
    # 0.001 ms is below CPython's microsecond; 1e300 ms would wrap to 0 in its conversion
    with pytest.raises(ConfigError, match="gil_switch_interval_ms must be 0"):
        WorkerSettings(gil_switch_interval_ms=bad)
