"""The local step: what it moves, re-embeds and publishes is what its batch reaches."""

from __future__ import annotations

import copy
import dataclasses
import random

import pytest
import torch

from models.neighbourhood import GraphIndex
from stream.behaviours import Behaviour
from stream.events import Interaction
from stream.learn.trainer import IncrementalTrainer
from stream.settings.training import TrainerSettings

BEHAVIOURS = {"click": Behaviour(1.0, 86_400_000)}
EPS = 1e-3
# A sparse graph, two negatives per positive and a small fan-out: one event's neighbourhood
# is a small part of the graph, so "outside it" is not empty.
LOCAL = TrainerSettings(
    step_scope="local",
    dim=8,
    device="cpu",
    negatives="uniform",
    num_negatives=2,
    fanout=2,
    sweep_rows=0,  # a sweep re-embeds rows outside any neighbourhood (its own test)
    replay_ratio=1.0,
    publish_threshold=0.0,
    max_drift_reports=0,
)


def sparse_stream(n: int = 600, users: int = 300, items: int = 300) -> list[Interaction]:
    rng = random.Random(0)
    return [
        Interaction(f"u{rng.randrange(users)}", f"i{rng.randrange(items)}", "click", 1_000 * k)
        for k in range(n)
    ]


def dense_stream() -> list[Interaction]:
    """~30 edges per node on 100 users and 100 items: a capped tree is a small part."""
    rng = random.Random(1)
    return [
        Interaction(f"u{rng.randrange(100)}", f"i{rng.randrange(100)}", "click", 1_000 * k)
        for k in range(3_000)
    ]


def warm(settings: TrainerSettings) -> tuple[IncrementalTrainer, list[Interaction]]:
    events = sparse_stream()
    trainer = IncrementalTrainer(settings, BEHAVIOURS, EPS)
    trainer.learn(events[:-2])  # every id registered, the vectors computed once
    return trainer, events[-2:]


def row_state(trainer: IncrementalTrainer) -> dict[str, list[torch.Tensor]]:
    """Every row table and its optimiser state, copied."""
    out = {}
    for name, table in (("user", trainer.encoder.user_emb), ("item", trainer.encoder.item_emb)):
        state = trainer.optimizer.state[table]
        out[name] = [table.detach().clone()] + [
            state[key].clone() for key in ("exp_avg", "exp_avg_sq", "row_step")
        ]
    return out


def test_rows_outside_the_sampled_neighbourhood_keep_parameters_and_state_bit_for_bit() -> None:
    trainer, batch = warm(LOCAL)
    before = row_state(trainer)
    trainer.learn(batch)
    step = trainer.last_step
    assert step is not None
    moved = step.moved
    num_users = trainer.encoder.num_users
    inside = {"user": moved[moved < num_users], "item": moved[moved >= num_users] - num_users}
    after = row_state(trainer)
    for kind in ("user", "item"):
        outside = torch.ones(before[kind][0].shape[0], dtype=torch.bool)
        outside[inside[kind]] = False
        assert int(outside.sum()) > int((~outside).sum())  # the test has an outside
        for old, new in zip(before[kind], after[kind], strict=True):
            assert torch.equal(old[outside], new[outside])
        assert not torch.equal(before[kind][0][~outside], after[kind][0][~outside])


def test_vectors_farther_than_the_layers_from_every_moved_row_do_not_change() -> None:
    trainer, batch = warm(LOCAL)
    users, items = [f"u{u}" for u in range(300)], [f"i{i}" for i in range(300)]
    old = {"user": trainer.vectors("user", users), "item": trainer.vectors("item", items)}
    trainer.learn(batch)
    step = trainer.last_step
    assert step is not None
    rows = {k: trainer.registry.rows(k, ids) for k, ids in (("user", users), ("item", items))}
    own = [trainer.registry.rows("user", [e.user_id for e in batch])]
    own.append(trainer.registry.rows("item", [e.item_id for e in batch]) + step.num_users)
    near = step.index.within(torch.cat([step.moved, *own]), trainer.settings.layers)
    assert near is not None
    new = {"user": trainer.vectors("user", users), "item": trainer.vectors("item", items)}
    offset = {"user": 0, "item": step.num_users}
    far_count = 0
    for kind in ("user", "item"):
        far = ~torch.isin(rows[kind] + offset[kind], near)
        far_count += int(far.sum())
        assert torch.equal(old[kind][far], new[kind][far])
        # the rows that can have moved got the full graph's propagation exactly
        changed = ~torch.all(old[kind] == new[kind], dim=1)
        assert bool(changed[~far].any())
    assert far_count > 0


