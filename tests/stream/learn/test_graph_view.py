"""The mirror's incremental index: after any writes it equals a build from scratch."""

from __future__ import annotations

import random

import pytest
import torch

from stream.behaviours import Behaviour
from stream.events import Interaction
from stream.learn import slot_records
from stream.learn.graph_mirror import GraphMirror
from stream.learn.graph_view import RECENCY_HALVINGS

BEHAVIOURS = {
    "click": Behaviour(1.0, 2_000),
    "purchase": Behaviour(5.0, 10_000),
    "view": Behaviour(0.5, 500),
}
EPSILON = 0.05
RECENCY = 1_500
USERS, ITEMS = 10, 12


def reference(mirror: GraphMirror) -> tuple[torch.Tensor, dict[tuple[int, int, int], float]]:
    """From the mirror's arrays, every time afresh: each node's degree over the held edges
    (decayed to their partition's watermark, times the user-recency factor) and the
    ``(owner, neighbour, relation) -> weight`` of those at or above epsilon."""
    n = mirror._used
    slots = mirror._alive[:n].nonzero().flatten()
    decayed = mirror._decayed(n)[slots]
    users, items = mirror._users[slots], mirror._items[slots]
    times, relations = mirror._t_ref[slots], mirror._relations[slots]
    newest = torch.zeros(USERS, dtype=torch.long).scatter_reduce(
        0, users, times, "amax", include_self=False
    )
    halvings = (newest[users] - times).clamp(min=0).double() / RECENCY
    weight = decayed * torch.where(halvings > RECENCY_HALVINGS, 0.0, torch.exp2(-halvings))
    degree = torch.zeros(USERS + ITEMS, dtype=torch.float64)
    degree.index_add_(0, users, weight).index_add_(0, items + USERS, weight)
    edges = {}
    for u, i, r, w, d in zip(
        users.tolist(),
        items.tolist(),
        relations.tolist(),
        weight.tolist(),
        decayed.tolist(),
        strict=True,
    ):
        if d >= EPSILON:
            edges[u, i + USERS, r] = edges[i + USERS, u, r] = w
    return degree, edges


def indexed(mirror: GraphMirror) -> tuple[torch.Tensor, dict[tuple[int, int, int], float]]:
    view = mirror.view(USERS, ITEMS)
    nodes = torch.arange(USERS + ITEMS)
    draw = view.draw(nodes, 0, None)
    keys = zip(draw.owner.tolist(), draw.neighbour.tolist(), draw.relation.tolist(), strict=True)
    edges: dict[tuple[int, int, int], float] = {}
    for key, w in zip(keys, draw.weight.tolist(), strict=True):
        assert key not in edges, f"edge {key} drawn twice"
        edges[key] = w
    return view.node_degree(nodes).double(), edges


def random_writes(mirror: GraphMirror, rng: random.Random, steps: int, gap: int) -> None:
    """Batches of events on two partitions (some late, some after long gaps, so edges
    die), with snapshots that prune, evictions and watermark moves between them; after
    each, the index must equal the reference."""
    t = 10_000
    for _ in range(steps):
        events, users, items, parts = [], [], [], []
        for _ in range(rng.randint(1, 8)):
            t += rng.choice([0, 30, 200, gap])
            u, i = rng.randrange(USERS), rng.randrange(ITEMS)
            kind = rng.choice(sorted(BEHAVIOURS))
            ts = t - rng.choice([0, 0, 0, 400])
            events.append(Interaction(f"u{u}", f"i{i}", kind, ts, rng.choice([1.0, 0.5, 3.0])))
            users.append(u)
            items.append(i)
            parts.append(u % 2)  # a user's events come from one partition, as keyed
        mirror.apply(events, torch.tensor(users), torch.tensor(items), parts)
        roll = rng.random()
        if roll < 0.15:
            mirror.snapshot(prune=True)
        elif roll < 0.25:
            dropped = mirror.drop_rows(
                torch.tensor([rng.randrange(USERS)]), torch.tensor([rng.randrange(ITEMS)])
            )
            assert dropped >= 0
        elif roll < 0.35:
            mirror.advance(t + gap, [rng.randrange(2)])
        got_degree, got_edges = indexed(mirror)  # first: a rebuild forgets dead edges
        degree, edges = reference(mirror)
        assert got_edges.keys() == edges.keys()
        for key, weight in edges.items():
            assert got_edges[key] == pytest.approx(weight, rel=1e-5, abs=1e-12)
        torch.testing.assert_close(got_degree, degree, rtol=1e-5, atol=1e-9)
        assert_records_match(mirror)


