"""Id tables grow geometrically as ids arrive, and a grown trainer's checkpoint loads."""

from __future__ import annotations

import math

import torch

from models.base import GROW_CHUNK
from stream.behaviours import Behaviour
from stream.events import Interaction
from stream.learn.trainer import IncrementalTrainer
from stream.settings.training import TrainerSettings

BEHAVIOURS = {"click": Behaviour(1.0, 86_400_000)}
SETTINGS = TrainerSettings(dim=8, device="cpu", num_negatives=2, step_scope="local")


def test_tables_are_copied_log_many_times_and_a_grown_checkpoint_loads() -> None:
    trainer = IncrementalTrainer(SETTINGS, BEHAVIOURS, 1e-3)
    calls, per_call = 24, GROW_CHUNK // 2  # a chunk of new users every two calls
    capacities = set()
    for call in range(calls):
        events = [
            Interaction(f"u{call * per_call + k}", f"i{k % 50}", "click", 1_000 * call + k)
            for k in range(per_call)
        ]
        trainer.learn(events)
        capacities.add(trainer.encoder.num_users)
    live = trainer.registry.live("user")
    assert live == calls * per_call
    assert trainer.encoder.num_users >= live and trainer.encoder.num_users % GROW_CHUNK == 0
    # one table per growth, 1.5x each: log-many, where a chunk at a time took live / chunk
    growths = len(capacities)
    assert growths <= 1 + math.ceil(math.log(live / GROW_CHUNK) / math.log(1.5))
    assert growths < live // GROW_CHUNK
    twin = IncrementalTrainer(SETTINGS, BEHAVIOURS, 1e-3)
    twin.load_state_dict(trainer.state_dict())
    assert twin.encoder.num_users == trainer.encoder.num_users
    assert torch.equal(twin.encoder.user_emb, trainer.encoder.user_emb)
    ids = [f"u{k}" for k in range(0, live, 97)]
    assert torch.equal(twin.vectors("user", ids), trainer.vectors("user", ids))