def test_reembedded_rows_are_the_full_propagation_of_the_current_model() -> None:
    trainer, batch = warm(dataclasses.replace(LOCAL, fanout=0))  # exact: no cap
    trainer.learn(batch)
    graph = trainer._graph(prune=False)
    users = torch.arange(trainer.registry.live("user"))
    items = torch.arange(trainer.registry.live("item"))
    full_users, full_items = trainer.encoder.embed(graph, users, items)
    for kind, full in (("user", full_users), ("item", full_items)):
        rows = trainer.reembedded[kind]
        assert rows is not None and rows.numel() > 0
        latest = trainer.vectors(kind, trainer.registry.ids(kind, rows))
        torch.testing.assert_close(latest[:, : trainer.settings.dim], full[rows])


def test_published_keys_are_the_reembedded_rows_plus_pending_drift() -> None:
    trainer, batch = warm(LOCAL)  # threshold 0, no cap: every re-embedded row that moved
    report = trainer.learn(batch)
    for kind, changed in (("user", report.changed_users), ("item", report.changed_items)):
        rows = trainer.reembedded[kind]
        assert rows is not None
        assert sorted(changed) == sorted(trainer.registry.ids(kind, rows))
    # with a cap, the rest waits: nothing beyond the re-embedded rows is ever reported
    capped = dataclasses.replace(LOCAL, max_drift_reports=3)
    trainer, batch = warm(capped)
    pending: set[str] = set()
    for event in batch:
        report = trainer.learn([event])
        rows = trainer.reembedded["user"]
        assert rows is not None
        due = set(trainer.registry.ids("user", rows)) | pending
        assert set(report.changed_users) <= due
        assert event.user_id in report.changed_users  # its own event: always reported
        pending = due - set(report.changed_users)


@pytest.mark.parametrize(
    ("sampler", "negatives", "held_out", "whole_graph"),
    [("in_batch", 1, 2, False), ("in_batch", 1, 300, True), ("uniform", 64, 300, True)],
)
def test_uncapped_local_step_trains_on_the_full_graph_loss(
    sampler: str, negatives: int, held_out: int, whole_graph: bool
) -> None:
    """Same model and positives: with no fan-out cap the step's loss (computed before it
    moves anything) is the full step's, whether the step ran on the sampled neighbourhood
    of its users and positives or fell back to the whole graph (300 positives'
    neighbourhoods are most of it, and then its negatives too are the full step's). With
    in-batch negatives (the other positives, whose log Q comes from the index's degrees
    there and the whole view's here) on a sample too; sampled negatives on a sample are
    scored from what the last embedding kept, before the batch's edges (their own test)."""
    # no replay: the two scopes draw it from different (equally distributed) samplers
    settings = dataclasses.replace(
        LOCAL, negatives=sampler, num_negatives=negatives, replay_ratio=0.0
    )
    events = sparse_stream()
    trainer = IncrementalTrainer(settings, BEHAVIOURS, EPS)
    trainer.learn(events[:-held_out])  # the first call embeds every row after its step
    batch = events[-held_out:]
    state = trainer.state_dict()
    losses = {}
    for scope, fanout in (("local", 0), ("full", 0), ("local", 1)):
        chosen = dataclasses.replace(settings, step_scope=scope, fanout=fanout)
        twin = IncrementalTrainer(chosen, BEHAVIOURS, EPS)
        twin.load_state_dict(state)
        twin.mirror = copy.deepcopy(trainer.mirror)  # the same graph, not merged twice
        losses[scope, fanout] = twin.learn(batch).loss
        if scope == "local" and fanout == 0:
            step = twin.last_step
            assert step is not None
            assert (step.whole_graph_steps > 0) == whole_graph
    assert abs(losses["local", 0] - losses["full", 0]) < 1e-5
    # a fan-out of 1 samples (unless the whole graph is the cheaper way there too)
    assert (losses["local", 1] == losses["full", 0]) == whole_graph


