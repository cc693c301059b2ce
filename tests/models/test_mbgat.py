"""Multi-behaviour GAT: the encoder contract, and every behaviour actually used."""

from __future__ import annotations

import pytest
import torch

from models.base import GROW_CHUNK, BipartiteGraph, Encoder
from models.errors import ModelConfigError
from models.mbgat import MultiBehaviourGATEncoder
from models.resolver import encoder_resolver

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
USERS, ITEMS = torch.arange(10), torch.arange(8)


def random_graph(edges: int = 48, seed: int = 0, relations: int = 2) -> BipartiteGraph:
    """Edges of relations ``0..relations-1`` only (the encoder is built with 3)."""
    gen = torch.Generator().manual_seed(seed)
    return BipartiteGraph(
        10,
        8,
        torch.randint(0, 10, (edges,), generator=gen),
        torch.randint(0, 8, (edges,), generator=gen),
        torch.randint(0, relations, (edges,), generator=gen),
        torch.rand(edges, generator=gen) + 0.05,
        torch.zeros(edges, dtype=torch.long),
        0,
    )


def with_relations(graph: BipartiteGraph, relations: torch.Tensor) -> BipartiteGraph:
    return BipartiteGraph(
        graph.num_users,
        graph.num_items,
        graph.users,
        graph.items,
        relations,
        graph.weights,
        graph.times,
        graph.now,
    )


def build(seed: int = 0, **kwargs: object) -> Encoder:
    torch.manual_seed(seed)
    encoder = encoder_resolver("mbgat", 3, dim=8, **kwargs)
    encoder.grow(10, 8)
    return encoder


def test_resolver_and_validation() -> None:
    assert type(encoder_resolver("mbgat", 3, dim=16)) is MultiBehaviourGATEncoder
    with pytest.raises(ModelConfigError, match="num_layers must be > 0, got 0"):
        encoder_resolver("mbgat", 3, num_layers=0)
    with pytest.raises(ValueError, match=r"relation 3 is outside 0\.\.2"):
        build()(random_graph(relations=4, seed=1), USERS, ITEMS)


def test_a_behaviour_without_edges_breaks_nothing() -> None:
    encoder = build()
    users, items = encoder(random_graph(relations=2), USERS, ITEMS)  # relation 2 has no edge
    assert torch.allclose(torch.cat([users, items]).norm(dim=-1), torch.ones(18), atol=1e-5)
    (users.sum() + items.sum()).backward()
    grads = [p.grad for p in encoder.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    lone_u, lone_i = encoder.embed(random_graph(edges=0), USERS, ITEMS)
    assert torch.isfinite(lone_u).all() and torch.isfinite(lone_i).all()


def test_changing_one_behaviour_changes_only_nodes_that_see_it() -> None:
    encoder, graph = build(num_layers=1), random_graph(relations=2)
    before_u, before_i = encoder.embed(graph, USERS, ITEMS)
    relabelled = graph.relations.clone()
    moved = (relabelled == 1).nonzero().flatten()[:3]  # three relation-1 edges become relation 2
    relabelled[moved] = 2
    after_u, after_i = encoder.embed(with_relations(graph, relabelled), USERS, ITEMS)
    touched_users = set(graph.users[moved].tolist())
    touched_items = set(graph.items[moved].tolist())
    for row in range(10):
        changed = not torch.allclose(after_u[row], before_u[row], atol=1e-6)
        assert changed == (row in touched_users)
    for row in range(8):
        changed = not torch.allclose(after_i[row], before_i[row], atol=1e-6)
        assert changed == (row in touched_items)


def test_decayed_weights_are_used() -> None:
    encoder, graph = build(), random_graph()
    weights = graph.weights.clone()
    weights[0] *= 50
    heavier = BipartiteGraph(
        10, 8, graph.users, graph.items, graph.relations, weights, graph.times, graph.now
    )
    user = int(graph.users[0])
    assert not torch.allclose(
        encoder.embed(graph, USERS, ITEMS)[0][user], encoder.embed(heavier, USERS, ITEMS)[0][user]
    )


def test_embed_moves_nothing_round_trip_and_seeded_runs() -> None:
    graph = random_graph()
    encoder = build(seed=1)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    first = encoder.embed(graph, USERS, ITEMS)
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    fresh = build(seed=2)
    fresh.load_state_dict(encoder.state_dict())
    for a, b in zip(fresh.embed(graph, USERS, ITEMS), first, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(build(seed=1).embed(graph, USERS, ITEMS), first, strict=True):
        assert torch.equal(a, b)
    alone, _ = encoder.embed(graph, torch.tensor([4]), torch.arange(0))
    assert torch.allclose(alone[0], first[0][4], atol=1e-6)


def test_grow_and_reset_rows() -> None:
    encoder, graph = build(), random_graph()
    users, items = encoder.embed(graph, USERS, ITEMS)
    encoder.grow(3, GROW_CHUNK + 5)
    assert (encoder.num_users, encoder.num_items) == (GROW_CHUNK, 2 * GROW_CHUNK)
    grown_u, grown_i = encoder.embed(graph, USERS, ITEMS)
    assert torch.allclose(grown_u, users, atol=1e-6) and torch.allclose(grown_i, items, atol=1e-6)
    initial = encoder.item_emb.detach().clone()
    with torch.no_grad():
        encoder.item_emb.add_(1.0)  # as if trained
    encoder.reset_rows(torch.tensor([], dtype=torch.long), torch.tensor([GROW_CHUNK + 2]))
    back = (encoder.item_emb.detach() == initial).all(dim=-1)  # only that row, to its start
    assert back.nonzero().flatten().tolist() == [GROW_CHUNK + 2]
    with pytest.raises(ValueError, match=f"item row {2 * GROW_CHUNK}"):
        encoder.reset_rows(torch.tensor([], dtype=torch.long), torch.tensor([2 * GROW_CHUNK]))


@pytest.mark.parametrize("device", DEVICES)
def test_runs_on_every_device_with_the_same_vectors(device: str) -> None:
    encoder, graph = build(), random_graph()
    expected = encoder.embed(graph, USERS, ITEMS)
    encoder.to(device)
    got = encoder.embed(graph.to(device), USERS.to(device), ITEMS.to(device))
    for a, b in zip(got, expected, strict=True):
        assert a.device.type == device and torch.allclose(a.cpu(), b, atol=1e-5)
