"""IncrementalTrainer on small synthetic streams: learning, capacity, reports, resume."""

from __future__ import annotations

import dataclasses
import math
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from models.base import grown_size
from models.losses import in_batch_scores, info_nce
from models.sampling import item_degrees
from stream.behaviours import Behaviour
from stream.errors import ConfigError
from stream.events import Interaction
from stream.learn import objective
from stream.learn.trainer import IncrementalTrainer
from stream.settings.training import TrainerSettings
from stream.state.graph_store import DecayedGraphStore, PartitionBatch
from tests.stream.learn.budgets import UNCAPPED

BEHAVIOURS = {"click": Behaviour(1.0, 86_400_000), "purchase": Behaviour(5.0, 864_000_000)}
EPS = 1e-3
SMALL = TrainerSettings(
    dim=16,
    batch_size=256,
    device="cpu",
    negatives="uniform",
    **UNCAPPED,  # type: ignore[arg-type]
)


def block_stream(seed: int, n: int, t0: int = 1_000_000) -> list[Interaction]:
    """Users u0..u11 in 3 groups; group g interacts only with items g*6 .. g*6+5."""
    rng = random.Random(seed)
    out = []
    for k in range(n):
        user = rng.randrange(12)
        item = (user % 3) * 6 + rng.randrange(6)
        kind = "purchase" if rng.random() < 0.2 else "click"
        out.append(Interaction(f"u{user}", f"i{item}", kind, t0 + 1_000 * k))
    return out


def batches(events: list[Interaction], size: int) -> list[list[Interaction]]:
    return [events[i : i + size] for i in range(0, len(events), size)]