def test_either_optimiser_state_loads_into_the_other_scope() -> None:
    events = sparse_stream()
    for saved, loaded in (("full", "local"), ("local", "full")):
        a = IncrementalTrainer(dataclasses.replace(LOCAL, step_scope=saved), BEHAVIOURS, EPS)
        a.learn(events[:300])
        b = IncrementalTrainer(dataclasses.replace(LOCAL, step_scope=loaded), BEHAVIOURS, EPS)
        b.load_state_dict(a.state_dict())
        report = b.learn(events[300:])
        assert report.steps > 0 and report.loss == report.loss  # trained, finite
        table = b.encoder.user_emb
        assert (
            int(b.optimizer.state[table]["step"])
            == int(a.optimizer.state[a.encoder.user_emb]["step"]) + report.steps
        )


def test_the_steps_index_degree_matches_the_trainers_whole_graph_view() -> None:
    trainer, batch = warm(LOCAL)
    trainer.learn(batch)
    step = trainer.last_step
    assert step is not None
    graph = trainer._graph(prune=False)
    fresh = GraphIndex.build(graph, trainer.encoder.num_users, trainer.encoder.num_items)
    nodes = torch.arange(fresh.num_nodes)
    torch.testing.assert_close(step.index.node_degree(nodes), fresh.degree)


def test_capped_step_reembeds_and_publishes_only_its_seeds_on_a_bounded_tree() -> None:
    """Fan-out > 0: the re-embedded and published rows are the seeds (the positives' and
    new events' rows), every other vector stays as cached bit for bit, even rows whose
    parameters the step moved, and the re-embedding reads at most fanout edges per node
    and hop (plus the index's unmerged delta), far fewer than the graph holds."""
    dense = dense_stream()
    trainer = IncrementalTrainer(LOCAL, BEHAVIOURS, EPS)
    trainer.learn(dense[:-2])
    batch = dense[-2:]
    ids = {"user": [f"u{u}" for u in range(100)], "item": [f"i{i}" for i in range(100)]}
    old = {kind: trainer.vectors(kind, ids[kind]) for kind in ids}
    report = trainer.learn(batch)
    step = trainer.last_step
    assert step is not None and step.whole_graph_steps == 0
    pos_users, pos_items = step.positives
    seeds = {
        "user": set(pos_users.tolist())
        | set(trainer.registry.rows("user", [e.user_id for e in batch]).tolist()),
        "item": set(pos_items.tolist())
        | set(trainer.registry.rows("item", [e.item_id for e in batch]).tolist()),
    }
    replayed = round(LOCAL.replay_ratio * len(batch))
    moved = step.moved
    moved_rows = {
        "user": moved[moved < step.num_users],
        "item": moved[moved >= step.num_users] - step.num_users,
    }
    changed = {"user": report.changed_users, "item": report.changed_items}
    for kind in ids:
        rows = trainer.reembedded[kind]
        assert rows is not None
        assert set(rows.tolist()) == seeds[kind]
        assert len(seeds[kind]) <= len(batch) + replayed
        assert set(changed[kind]) == set(trainer.registry.ids(kind, rows))
        new = trainer.vectors(kind, ids[kind])
        outside = ~torch.isin(trainer.registry.rows(kind, ids[kind]), rows)
        assert torch.equal(old[kind][outside], new[outside])
        assert not torch.equal(old[kind][~outside], new[~outside])
        # rows whose parameters moved, not seeds: kept stale until they are seeds again
        assert set(moved_rows[kind].tolist()) - seeds[kind]
    # every seed was one of the step's (its positives): the re-embedding reuses the step's
    # sample and draws nothing; the step drew at most fanout edges per node and hop (plus
    # the index's unmerged delta), far fewer than the graph holds
    assert step.reembed_edges == 0
    step_seeds = pos_users.numel() * (2 + LOCAL.num_negatives)  # users, items, negatives
    fanout, delta = LOCAL.fanout, 2 * trainer.mirror.index.delta_entries
    first_hop = step_seeds * fanout + delta
    assert 0 < step.step_edges <= first_hop * (1 + fanout) + delta
    assert step.step_edges * 10 < trainer.mirror.num_edges


