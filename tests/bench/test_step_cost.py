"""bench.step_cost --interleave: every size's timed calls take turns, and a trainer does
the same work as when its size is timed alone (interleaving moves only the clock)."""

from __future__ import annotations

import dataclasses

import pytest

from bench import step_cost
from bench.propagation import synthetic_graph
from stream.settings.training import TrainerSettings

SIZES = [2_000, 5_000]


@pytest.fixture
def settings() -> TrainerSettings:
    base = TrainerSettings(dim=8, max_users=100_000, max_items=100_000)
    return dataclasses.replace(base, **step_cost.CONFIGS["local-history-shared"])


def test_calls_take_turns_and_do_what_one_size_alone_does(
    settings: TrainerSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    order: list[tuple[int, int]] = []
    real = step_cost.timed_call

    def spy(trainer, graph, batch, step, tally):  # type: ignore[no-untyped-def]
        order.append((graph.num_edges, step))
        return real(trainer, graph, batch, step, tally)

    monkeypatch.setattr(step_cost, "timed_call", spy)
    timed = step_cost.interleaved(SIZES, settings, batch=20, steps=3, warmup=1)
    edges = [timed[size][3].num_edges for size in SIZES]
    assert order == [(e, step) for step in (1, 2, 3) for e in edges]
    for size in SIZES:
        seconds, tally, _, _ = timed[size]
        assert len(seconds) == 3 and all(s > 0 for s in seconds)
        graph = synthetic_graph(size, "cpu")
        alone = step_cost.time_steps(step_cost.loaded_trainer(graph, settings), graph, 20, 3, 1)
        assert tally == alone[1]
        assert tally["moved_rows_max"] > 0  # bounded calls ran: the tallies compare work
