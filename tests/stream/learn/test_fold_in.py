"""The fold-in: a batch's rows re-embedded on the graph holding its edges, before the step."""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Iterator

import pytest
import torch

from stream.behaviours import Behaviour
from stream.events import Interaction
from stream.learn.refresh import embed_all
from stream.learn.trainer import IncrementalTrainer
from stream.settings.training import TrainerSettings

BEHAVIOURS = {"click": Behaviour(1.0, 86_400_000), "cart": Behaviour(3.0, 86_400_000)}
EPS = 1e-3
SETTINGS = TrainerSettings(dim=8, device="cpu", num_negatives=4, fanout=0)  # exact, full step


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Bit-for-bit comparisons of two runs need one thread (row-accumulating kernels)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def stream(n: int, seed: int) -> list[Interaction]:
    rng = random.Random(seed)
    kinds = sorted(BEHAVIOURS)
    return [
        Interaction(f"u{rng.randrange(80)}", f"i{rng.randrange(60)}", rng.choice(kinds), 1_000 * k)
        for k in range(n)
    ]


def batches() -> list[list[Interaction]]:
    events = stream(900, seed=0)
    # new ids in the later batches too, so the fold-in grows the vector tables
    late = [dataclasses.replace(e, user_id=f"new{k}") for k, e in enumerate(events[-40:])]
    return [events[:500], events[500:700], events[700:860] + late]


@pytest.mark.parametrize("scope", ["full", "local"])
def test_fold_in_changes_nothing_the_step_trains_or_publishes_last(scope: str) -> None:
    settings = dataclasses.replace(SETTINGS, step_scope=scope, fanout=3 if scope == "local" else 0)
    plain = IncrementalTrainer(settings, BEHAVIOURS, EPS)
    folding = IncrementalTrainer(settings, BEHAVIOURS, EPS)
    for batch in batches():
        expected = plain.learn(batch)
        absorbed = folding.absorb(batch, fold_in=True)
        report = folding.step(absorbed)
        for a, b in zip(plain.encoder.parameters(), folding.encoder.parameters(), strict=True):
            assert torch.equal(a, b)
        for kind in ("user", "item"):
            ids = plain.registry.ids(kind, torch.arange(plain.registry.live(kind)))
            assert torch.equal(plain.vectors(kind, ids), folding.vectors(kind, ids))
        assert report.model_version == expected.model_version
        assert report.steps == expected.steps and report.loss == expected.loss
        if absorbed.folded is None:  # the first batch: nothing embedded before it
            assert report.reflected == expected.reflected
            continue
        folded = absorbed.folded
        # the fold-in reports every row with a new event, at the step's version, and
        # carries the events' freshness; the step's report then does not count them again
        assert folded.model_version == report.model_version
        assert set(folded.changed_users) >= {e.user_id for e in batch}
        assert set(folded.changed_items) >= {e.item_id for e in batch}
        assert folded.reflected == expected.reflected and report.reflected == []
        assert math.isnan(folded.loss) and folded.steps == 0
        # the step reports (by the threshold) a subset of what it reports after no fold-in
        assert set(report.changed_users) <= set(expected.changed_users)


def test_fold_in_vectors_are_the_propagation_on_the_graph_with_the_batch() -> None:
    """Exact (fanout 0): each folded row's vector is what a full propagation gives it with
    the parameters before the step, on the graph that holds the batch's edges."""
    trainer = IncrementalTrainer(SETTINGS, BEHAVIOURS, EPS)
    first, second, third = batches()
    trainer.learn(first)
    trainer.learn(second)
    before = {k: trainer.vectors(k, [e.user_id for e in third]) for k in ("user",)}
    absorbed = trainer.absorb(third, fold_in=True)
    assert absorbed.folded is not None
    expected = embed_all(trainer, trainer._graph())  # parameters untouched since
    for kind, ids in (
        ("user", absorbed.folded.changed_users),
        ("item", absorbed.folded.changed_items),
    ):
        rows = trainer.registry.rows(kind, ids)
        torch.testing.assert_close(trainer.vectors(kind, ids), expected[kind][rows])
    # and they moved: the batch's edges are in them
    after = trainer.vectors("user", [e.user_id for e in third])
    assert not torch.allclose(after, before["user"])