def drawn_at_most(seeds: int, fanout: int, delta: int) -> int:
    """Edges a ``fanout``-capped two-hop sample of ``seeds`` nodes draws at most: ``fanout``
    per node and hop from the index's base, plus the delta entries (each node is drawn
    once, so a hop reads each delta entry at most once)."""
    first_hop = seeds * fanout + delta
    return first_hop * (1 + fanout) + delta


def test_a_bounded_calls_work_follows_its_batch_not_the_graphs_size() -> None:
    """Two graphs ten times apart, the same batch size: the edges a call draws from the
    index (its step's sample and the re-embedding's) and the rows its optimiser moves are
    bounded by the call's seeds x fanout^layers on both, whatever the graph holds."""
    settings = dataclasses.replace(
        LOCAL, negatives="shared", num_negatives=4, fanout=3, sweep_rows=8
    )
    batch, fanout = 8, settings.fanout
    graph_edges = []
    for nodes in (1_000, 10_000):
        rng = random.Random(nodes)
        events = [
            Interaction(f"u{rng.randrange(nodes)}", f"i{rng.randrange(nodes)}", "click", k)
            for k in range(8 * nodes + batch)
        ]
        trainer = IncrementalTrainer(settings, BEHAVIOURS, EPS)
        trainer.learn(events[:-batch])
        trainer.mirror.index.rebuild()  # the measured call's delta: its own edges only
        trainer.learn(events[-batch:])
        step = trainer.last_step
        assert step is not None and step.bounded and step.whole_graph_steps == 0
        delta = 2 * trainer.mirror.index.delta_entries
        assert delta <= 2 * batch
        positives = step.positives[0].numel()
        assert positives <= 2 * batch  # new and replayed
        step_seeds = 2 * positives + settings.num_negatives
        assert 0 < step.step_edges <= drawn_at_most(step_seeds, fanout, delta)
        rows = trainer.reembedded
        assert rows["user"] is not None and rows["item"] is not None
        reembedded = int(rows["user"].numel() + rows["item"].numel())
        assert reembedded <= 2 * positives + 2 * batch + 2 * settings.sweep_rows
        assert 0 < step.reembed_edges <= drawn_at_most(reembedded, fanout, delta)
        assert step.moved.numel() <= step_seeds + step.step_edges  # seeds and what they reach
        graph_edges.append(trainer.mirror.num_edges)
    assert graph_edges[1] >= 8 * graph_edges[0]


def test_the_sweep_reembeds_the_next_rows_round_robin_and_reaches_every_row() -> None:
    sweep = 30  # per kind and call: 100 live rows each, so 4 calls reach every row
    settings = dataclasses.replace(LOCAL, sweep_rows=sweep, replay_ratio=0.0)
    trainer = IncrementalTrainer(settings, BEHAVIOURS, EPS)
    events = dense_stream()
    trainer.learn(events[:-4])
    seen: dict[str, set[int]] = {"user": set(), "item": set()}
    for call, event in enumerate(events[-4:]):
        trainer.learn([event])
        own = {"user": event.user_id, "item": event.item_id}
        for kind in seen:
            rows = trainer.reembedded[kind]
            assert rows is not None
            expected = {(call * sweep + k) % 100 for k in range(sweep)}
            expected |= set(trainer.registry.rows(kind, [own[kind]]).tolist())
            assert set(rows.tolist()) == expected
            seen[kind] |= expected
    assert seen == {"user": set(range(100)), "item": set(range(100))}