def observed_margin(trainer: IncrementalTrainer) -> float:
    """Mean score of in-group (observed kind of) pairs minus that of out-of-group pairs."""
    users = [f"u{u}" for u in range(12)]
    items = [f"i{i}" for i in range(18)]
    scores = trainer.vectors("user", users) @ trainer.vectors("item", items).T
    same = torch.tensor([[u % 3 == i // 6 for i in range(18)] for u in range(12)])
    return float(scores[same].mean() - scores[~same].mean())


def test_learning_separates_observed_pairs_from_random_ones() -> None:
    events = block_stream(0, 240)
    learner = IncrementalTrainer(dataclasses.replace(SMALL, lr=0.05), BEHAVIOURS, EPS)
    control = IncrementalTrainer(dataclasses.replace(SMALL, lr=1e-12), BEHAVIOURS, EPS)
    for chunk in batches(events, 40):
        report = learner.learn(chunk)
        control.learn(chunk)
        assert report.steps == SMALL.steps_per_batch and math.isfinite(report.loss)
    # same graph, same initial rows: only the gradient steps differ
    assert observed_margin(learner) > observed_margin(control) + 0.3


def test_reports_track_versions_and_changes_beyond_the_threshold() -> None:
    trainer = IncrementalTrainer(SMALL, BEHAVIOURS, EPS)
    reported: dict[tuple[str, str], torch.Tensor] = {}
    version = 0
    for chunk in batches(block_stream(1, 90), 30):
        report = trainer.learn(chunk)
        assert report.model_version == version + 1
        version = report.model_version
        assert report.edges == len(chunk)
        assert report.replayed <= SMALL.replay_ratio * len(chunk)
        for kind, changed in (("user", report.changed_users), ("item", report.changed_items)):
            ids = [f"u{u}" for u in range(12)] if kind == "user" else [f"i{i}" for i in range(18)]
            known = [i for i in ids if trainer.registry.rows(kind, [i]).item() >= 0]
            vectors = dict(zip(known, trainer.vectors(kind, known), strict=True))
            for id_ in known:
                if id_ in changed:
                    reported[(kind, id_)] = vectors[id_]
                else:  # never reported, or within the threshold of what was reported
                    last = reported[(kind, id_)]
                    assert float((vectors[id_] - last).norm()) <= SMALL.publish_threshold
    empty = trainer.learn([])
    assert (empty.steps, empty.changed_users, empty.changed_items) == (0, [], [])
    assert empty.model_version == version + 1


def test_flood_of_ids_is_refused_then_evicts_expired_ones() -> None:
    settings = dataclasses.replace(SMALL, max_users=8, max_items=4, id_ttl_ms=10_000)
    trainer = IncrementalTrainer(settings, BEHAVIOURS, EPS)
    flood = [Interaction(f"u{k}", f"i{k % 6}", "click", 1_000) for k in range(20)]
    report = trainer.learn(flood)
    assert (report.refused_users, report.refused_items) == (12, 2)
    # only events whose user (u0..u7) and item (i0..i3) both got a row: k = 0..3, 6, 7
    assert report.edges == 6
    assert trainer.registry.live("user") == 8
    late = [Interaction(f"v{k}", "j0", "click", 100_000) for k in range(5)]
    report = trainer.learn(late)
    assert (report.evicted_users, report.evicted_items) == (5, 1)
    assert trainer.registry.live("user") == 8 and trainer.registry.live("item") == 4
    assert trainer.encoder.num_users == grown_size(8, 0)  # bounded: never grew past capacity
    evicted = [f"u{k}" for k in range(8) if trainer.registry.rows("user", [f"u{k}"]).item() < 0]
    assert len(evicted) == 5
    assert float(trainer.vectors("user", evicted).norm()) == 0.0  # unknown -> zeros
    # evicted: u0..u4 and i2 (least recently seen); their edges went with them, so of
    # the 6 old edges u6-i0 and u7-i1 are left, beside the 5 new ones
    assert trainer.mirror.snapshot().num_edges == 2 + 5
    assert set(report.changed_users) >= {f"v{k}" for k in range(5)}


def test_reads_change_nothing() -> None:
    trainer = IncrementalTrainer(SMALL, BEHAVIOURS, EPS)
    trainer.learn(block_stream(2, 60))
    before_registry = trainer.registry.state_dict()
    before = trainer.state_dict()
    edges = trainer.mirror.num_edges
    v = trainer.vectors("user", ["u0", "nobody"])
    assert v.shape == (2, SMALL.out_dim)
    # a known user: a unit-length embedding, then the prior's constant 1; unknown: zeros
    assert float(v[0, : SMALL.dim].norm()) == pytest.approx(1.0) and float(v[1].norm()) == 0.0
    assert trainer.registry.state_dict() == before_registry
    assert trainer.mirror.num_edges == edges
    after = trainer.state_dict()
    for name, tensor in before["encoder"].items():
        assert torch.equal(tensor, after["encoder"][name])


def test_state_round_trip_resumes_with_identical_next_learn(tmp_path: Path) -> None:
    first, second = block_stream(4, 80), block_stream(5, 40, t0=2_000_000)
    # the full step: a local one draws its replay in the mirror's slot order, which a
    # rebuild from the store changes, so its resume is not bit-identical
    settings = dataclasses.replace(SMALL, negatives="popularity", step_scope="full")
    a = IncrementalTrainer(settings, BEHAVIOURS, EPS)
    with DecayedGraphStore(tmp_path / "g", BEHAVIOURS, epsilon=EPS) as store:
        store.apply("t", [PartitionBatch(0, len(first), first)])
        for chunk in batches(first, 40):
            a.learn(chunk)
        state = a.state_dict()
        b = IncrementalTrainer(settings, BEHAVIOURS, EPS)
        b.load_state_dict(state)
        b.bootstrap(store)
    ra, rb = a.learn(second), b.learn(second)
    assert (ra.model_version, ra.steps, ra.loss) == (rb.model_version, rb.steps, rb.loss)
    assert (ra.changed_users, ra.changed_items) == (rb.changed_users, rb.changed_items)
    users = [f"u{u}" for u in range(12)]
    assert torch.equal(a.vectors("user", users), b.vectors("user", users))


def test_bootstrap_registers_the_stores_ids_and_fit_is_deterministic(tmp_path: Path) -> None:
    events = block_stream(6, 60)
    with DecayedGraphStore(tmp_path / "g", BEHAVIOURS, epsilon=EPS) as store:
        store.apply("t", [PartitionBatch(0, len(events), events)])
        trainers = [IncrementalTrainer(SMALL, BEHAVIOURS, EPS) for _ in range(2)]
        for t in trainers:
            t.bootstrap(store)
        assert trainers[0].mirror.num_edges == store.counts().edges
    users = sorted({e.user_id for e in events})
    assert bool((trainers[0].registry.rows("user", users) >= 0).all())
    reports = [t.fit(epochs=2) for t in trainers]
    assert reports[0].model_version == 1 and reports[0].steps > 0
    assert set(reports[0].changed_users) == set(users)
    assert torch.equal(trainers[0].vectors("user", users), trainers[1].vectors("user", users))


@pytest.mark.parametrize(
    ("loss", "negatives"), [("info_nce", "in_batch"), ("info_nce", "hard"), ("bpr", "in_batch")]
)
def test_every_loss_and_sampler_trains(loss: str, negatives: str) -> None:
    settings = dataclasses.replace(SMALL, loss=loss, negatives=negatives, num_negatives=2)
    report = IncrementalTrainer(settings, BEHAVIOURS, EPS).learn(block_stream(7, 40))
    assert report.steps > 0 and math.isfinite(report.loss) and report.loss >= 0


def test_in_batch_softmax_corrects_by_log_degree_and_masks_the_rows_own_item(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The other rows' positives come as often as their items are interacted with: every
    logit gets ``-log`` of its item's decayed weighted degree (the positive's too), and a
    column holding the row's own item is no negative of it."""
    seen: dict[str, torch.Tensor] = {}

    def scores(user: torch.Tensor, pos: torch.Tensor, items: torch.Tensor) -> Any:
        seen["items"] = items
        return in_batch_scores(user, pos, items)

    def loss(pos: torch.Tensor, neg: torch.Tensor, temperature: float, offset: Any) -> Any:
        seen["neg"], seen["offset"] = neg, offset
        return info_nce(pos, neg, temperature, offset)

    monkeypatch.setattr(objective, "in_batch_scores", scores)
    monkeypatch.setattr(objective, "info_nce", loss)
    settings = dataclasses.replace(SMALL, negatives="in_batch", replay_ratio=0.0)
    trainer = IncrementalTrainer(settings, BEHAVIOURS, EPS)
    trainer.learn(block_stream(9, 60))
    items, neg, offset = seen["items"], seen["neg"], seen["offset"]
    degree = item_degrees(trainer._graph(prune=False), trainer.encoder.num_items)
    expected = -degree[items].log().float()
    torch.testing.assert_close(offset[:, 0], expected)
    torch.testing.assert_close(offset[:, 1:], expected.expand(items.numel(), -1))
    same = items[:, None] == items[None, :]
    assert bool(torch.isinf(neg[same]).all()) and bool(torch.isfinite(neg[~same]).all())
    assert bool((~same).any()) and bool((same.sum(1) > 1).any())  # both cases occur


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_with_mixed_precision_learns() -> None:
    settings = dataclasses.replace(SMALL, device="cuda", mixed_precision=True)
    trainer = IncrementalTrainer(settings, BEHAVIOURS, EPS)
    report = trainer.learn(block_stream(8, 60))
    assert trainer.device.type == "cuda" and math.isfinite(report.loss)
    assert trainer.vectors("user", ["u0"]).device.type == "cpu"


@pytest.mark.parametrize(
    ("change", "name"),
    [
        ({"encoder": "nope"}, "'nope'"),
        ({"loss": "mse"}, "'mse'"),
        ({"negatives": "random"}, "'random'"),
        ({"lr": 0.0}, "lr"),
        ({"device": "tpu"}, "'tpu'"),
        ({"max_users": 0}, "max_users"),
        ({"publish_threshold": -1.0}, "publish_threshold"),
    ],
)
def test_settings_are_validated(change: dict[str, object], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        TrainerSettings(**change)  # type: ignore[arg-type]


@pytest.mark.parametrize("scope", ["full", "local"])
def test_a_coalesced_batch_draws_only_the_replay_its_capped_steps_train_on(scope: str) -> None:
    """A batch of more positives than max_steps_per_batch x batch_size keeps that many, new
    and replayed in the batch's proportion (replay_ratio), so the replay draw follows what
    the steps train on, not the batch; a batch within that room replays replay_ratio per new
    edge; every row with a new event is reported either way."""
    settings = dataclasses.replace(
        SMALL, batch_size=16, max_steps_per_batch=2, replay_ratio=0.5, step_scope=scope
    )
    trainer = IncrementalTrainer(settings, BEHAVIOURS, EPS)
    trainer.learn(block_stream(0, 120))
    small = trainer.learn(block_stream(1, 12, t0=9_000_000))
    assert small.edges == 12 and small.replayed == 6  # 18 positives: room for 32
    big_events = block_stream(2, 200, t0=20_000_000)
    big = trainer.learn(big_events)
    assert big.edges == 200
    kept = round(32 * 200 / 300)  # of the 32 positives, the new edges' share: 2 / 3
    assert big.replayed == 32 - kept and big.steps == 2
    assert {e.user_id for e in big_events} <= set(big.changed_users)
    assert {e.item_id for e in big_events} <= set(big.changed_items)


def test_live_options_bound_steps_and_drift_but_always_report_new_events() -> None:
    """A coalesced batch trains at most max_steps_per_batch steps; drift alone reports at
    most max_drift_reports rows; every row with a new event is reported, with the newest
    event time of its own events."""
    settings = dataclasses.replace(
        SMALL, batch_size=8, max_steps_per_batch=2, max_drift_reports=1, publish_threshold=0.0
    )
    trainer = IncrementalTrainer(settings, BEHAVIOURS, EPS)
    trainer.learn(block_stream(0, 120))
    late = block_stream(1, 30, t0=9_000_000)[:5]
    report = trainer.learn(late)
    assert report.steps == 2  # 10 positives (5 new + 5 replayed) would take 2 steps anyway
    big = trainer.learn(block_stream(2, 200, t0=20_000_000))
    assert big.steps == 2  # 400 positives in steps of 8: capped
    touched_users = {e.user_id for e in late}
    touched_items = {e.item_id for e in late}
    assert touched_users <= set(report.changed_users)
    assert touched_items <= set(report.changed_items)
    assert len(set(report.changed_users) - touched_users) <= 1  # the drift budget
    assert len(set(report.changed_items) - touched_items) <= 1
    newest = {u: max(e.ts for e in late if e.user_id == u) for u in touched_users}
    times = dict(zip(report.changed_users, report.changed_user_event_ms, strict=True))
    for user, ts in newest.items():
        assert times[user] == ts