def assert_records_match(mirror: GraphMirror) -> None:
    """The index's packed copy of every held slot equals the mirror's fields."""
    used = mirror._used
    held = mirror._alive[:used]
    records = mirror.index._records.read(torch.arange(used))[held]
    for column, field in (
        (slot_records.USER, mirror._users),
        (slot_records.ITEM, mirror._items),
        (slot_records.RELATION, mirror._relations),
        (slot_records.PART, mirror._part),
        (slot_records.T_REF, mirror._t_ref),
    ):
        assert torch.equal(records[:, column], field[:used][held])
    assert torch.equal(slot_records.w_ref(records), mirror._w_ref[:used][held])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_the_incremental_index_equals_a_build_from_scratch(seed: int) -> None:
    mirror = GraphMirror(BEHAVIOURS, EPSILON, RECENCY)
    mirror.index.rebuild_share = 1e9  # never rebuilt for its delta: every read is incremental
    random_writes(mirror, random.Random(seed), steps=30, gap=400)  # within 64 half-lives
    assert mirror.index.rebuilds == 1  # the first read's, then only incremental upkeep
    assert mirror.index.delta_entries > 0


@pytest.mark.parametrize("seed", [0, 1])
def test_rebuilds_and_far_watermarks_keep_the_index_equal(seed: int) -> None:
    mirror = GraphMirror(BEHAVIOURS, EPSILON, RECENCY)
    mirror.index.rebuild_share = 0.0  # rebuilt whenever the delta passes 1,024 entries
    random_writes(mirror, random.Random(seed), steps=60, gap=30_000)  # past 64 half-lives
    assert mirror.index.rebuilds > 1


def test_replay_draws_in_proportion_to_the_views_weights() -> None:
    mirror = GraphMirror(BEHAVIOURS, EPSILON, RECENCY)
    rng = random.Random(5)
    events, users, items = [], [], []
    for k in range(3_000):
        u, i = rng.randrange(USERS), rng.randrange(3_000)
        events.append(Interaction(f"u{u}", f"i{i}", rng.choice(sorted(BEHAVIOURS)), 4 * k))
        users.append(u)
        items.append(i)
    mirror.apply(events, torch.tensor(users), torch.tensor(items))
    older_than = 11_000
    generator = torch.Generator().manual_seed(0)
    drawn = torch.cat(
        [mirror.sample_replay(500, generator, older_than)[0] for _ in range(400)]
    )  # 500 of ~3,000 edges a call: uniform slots, then acceptance
    n = mirror._used
    slots = torch.arange(n)
    weight, decayed = mirror.index.weights(slots)
    keep = mirror._alive[:n] & (decayed >= EPSILON) & (mirror._t_ref[:n] < older_than)
    weight = torch.where(keep, weight, 0.0)
    expected = torch.zeros(USERS, dtype=torch.float64).index_add(0, mirror._users[:n], weight)
    expected /= expected.sum()
    seen = torch.bincount(drawn, minlength=USERS).double() / drawn.numel()
    assert drawn.numel() == 200_000
    assert float(expected.max() / expected.min()) > 1.5  # a uniform draw would be far off
    torch.testing.assert_close(seen, expected, rtol=0.05, atol=0.002)
