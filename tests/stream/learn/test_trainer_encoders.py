"""The trainer's read paths on every encoder the resolver lists (CPU, and CUDA where present)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from models.resolver import ENCODERS
from stream.behaviours import Behaviour
from stream.events import Interaction
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
