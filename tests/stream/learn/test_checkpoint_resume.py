"""Resume is exact: K steps straight == K/2, checkpoint, a fresh process, K/2 more (CPU)."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from stream.behaviours import Behaviour
from stream.events import Interaction
from stream.learn.checkpoint import CheckpointStore
from stream.learn.trainer import IncrementalTrainer
from stream.settings.training import TrainerSettings
from stream.state.graph_store import DecayedGraphStore, PartitionBatch
from tests.stream.learn.budgets import UNCAPPED

BEHAVIOURS = {"click": Behaviour(1.0, 3_600_000), "purchase": Behaviour(5.0, 36_000_000)}
SETTINGS = TrainerSettings(
    # the full step: a local one draws its replay in the mirror's slot order, which a
    # rebuild from the store changes, so a resumed local trainer is not bit-identical
    step_scope="full",
    dim=16,
    batch_size=128,
    seed=3,
    device="cpu",
    replay_ratio=1.0,
    **UNCAPPED,  # type: ignore[arg-type]
)
EPSILON = 1e-3
TOPIC = "interactions"
WARM, BATCH, K = 400, 100, 8


def stream() -> list[Interaction]:
    rng = random.Random(11)
    return [
        Interaction(
            f"u{rng.randrange(40)}",
            f"i{int(rng.paretovariate(1.5)) % 60}",
            rng.choice(sorted(BEHAVIOURS)),
            1_700_000_000_000 + t * 1_000,
        )
        for t in range(WARM + K * BATCH)
    ]


def batches(start: int = 0) -> Iterator[tuple[int, list[Interaction]]]:
    """``(next_offset, events)`` of the micro-batches after the warm-up, from offset ``start``."""
    events = stream()
    for begin in range(max(start, WARM), WARM + K * BATCH, BATCH):
        yield begin + BATCH, events[begin : begin + BATCH]


def warm_trainer(directory: Path) -> tuple[DecayedGraphStore, IncrementalTrainer]:
    store = DecayedGraphStore(directory / "graph", BEHAVIOURS, EPSILON)
    store.apply(TOPIC, [PartitionBatch(0, WARM, stream()[:WARM])])
    trainer = IncrementalTrainer(SETTINGS, BEHAVIOURS, EPSILON)
    trainer.bootstrap(store)
    trainer.fit(2)
    return store, trainer


def learn(store: DecayedGraphStore, trainer: IncrementalTrainer, offset: int, stop: int) -> int:
    """Apply then learn micro-batches, as the worker does, until ``stop`` batches are in."""
    for next_offset, events in batches(offset):
        if next_offset > WARM + stop * BATCH:
            break
        store.apply(TOPIC, [PartitionBatch(0, next_offset, events)])
        trainer.learn(events)
        offset = next_offset
    return offset


def resume_and_finish(directory: Path) -> None:
    """The fresh process: load the latest checkpoint, rebuild, learn the rest, save."""
    torch.set_num_threads(1)
    store = DecayedGraphStore(directory / "graph", BEHAVIOURS, EPSILON)
    payload = CheckpointStore(directory / "ckpt").load_latest()
    if payload is None:
        raise SystemExit("no checkpoint")
    trainer = IncrementalTrainer(SETTINGS, BEHAVIOURS, EPSILON)
    trainer.load_state_dict(payload["trainer"])
    trainer.bootstrap(store)
    offset = payload["offsets"][f"{TOPIC}:0"]
    position = store.position(TOPIC, 0)
    if position is None or position[0] != offset:
        raise SystemExit(f"store is at {position}, checkpoint trained through {offset}")
    learn(store, trainer, offset, K)
    CheckpointStore(directory / "final").save({"trainer": trainer.state_dict()})
    store.close()


def _same(a: object, b: object, where: str = "state") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where} keys differ"
        for key in a:
            _same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), f"{where} length differs"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_resume_in_a_fresh_process_matches_training_straight_through(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        store, trainer = warm_trainer(tmp_path / "straight")
        learn(store, trainer, WARM, K)
        straight = trainer.state_dict()
        store.close()

        split = tmp_path / "split"
        store, trainer = warm_trainer(split)
        offset = learn(store, trainer, WARM, K // 2)
        CheckpointStore(split / "ckpt").save(
            {"trainer": trainer.state_dict(), "offsets": {f"{TOPIC}:0": offset}}
        )
        store.close()
    finally:
        torch.set_num_threads(threads)
    here = Path(__file__).resolve().parent
    code = (
        f"import sys; sys.path.insert(0, {str(here)!r}); "
        "from pathlib import Path; import test_checkpoint_resume as t; "
        f"t.resume_and_finish(Path({str(split)!r}))"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    resumed = CheckpointStore(split / "final").load_latest()
    assert resumed is not None
    assert resumed["trainer"]["model_version"] == straight["model_version"] > 0
    _same(straight, resumed["trainer"])
