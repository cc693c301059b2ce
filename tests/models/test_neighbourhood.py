"""Sampled neighbourhoods: exact with no cap, bounded with one, row-sparse gradients."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import models.neighbourhood as neighbourhood
from models.base import BipartiteGraph
from models.lightgcn import LightGCNEncoder
from models.neighbourhood import GraphIndex, Neighbourhood, node_set, sample_neighbourhood


def random_graph(seed: int, users: int = 60, items: int = 50, edges: int = 400) -> BipartiteGraph:
    g = torch.Generator().manual_seed(seed)
    return BipartiteGraph(
        users,
        items,
        torch.randint(0, users, (edges,), generator=g),
        # a power-law-ish item side, so some nodes have many more edges than others
        (torch.rand(edges, generator=g) ** 3 * items).long(),
        torch.randint(0, 2, (edges,), generator=g),
        torch.rand(edges, generator=g) + 0.01,
        torch.zeros(edges, dtype=torch.long),
        0,
    )


def sample(*args: object, **kwargs: object) -> Neighbourhood:
    hood = sample_neighbourhood(*args, **kwargs)  # type: ignore[arg-type]
    assert hood is not None
    return hood


@pytest.mark.parametrize("size", [0, 1, 7, 300])
def test_node_set_is_the_sorted_distinct_nodes_by_either_way(size: int) -> None:
    g = torch.Generator().manual_seed(size)
    nodes = torch.randint(0, 50, (size,), generator=g)
    expected = sorted(set(nodes.tolist()))
    for num_nodes in (50, 16 * size + 1):  # a scan of the flags, a sort of the nodes
        assert node_set(nodes, num_nodes).tolist() == expected


@pytest.mark.parametrize("scan_per_candidate", [0, 10**9])
def test_a_sample_is_the_same_whichever_way_it_takes_its_node_sets(
    monkeypatch: pytest.MonkeyPatch, scan_per_candidate: int
) -> None:
    index = GraphIndex.build(random_graph(3), num_users=60)
    seeds = torch.tensor([0, 5, 5, 61, 90])
    reference = sample(index, seeds, hops=3, fanout=2, generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(neighbourhood, "_SCAN_PER_CANDIDATE", scan_per_candidate)
    hood = sample(index, seeds, hops=3, fanout=2, generator=torch.Generator().manual_seed(1))
    for name in ("nodes", "src", "dst", "weight", "relation", "degree"):
        assert torch.equal(getattr(hood, name), getattr(reference, name)), name
    assert hood.hop_ends == reference.hop_ends


def test_an_edge_limit_gives_up_past_it() -> None:
    graph = random_graph(7)
    index = GraphIndex.build(graph, graph.num_users, graph.num_items)
    seeds = torch.tensor([0, 1, 2])
    hood = sample(index, seeds, 2, 0)
    assert sample_neighbourhood(index, seeds, 2, 0, max_edges=hood.num_edges - 1) is None
    limited = sample(index, seeds, 2, 0, max_edges=hood.num_edges)
    assert torch.equal(limited.src, hood.src)


def encoder(graph: BipartiteGraph, layers: int) -> LightGCNEncoder:
    enc = LightGCNEncoder(num_relations=2, dim=8, num_layers=layers, seed=3)
    enc.grow(graph.num_users, graph.num_items)
    return enc


@pytest.mark.parametrize("layers", [0, 1, 2, 3])
def test_uncapped_neighbourhood_gives_the_full_graph_vectors(layers: int) -> None:
    graph = random_graph(layers)
    enc = encoder(graph, layers)
    index = GraphIndex.build(graph, enc.num_users, enc.num_items)
    users, items = torch.tensor([0, 5, 5, 17]), torch.tensor([0, 1, 33, 49])
    hood = sample(index, torch.cat([users, items + enc.num_users]), layers, 0)
    local_u, local_i = enc.forward_local(hood, users, items)
    full_u, full_i = enc(graph, users, items)
    torch.testing.assert_close(local_u, full_u)
    torch.testing.assert_close(local_i, full_i)


def test_a_cap_at_least_every_degree_is_no_cap() -> None:
    graph = random_graph(1)
    index = GraphIndex.build(graph, graph.num_users, graph.num_items)
    most = int((index.crow[1:] - index.crow[:-1]).max())
    seeds = torch.tensor([0, 3, graph.num_users + 2])
    exact = sample(index, seeds, 2, 0)
    capped = sample(index, seeds, 2, most)
    for name in ("nodes", "src", "dst", "weight"):
        assert torch.equal(getattr(exact, name), getattr(capped, name))


@pytest.mark.parametrize("fanout", [1, 2, 5])
def test_a_fanout_cap_bounds_the_neighbourhood(fanout: int) -> None:
    graph = random_graph(2, edges=2_000)
    index = GraphIndex.build(graph, graph.num_users, graph.num_items)
    seeds = torch.tensor([1, 2, graph.num_users + 0, graph.num_users + 1])
    hops = 2
    hood = sample(index, seeds, hops, fanout, torch.Generator().manual_seed(0))
    in_edges = torch.bincount(hood.dst, minlength=hood.nodes.numel())
    assert int(in_edges.max()) <= fanout
    bound = sum(seeds.numel() * fanout**h for h in range(hops + 1))
    assert hood.nodes.numel() <= bound
    assert hood.num_edges <= bound * fanout
    # the scaled weights estimate each node's full weighted degree without bias in
    # expectation; every sampled edge exists in the graph between its two ends
    ends = set(zip(graph.users.tolist(), (graph.items + graph.num_users).tolist(), strict=True))
    for s, d in zip(hood.nodes[hood.src].tolist(), hood.nodes[hood.dst].tolist(), strict=True):
        assert (s, d) in ends or (d, s) in ends


def test_degrees_are_the_full_graphs() -> None:
    graph = random_graph(4)
    index = GraphIndex.build(graph, graph.num_users, graph.num_items)
    hood = sample(index, torch.tensor([7]), 1, 1, torch.Generator().manual_seed(1))
    weights = torch.zeros(graph.num_users + graph.num_items)
    weights.index_add_(0, graph.users, graph.weights)
    weights.index_add_(0, graph.items + graph.num_users, graph.weights)
    torch.testing.assert_close(hood.degree, weights[hood.nodes])


def test_local_gradients_are_row_sparse_on_the_neighbourhood_rows() -> None:
    graph = random_graph(5)
    enc = encoder(graph, 2)
    index = GraphIndex.build(graph, enc.num_users, enc.num_items)
    users, items = torch.tensor([3]), torch.tensor([4])
    hood = sample(index, torch.cat([users, items + enc.num_users]), 2, 3)
    user_vec, item_vec = enc.forward_local(hood, users, items)
    (user_vec * item_vec).sum().backward()
    assert enc.user_emb.grad is not None and enc.user_emb.grad.is_sparse
    hood_users, hood_items = hood.rows()
    assert set(enc.user_emb.grad.coalesce().indices()[0].tolist()) == set(hood_users.tolist())
    assert enc.item_emb.grad is not None
    assert set(enc.item_emb.grad.coalesce().indices()[0].tolist()) == set(hood_items.tolist())


def test_within_is_breadth_first_distance() -> None:
    graph = random_graph(6)
    index = GraphIndex.build(graph, graph.num_users, graph.num_items)
    adjacency: dict[int, set[int]] = {}
    for u, i in zip(graph.users.tolist(), (graph.items + graph.num_users).tolist(), strict=True):
        adjacency.setdefault(u, set()).add(i)
        adjacency.setdefault(i, set()).add(u)
    reached, frontier = {9}, {9}
    for _ in range(2):
        frontier = {n for f in frontier for n in adjacency.get(f, ())} - reached
        reached |= frontier
    assert index.within(torch.tensor([9]), 2).tolist() == sorted(reached)


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_later_layers_reading_only_the_first_hops_change_no_seed_value_or_gradient(
    layers: int,
) -> None:
    """A layer l reads only the first L - l hops' edges: the seeds' vectors and every
    row's gradient equal a propagation of every layer over every edge."""
    graph = random_graph(11 + layers)
    index = GraphIndex.build(graph, graph.num_users, graph.num_items)
    users, items = torch.tensor([2, 9]), torch.tensor([1, 30])
    hood = sample(index, torch.cat([users, items + graph.num_users]), layers, 3)
    assert len(hood.hop_ends) == layers
    assert layers == 1 or hood.within_hops(1) < hood.num_edges  # a prefix is left out
    results = []
    for tree in (hood, dataclasses.replace(hood, hop_ends=())):  # (): every edge, each layer
        enc = encoder(graph, layers)
        user_vec, item_vec = enc.forward_local(tree, users, items)
        (user_vec @ item_vec.T).sum().backward()
        assert enc.user_emb.grad is not None and enc.item_emb.grad is not None
        grads = [enc.user_emb.grad.to_dense(), enc.item_emb.grad.to_dense()]
        results.append([user_vec.detach(), item_vec.detach(), *grads])
    for prefix, every in zip(*results, strict=True):
        torch.testing.assert_close(prefix, every, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_uncapped_local_gradients_are_the_full_graphs(layers: int) -> None:
    graph = random_graph(20 + layers)
    users, items = torch.tensor([1, 4, 4]), torch.tensor([2, 7, 40])
    grads = []
    for local in (True, False):
        enc = encoder(graph, layers)
        if local:
            index = GraphIndex.build(graph, enc.num_users, enc.num_items)
            hood = sample(index, torch.cat([users, items + enc.num_users]), layers, 0)
            user_vec, item_vec = enc.forward_local(hood, users, items)
        else:
            user_vec, item_vec = enc(graph, users, items)
        (user_vec @ item_vec.T).sum().backward()
        assert enc.user_emb.grad is not None and enc.item_emb.grad is not None
        grads.append([enc.user_emb.grad.to_dense(), enc.item_emb.grad.to_dense()])
    for local_grad, full_grad in zip(*grads, strict=True):
        torch.testing.assert_close(local_grad, full_grad, rtol=1e-5, atol=1e-6)


def test_seeds_without_edges_keep_their_own_vector() -> None:
    graph = random_graph(4)
    enc = encoder(graph, 2)
    enc.grow(graph.num_users + 5, graph.num_items)
    index = GraphIndex.build(graph, enc.num_users, enc.num_items)
    lonely = torch.tensor([graph.num_users + 1])  # a row with no edge
    hood = sample(index, lonely, 2, 3)
    assert hood.num_edges == 0
    user_vec, _ = enc.forward_local(hood, lonely, torch.zeros(0, dtype=torch.long))
    expected = torch.nn.functional.normalize(enc.user_emb[lonely] / 3, dim=-1)
    torch.testing.assert_close(user_vec, expected)
