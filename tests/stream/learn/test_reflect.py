"""Reflect: the users with new events re-embedded from their own edges before the step.

Invariants: with one layer the reflected users are exactly what a full propagation over
the new graph gives them (nothing they read is stale); with two, a user whose edges did not
change gets the full propagation's vector back; a reflect moves no parameter and the step
after it is the learn call's step; a reflect without partial sums (a local re-embedding
came last) re-embeds nothing.
"""

from __future__ import annotations

import torch

from stream.behaviours import Behaviour
from stream.events import Interaction
from stream.learn.reflect import reflect_rows
from stream.learn.refresh import embed_all
from stream.learn.trainer import IncrementalTrainer, merged
from stream.settings.training import TrainerSettings

BEHAVIOURS = {"click": Behaviour(1.0, 3_600_000), "purchase": Behaviour(5.0, 36_000_000)}
EPSILON = 1e-3
T0 = 1_700_000_000_000
FIRST = [
    Interaction(f"u{k % 40}", f"i{(k * 7) % 60}", ("click", "purchase")[k % 3 == 0], T0 + k)
    for k in range(400)
]
# old users and items, a new user, a new item, a new pair of both
SECOND = [
    Interaction("u3", "i5", "purchase", T0 + 1_000),
    Interaction("u7", "i59", "click", T0 + 1_001),
    Interaction("new-user", "i2", "click", T0 + 1_002),
    Interaction("u11", "new-item", "click", T0 + 1_003),
    Interaction("new-user-2", "new-item-2", "purchase", T0 + 1_004),
]


def trainer(layers: int, **options: object) -> IncrementalTrainer:
    settings = TrainerSettings(dim=8, device="cpu", layers=layers, **options)  # type: ignore[arg-type]
    t = IncrementalTrainer(settings, BEHAVIOURS, EPSILON)
    t.keep_partial_sums = True
    return t


def parameters(t: IncrementalTrainer) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in t.encoder.named_parameters()}


def test_with_one_layer_reflected_rows_are_the_full_propagations() -> None:
    t = trainer(layers=1)
    t.learn(FIRST)
    before, version = parameters(t), t.model_version
    _, report = t.reflect(SECOND)
    assert report is not None and report.steps == 0
    assert report.model_version == version + 1 == t.model_version
    assert set(report.changed_users) == {e.user_id for e in SECOND}
    assert report.changed_items == []  # left to the step
    after = parameters(t)
    assert all(torch.equal(before[name], after[name]) for name in before)
    full, _ = embed_all(t, t._graph())
    rows = t.registry.rows("user", report.changed_users)
    assert torch.allclose(t.vectors("user", report.changed_users), full["user"][rows], atol=1e-5)
    # not the vectors before the events: the reflect did move them
    assert not torch.allclose(t.vectors("user", ["u3"]), t.vectors("user", ["u4"]))


def test_with_two_layers_a_row_with_no_new_edge_gets_the_propagations_vector_back() -> None:
    t = trainer(layers=2)
    t.learn(FIRST)
    assert t._latest is not None
    kept = {kind: table.clone() for kind, table in t._latest.items()}
    users = torch.arange(0, 40, 3)
    reflect_rows(t, users)
    assert torch.allclose(t._latest["user"][users], kept["user"][users], atol=1e-5)
    assert torch.equal(t._latest["item"], kept["item"])


def test_the_step_after_a_reflect_is_the_learn_calls_step() -> None:
    learned, reflected = trainer(layers=2), trainer(layers=2)
    learned.learn(FIRST)
    reflected.learn(FIRST)
    plain = learned.learn(SECOND)
    absorbed, early = reflected.reflect(SECOND)
    assert early is not None
    stepped = reflected.step(absorbed)
    assert (stepped.steps, stepped.loss, stepped.edges) == (plain.steps, plain.loss, plain.edges)
    ours, theirs = parameters(reflected), parameters(learned)
    assert all(torch.equal(ours[name], theirs[name]) for name in ours)
    assert reflected._latest is not None and learned._latest is not None
    assert all(torch.equal(reflected._latest[k], learned._latest[k]) for k in ("user", "item"))
    # the events count once: in the step's report, not again in the reflect's
    assert early.reflected == stepped.reflected == plain.reflected
    assert stepped.model_version == early.model_version + 1


