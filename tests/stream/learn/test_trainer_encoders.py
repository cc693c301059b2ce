"""The trainer's read paths on every encoder the resolver lists (CPU, and CUDA where present)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from models.resolver import ENCODERS
from stream.behaviours import Behaviour
from stream.events import Interaction
from stream.learn import trainer as trainer_module
from stream.learn.trainer import IncrementalTrainer
from stream.settings.training import TrainerSettings
from tests.devices import DEVICES
from tests.stream.learn.budgets import UNCAPPED

NAMES = sorted(ENCODERS)
DIM = 8


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_trainer_reads_change_no_registry_entry_or_weight(name: str, device: str) -> None:
    behaviours = {"click": Behaviour(1.0, 10_000), "purchase": Behaviour(5.0, 100_000)}
    settings = dataclasses.replace(
        TrainerSettings(**UNCAPPED),  # type: ignore[arg-type]
        encoder=name,
        dim=DIM,
        batch_size=64,
        device=device,
    )
    trainer = IncrementalTrainer(settings, behaviours, 1e-3)
    events = [
        Interaction(f"u{k % 4}", f"i{k % 5}", "click" if k % 3 else "purchase", 1_000 * k)
        for k in range(20)
    ]
    report = trainer.learn(events)
    assert report.steps > 0 and report.changed_users
    registry, weights = trainer.registry.state_dict(), trainer.state_dict()["encoder"]
    trainer.vectors("user", ["u0", "stranger"])
    trainer.vectors("item", ["i0", "stranger"])
    assert trainer.registry.state_dict() == registry
    for key, value in trainer.state_dict()["encoder"].items():
        assert torch.equal(value, weights[key]), key


def _tgn_trainer() -> IncrementalTrainer:
    """A small uncapped TGN trainer whose clicks never decay during a test."""
    settings = dataclasses.replace(
        TrainerSettings(**UNCAPPED),  # type: ignore[arg-type]
        encoder="tgn",
        dim=DIM,
        batch_size=64,
        device="cpu",
        trend_half_lives_ms=(),
    )
    return IncrementalTrainer(settings, {"click": Behaviour(1.0, 10**9)}, 1e-3)


def test_fit_replays_the_graph_into_streaming_state_in_time_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """TGN's memory after fit holds committed messages, in time order: each user's last
    commit is its last edge of an earlier slice, its newest edge is still pending."""
    monkeypatch.setattr(trainer_module, "FIT_OBSERVE_EDGES", 4)
    trainer = _tgn_trainer()
    # 3 users, each edge a new item, so the graph keeps all 24 edges at distinct times
    events = [Interaction(f"u{k % 3}", f"i{k}", "click", 1_000 * (k + 1)) for k in range(24)]
    trainer.learn(events)
    trainer.fit(1)
    state = trainer.encoder.user_state  # type: ignore[union-attr]
    for user in range(3):
        row = int(trainer.registry.rows("user", [f"u{user}"])[0])
        times = [e.ts for e in events if e.user_id == f"u{user}"]
        # slices of 4 edges in time order: 24 edges, the last slice holds edges 20..23
        committed = max(t for k, t in enumerate(sorted(times)) if t <= 20_000)
        assert int(state.last_update[row]) == committed
        assert int(state.pending_time[row]) == max(times)
        assert float(state.memory[row].norm()) > 0


def test_a_batch_is_trained_before_streaming_state_observes_it() -> None:
    """A positive is scored with the memory of earlier batches (no leak of its own event);
    after the call its event is pending, so the published vectors reflect it."""
    trainer = _tgn_trainer()
    first = [Interaction(f"u{k % 3}", f"i{k}", "click", 1_000 * (k + 1)) for k in range(6)]
    second = [Interaction(f"u{k % 3}", f"j{k}", "click", 100_000 + k) for k in range(6)]
    trainer.learn(first)
    encoder = trainer.encoder
    seen: list[int] = []
    forward = encoder.forward

    def spy(*args: object) -> object:
        if torch.is_grad_enabled():  # a training step, not a re-embedding
            seen.append(int(encoder.user_state.pending_time.max()))  # type: ignore[union-attr]
        return forward(*args)  # type: ignore[arg-type]

    encoder.forward = spy  # type: ignore[method-assign]
    report = trainer.learn(second)
    assert report.steps > 0 and seen
    assert max(seen) < min(e.ts for e in second)
    assert int(encoder.user_state.pending_time.max()) == max(e.ts for e in second)  # type: ignore[union-attr]