def test_a_capped_call_whose_step_ran_on_the_whole_graph_reembeds_every_row_exactly() -> None:
    # 300 positives' neighbourhoods are most of the sparse graph: the step runs on the whole
    events = sparse_stream()
    trainer = IncrementalTrainer(LOCAL, BEHAVIOURS, EPS)
    trainer.learn(events[:300])
    trainer.learn(events[300:])
    step = trainer.last_step
    assert step is not None and step.bounded and step.whole_graph_steps > 0
    assert trainer.reembedded == {"user": None, "item": None}
    graph = trainer._graph(prune=False)
    users = torch.arange(trainer.registry.live("user"))
    items = torch.arange(trainer.registry.live("item"))
    full_users, _ = trainer.encoder.embed(graph, users, items)
    latest = trainer.vectors("user", trainer.registry.ids("user", users))
    torch.testing.assert_close(latest[:, : trainer.settings.dim], full_users)


def test_reembedding_trees_larger_than_the_graph_give_way_to_one_full_propagation() -> None:
    """The step samples locally, but its re-embedding's seeds (here a sweep of every row,
    as a call coalescing thousands of events brings) would draw trees holding more edges
    than the graph: every row is re-embedded with one full propagation instead, the same
    values a full step's re-embedding gives."""
    trainer, batch = warm(dataclasses.replace(LOCAL, sweep_rows=300))
    trainer.learn(batch)
    step = trainer.last_step
    assert step is not None and step.bounded and step.whole_graph_steps == 0
    assert step.step_edges > 0 and step.reembed_edges == 0  # no tree drawn, none used
    assert trainer.reembedded == {"user": None, "item": None}
    graph = trainer._graph(prune=False)
    users = torch.arange(trainer.registry.live("user"))
    items = torch.arange(trainer.registry.live("item"))
    full_users, full_items = trainer.encoder.embed(graph, users, items)
    dim = trainer.settings.dim
    for kind, rows, full in (("user", users, full_users), ("item", items, full_items)):
        latest = trainer.vectors(kind, trainer.registry.ids(kind, rows))
        torch.testing.assert_close(latest[:, :dim], full)


def test_a_step_with_layer_history_draws_one_hop_once_an_embedding_kept_the_layers() -> None:
    """With layer history the first call (nothing kept yet) steps on the whole graph, whose
    embedding keeps every row's layers; later calls draw one hop around their positives
    (at most fanout edges each, negatives none), re-embed and publish exactly their seeds
    on that sample, and leave every other vector as cached. The kept layers are not saved:
    a resumed trainer's first call steps on the whole graph again."""
    settings = dataclasses.replace(LOCAL, layer_history=True, fanout=3)
    dense = dense_stream()
    trainer = IncrementalTrainer(settings, BEHAVIOURS, EPS)
    assert not trainer.encoder.has_layer_history
    trainer.learn(dense[:-2])
    first = trainer.last_step
    assert first is not None and first.whole_graph_steps == settings.steps_per_batch
    assert trainer.encoder.has_layer_history
    ids = [f"u{u}" for u in range(100)]
    old = trainer.vectors("user", ids)
    trainer.learn(dense[-2:])
    step = trainer.last_step
    assert step is not None and step.whole_graph_steps == 0
    pos_users, pos_items = step.positives
    delta = 2 * trainer.mirror.index.delta_entries
    seeds = torch.unique(torch.cat([pos_users, pos_items + step.num_users]))
    assert 0 < step.step_edges <= seeds.numel() * settings.fanout + delta
    assert step.reembed_edges == 0  # every seed was the step's: its one-hop sample reused
    rows = trainer.reembedded["user"]
    assert rows is not None and set(rows.tolist()) == set(pos_users.tolist())
    new = trainer.vectors("user", ids)
    outside = ~torch.isin(trainer.registry.rows("user", ids), rows)
    assert torch.equal(old[outside], new[outside])
    assert not torch.equal(old[~outside], new[~outside])
    # the kept layers are not saved: a resumed trainer's first call steps on the whole graph
    resumed = IncrementalTrainer(settings, BEHAVIOURS, EPS)
    resumed.load_state_dict(trainer.state_dict())
    assert not resumed.encoder.has_layer_history
    resumed.learn(sparse_stream(4, users=100, items=100))
    again = resumed.last_step
    assert again is not None and again.whole_graph_steps == settings.steps_per_batch
    assert resumed.encoder.has_layer_history