def test_without_kept_sums_there_is_nothing_to_reflect_from() -> None:
    t = trainer(layers=2)
    t.keep_partial_sums = False
    t.learn(FIRST)
    absorbed, report = t.reflect(SECOND)
    assert report is None and t._partial is None
    assert t.step(absorbed).edges == len(SECOND)


def test_after_a_local_re_embedding_there_is_nothing_to_reflect_from() -> None:
    t = trainer(layers=2, step_scope="local", fanout=3, sweep_rows=4, num_negatives=1)
    t.learn(FIRST)  # a first call re-embeds every row: sums kept
    assert t._partial is not None
    t.learn(SECOND[:2])
    assert t.last_step is not None and t.last_step.whole_graph_steps == 0
    assert t._partial is None
    version = t.model_version
    absorbed, report = t.reflect(SECOND[2:])
    assert report is None and t.model_version == version
    assert t.step(absorbed).edges == 3


def test_a_step_behind_with_nothing_beside_it_is_the_step() -> None:
    stepped, behind = trainer(layers=2), trainer(layers=2)
    for t in (stepped, behind):
        t.learn(FIRST)
    plain = stepped.step(stepped.reflect(SECOND)[0])
    delivered = []
    report = behind.step_behind(behind.reflect(SECOND)[0], delivered.append)
    assert delivered == [report]
    assert (report.steps, report.loss, report.model_version) == (
        plain.steps,
        plain.loss,
        plain.model_version,
    )
    for name, table in stepped.encoder.named_parameters():
        mine = dict(behind.encoder.named_parameters())[name]
        assert torch.equal(mine[: table.shape[0]], table.detach()), name
    assert stepped._latest is not None and behind._latest is not None
    for kind in ("user", "item"):
        assert torch.allclose(behind._latest[kind], stepped._latest[kind], atol=1e-6)
    # the reflected users are not published again unless the step moved them past the
    # threshold; the batch's items are (no reflect published them)
    assert set(report.changed_items) >= {e.item_id for e in SECOND}


def test_a_step_behind_may_come_after_later_batches_grew_the_tables() -> None:
    t = trainer(layers=2)
    t.learn(FIRST)
    capacity = t.encoder.num_items
    first, _ = t.reflect(SECOND)
    wide = [Interaction(f"w{k % 7}", f"wide-{k}", "click", T0 + 2_000 + k) for k in range(1_100)]
    second, _ = t.reflect(wide)
    assert t.encoder.num_items > capacity  # the second batch grew them
    # the first alone: its negatives and replay reach the rows the second registered
    report = t.step_behind(first)
    assert report.steps > 0 and report.edges == len(SECOND)
    report = t.step_behind(merged([second]))
    assert set(report.changed_items) >= {e.item_id for e in wide}


def test_batches_coalesced_for_one_step_behind_are_one_batch() -> None:
    t = trainer(layers=2)
    t.learn(FIRST)
    first, _ = t.reflect(SECOND[:2])
    second, _ = t.reflect(SECOND[2:])
    report = t.step_behind(merged([first, second]))
    assert report.edges == len(SECOND) and report.events == len(SECOND)
    assert set(report.changed_items) >= {e.item_id for e in SECOND}


def test_a_step_behind_publishes_every_user_no_reflect_published() -> None:
    t = trainer(layers=2, max_drift_reports=5)
    absorbed, early = t.reflect(FIRST)  # no propagation yet: nothing reflected
    assert early is None
    report = t.step_behind(absorbed)
    assert set(report.changed_users) == {e.user_id for e in FIRST}  # 40, past the cap of 5
    reflected, early = t.reflect(SECOND)
    assert early is not None
    report = t.step_behind(reflected)
    assert len(report.changed_users) <= 5  # published by the reflect: by drift only
