"""Training on events the graph already holds (the catch-up after a restart): the mirror
is not merged twice, the trainer takes a step, and every node the events touch is reported,
however many, whatever the drift cap."""

from __future__ import annotations

from pathlib import Path

from stream.behaviours import Behaviour
from stream.events import Interaction
from stream.learn.trainer import IncrementalTrainer
from stream.settings.training import TrainerSettings
from stream.state.graph_store import DecayedGraphStore, PartitionBatch

BEHAVIOURS = {"click": Behaviour(1.0, 3_600_000), "purchase": Behaviour(5.0, 36_000_000)}
EPSILON = 1e-3
T0 = 1_700_000_000_000
OLD = [Interaction(f"o{k % 10}", f"i{k % 20}", "click", T0 + k) for k in range(100)]
NEW = [
    Interaction(f"n{k % 300}", f"i{k % 40}", ("click", "purchase")[k % 2], T0 + 1_000 + k)
    for k in range(600)
]


def trainer_on(tmp_path: Path, events: list[Interaction], drift_cap: int) -> IncrementalTrainer:
    settings = TrainerSettings(dim=8, device="cpu", max_drift_reports=drift_cap)
    with DecayedGraphStore(tmp_path / "graph", BEHAVIOURS, EPSILON) as store:
        store.apply("t", [PartitionBatch(0, len(events), events)])
        trainer = IncrementalTrainer(settings, BEHAVIOURS, EPSILON)
        trainer.bootstrap(store)
    return trainer


def snapshot(trainer: IncrementalTrainer) -> tuple[list[int], list[int], list[float]]:
    g = trainer.mirror.snapshot(prune=False)
    return g.users.tolist(), g.items.tolist(), g.weights.tolist()


def test_events_in_the_graph_are_trained_on_not_merged_again(tmp_path: Path) -> None:
    trainer = trainer_on(tmp_path, OLD + NEW, drift_cap=5)
    before = snapshot(trainer)
    report = trainer.learn(NEW, in_graph=True)
    assert snapshot(trainer) == before
    assert report.steps >= 1 and report.edges == len(NEW)
    assert set(report.changed_users) >= {e.user_id for e in NEW}  # 300 > the cap of 5
    assert set(report.changed_items) >= {e.item_id for e in NEW}
    newest: dict[str, int] = {}
    for e in OLD + NEW:
        newest[e.user_id] = max(newest.get(e.user_id, 0), e.ts)
    published = dict(zip(report.changed_users, report.changed_user_event_ms, strict=True))
    assert {u: published[u] for u in {e.user_id for e in NEW}} == {
        u: t for u, t in newest.items() if u.startswith("n")
    }


def test_stored_edges_are_those_with_a_newer_event(tmp_path: Path) -> None:
    trainer = trainer_on(tmp_path, OLD + NEW, drift_cap=5)
    since = T0 + 1_000 + 299
    newer = trainer.stored_edges(since)
    expected = {(e.user_id, e.item_id, e.event_type) for e in NEW if e.ts > since}
    assert {(e.user_id, e.item_id, e.event_type) for e in newer} == expected
    assert all(e.ts > since for e in newer)
    assert len(trainer.stored_edges(None)) == len(
        {(e.user_id, e.item_id, e.event_type) for e in OLD + NEW}
    )


def test_an_event_whose_edge_is_not_held_is_left_out(tmp_path: Path) -> None:
    trainer = trainer_on(tmp_path, OLD, drift_cap=5)
    unknown = [Interaction("o1", "i1", "purchase", T0 + 5)]  # no purchase edge in the store
    rows = trainer.registry.rows("user", ["o1"]), trainer.registry.rows("item", ["i1"])
    assert len(trainer.mirror.positives(unknown, *rows)) == 0
    clicked = [Interaction("o1", "i1", "click", T0 + 5)]
    assert len(trainer.mirror.positives(clicked, *rows)) == 1
