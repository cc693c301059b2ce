"""LightGCN: the propagation rule against dense and PyG references, growth and resets."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn import LGConv
from torch_geometric.nn.conv.gcn_conv import gcn_norm

from models.base import GROW_CHUNK, BipartiteGraph
from models.errors import ModelConfigError
from models.lightgcn import LightGCNEncoder, NormalisedAdjacency
from models.neighbourhood import GraphIndex, sample_neighbourhood
from tests.devices import DEVICES


def make_graph(
    relations: list[int] | None = None, weights: list[float] | None = None
) -> BipartiteGraph:
    users = [0, 0, 1, 2, 2, 3]
    items = [0, 1, 1, 2, 3, 3]
    n = len(users)
    return BipartiteGraph(
        5,
        5,
        torch.tensor(users),
        torch.tensor(items),
        torch.tensor(relations or [0] * n),
        torch.tensor(weights or [1.0, 0.5, 2.0, 1.0, 3.0, 0.25]),
        torch.zeros(n, dtype=torch.long),
        0,
    )


def dense_reference(enc: LightGCNEncoder, g: BipartiteGraph) -> torch.Tensor:
    """z = normalize(mean_k (D^-1/2 A D^-1/2)^k e0) over users then items, computed densely."""
    nu, ni = enc.num_users, enc.num_items
    a = torch.zeros(nu + ni, nu + ni)
    for u, i, w in zip(g.users.tolist(), g.items.tolist(), g.weights.tolist(), strict=True):
        a[u, nu + i] += w
        a[nu + i, u] += w
    deg = a.sum(1)
    inv = torch.where(deg > 0, deg.pow(-0.5), torch.zeros_like(deg))
    norm = inv[:, None] * a * inv[None, :]
    x = torch.cat([enc.user_emb, enc.item_emb]).detach()
    total, layer = x.clone(), x
    for _ in range(enc.num_layers):
        layer = norm @ layer
        total = total + layer
    return F.normalize(total / (enc.num_layers + 1), dim=-1)


def pyg_reference(enc: LightGCNEncoder, g: BipartiteGraph) -> tuple[torch.Tensor, torch.Tensor]:
    """The gather-scatter forward this encoder used before (gcn_norm + LGConv), all rows."""
    n_users = enc.num_users
    x = torch.cat([enc.user_emb, enc.item_emb])
    out = x
    if enc.num_layers and g.num_edges:
        weight = g.weights.to(x.dtype)
        if enc.relation_log_scale is not None:
            weight = weight * enc.relation_log_scale.exp()[g.relations]
        src, dst = g.users, g.items + n_users
        edge_index = torch.stack([torch.cat([src, dst]), torch.cat([dst, src])])
        edge_index, norm = gcn_norm(
            edge_index, torch.cat([weight, weight]), x.shape[0], add_self_loops=False
        )
        conv, total = LGConv(normalize=False), x
        for _ in range(enc.num_layers):
            x = conv(x, edge_index, norm)
            total = total + x
        out = total / (enc.num_layers + 1)
    out = F.normalize(out, dim=-1)
    return out[:n_users], out[n_users:]


def random_graph(num_edges: int, num_relations: int, device: str) -> BipartiteGraph:
    """Users 0..6 and items 0..4 of a grown table (the other rows isolated), with parallel
    edges of several relations and repeated (user, item, relation) triples."""
    gen = torch.Generator().manual_seed(num_edges)
    users = torch.randint(0, 7, (num_edges,), generator=gen)
    items = torch.randint(0, 5, (num_edges,), generator=gen)
    relations = torch.randint(0, num_relations, (num_edges,), generator=gen)
    users, items, relations = (torch.cat([t, t[:3]]) for t in (users, items, relations))
    n = users.numel()
    weights = torch.rand(n, generator=gen) * 2 + 0.05
    return BipartiteGraph(
        9, 6, users, items, relations, weights, torch.zeros(n, dtype=torch.long), 0
    ).to(device)


def empty_graph(device: str) -> BipartiteGraph:
    none = torch.zeros(0, dtype=torch.long)
    return BipartiteGraph(9, 6, none, none, none, torch.zeros(0), none, 0).to(device)


def gradients(
    enc: LightGCNEncoder, outputs: tuple[torch.Tensor, torch.Tensor]
) -> list[torch.Tensor]:
    """Gradients of a fixed random projection of the outputs, for every parameter (0: unused)."""
    out = torch.cat(outputs)
    probe = torch.randn(out.shape, generator=torch.Generator().manual_seed(7)).to(out.device)
    params = list(enc.parameters())
    loss = (out * probe).sum()
    return list(torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("relation_scale", [False, True])
@pytest.mark.parametrize("graph", ["parallel relations", "single relation", "no edges"])
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_sparse_product_matches_the_pyg_path(
    graph: str, relation_scale: bool, layers: int, device: str
) -> None:
    enc = LightGCNEncoder(num_relations=3, dim=8, num_layers=layers, relation_scale=relation_scale)
    enc.grow(9, 6)
    enc.to(device)
    if enc.relation_log_scale is not None:
        with torch.no_grad():
            enc.relation_log_scale.copy_(torch.tensor([0.3, -0.7, 1.1]))
    g = {
        "parallel relations": lambda: random_graph(40, 3, device),
        "single relation": lambda: random_graph(25, 1, device),
        "no edges": lambda: empty_graph(device),
    }[graph]()
    users = torch.arange(enc.num_users, device=device)
    items = torch.arange(enc.num_items, device=device)
    new, old = enc(g, users, items), pyg_reference(enc, g)
    for a, b in zip(new, old, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    for a, b in zip(gradients(enc, new), gradients(enc, old), strict=True):
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    isolated = enc.num_users - 7  # rows 7.. never appear: they keep their own direction
    assert torch.allclose(new[0][-isolated:], F.normalize(enc.user_emb[-isolated:], dim=-1))
    for a, b in zip(enc.embed(g, users, items), old, strict=True):  # the no-grad path too
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layers", [1, 2])
def test_propagation_under_bf16_autocast_is_the_float32_one(layers: int, device: str) -> None:
    """The trainer's mixed precision wraps the encoder in autocast: the sparse products run
    in the adjacency's float32 (cuSPARSE refuses a float32 matrix times a bf16 gradient, the
    CPU has no bf16 CSR product), so outputs and gradients equal the plain ones."""
    enc = LightGCNEncoder(num_relations=3, dim=8, num_layers=layers)
    enc.grow(9, 6)
    enc.to(device)
    g = random_graph(40, 3, device)
    users = torch.arange(enc.num_users, device=device)
    items = torch.arange(enc.num_items, device=device)
    plain = enc(g, users, items)
    with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16):
        mixed = enc(g, users, items)
    for a, b in zip(mixed, plain, strict=True):
        assert a.dtype == torch.float32
        assert torch.allclose(a, b, atol=1e-5)
    for a, b in zip(gradients(enc, mixed), gradients(enc, plain), strict=True):
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


def test_zero_weight_edges_give_finite_gradients() -> None:
    """A node whose only edges decayed to 0 has degree 0: no NaN may reach the scales."""
    enc = LightGCNEncoder(num_relations=2, dim=4, relation_scale=True)
    enc.grow(3, 3)
    g = make_graph(relations=[0, 1, 0, 1, 0, 1], weights=[1.0, 0.0, 0.0, 0.0, 2.0, 0.5])
    grads = gradients(enc, enc(g, torch.arange(3), torch.arange(3)))
    assert all(bool(torch.isfinite(grad).all()) for grad in grads)


def test_state_dict_keys_are_unchanged() -> None:
    """Checkpoints hold encoder.state_dict(): the propagation rewrite keeps its keys."""
    plain = LightGCNEncoder(num_relations=2, num_layers=3)
    scaled = LightGCNEncoder(num_relations=2, relation_scale=True)
    assert set(plain.state_dict()) == {"seed", "user_emb", "item_emb"}
    assert set(scaled.state_dict()) == {"seed", "user_emb", "item_emb", "relation_log_scale"}


@pytest.mark.parametrize("layers", [0, 1, 3])
def test_propagation_matches_the_dense_update_rule(layers: int) -> None:
    enc = LightGCNEncoder(num_relations=2, dim=8, num_layers=layers)
    enc.grow(5, 5)
    g = make_graph()
    users, items = torch.arange(5), torch.arange(5)
    u, i = enc.embed(g, users, items)
    ref = dense_reference(enc, g)
    assert torch.allclose(u, ref[:5], atol=1e-5)
    assert torch.allclose(i, ref[enc.num_users : enc.num_users + 5], atol=1e-5)
    assert torch.allclose(torch.cat([u, i]).norm(dim=1), torch.ones(10))


def test_parallel_relations_add_up_per_pair() -> None:
    enc = LightGCNEncoder(num_relations=2, dim=8)
    enc.grow(5, 5)
    single = make_graph()
    split = BipartiteGraph(
        5,
        5,
        torch.cat([single.users, single.users[:1]]),
        torch.cat([single.items, single.items[:1]]),
        torch.cat([single.relations, torch.tensor([1])]),
        torch.cat([single.weights - torch.tensor([0.4, 0, 0, 0, 0, 0]), torch.tensor([0.4])]),
        torch.zeros(7, dtype=torch.long),
        0,
    )
    rows = torch.arange(5)
    for a, b in zip(enc.embed(single, rows, rows), enc.embed(split, rows, rows), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_relation_scale_is_learnt() -> None:
    enc = LightGCNEncoder(num_relations=2, dim=8, relation_scale=True)
    enc.grow(5, 5)
    g = make_graph(relations=[0, 1, 0, 1, 0, 1])
    u, i = enc(g, torch.arange(5), torch.arange(5))
    (u @ i.T).sum().backward()
    assert enc.relation_log_scale is not None and enc.relation_log_scale.grad is not None
    assert bool((enc.relation_log_scale.grad != 0).any())
    assert enc.user_emb.grad is not None


def test_rows_depend_only_on_seed_and_place() -> None:
    enc = LightGCNEncoder(num_relations=1, dim=4, seed=3)
    enc.grow(10, 10)
    first = enc.user_emb.detach().clone()
    with torch.no_grad():
        enc.user_emb.add_(1.0)  # "training"
    enc.grow(GROW_CHUNK + 1, 10)
    assert enc.num_users == 2 * GROW_CHUNK and enc.num_items == GROW_CHUNK
    assert torch.equal(enc.user_emb[:GROW_CHUNK].detach(), first + 1.0)  # grow keeps rows
    fresh = LightGCNEncoder(num_relations=1, dim=4, seed=3)
    fresh.grow(2 * GROW_CHUNK, 10)
    assert torch.equal(enc.user_emb[GROW_CHUNK:], fresh.user_emb[GROW_CHUNK:])
    enc.reset_rows(torch.tensor([2, 5]), torch.tensor([], dtype=torch.long))
    assert torch.equal(enc.user_emb[[2, 5]], fresh.user_emb[[2, 5]])
    assert torch.equal(enc.user_emb[3].detach(), first[3] + 1.0)  # others untouched
    enc.reset_parameters()
    assert torch.equal(enc.state_dict()["user_emb"], fresh.state_dict()["user_emb"])
    other_seed = LightGCNEncoder(num_relations=1, dim=4, seed=4)
    other_seed.grow(10, 10)
    assert not torch.equal(other_seed.user_emb, first)


def test_graph_larger_than_the_tables_is_refused() -> None:
    enc = LightGCNEncoder(num_relations=1, dim=4)
    with pytest.raises(ValueError, match="grow"):
        enc(make_graph(), torch.tensor([0]), torch.tensor([0]))
    with pytest.raises(ModelConfigError, match="num_layers"):
        LightGCNEncoder(num_relations=1, num_layers=-1)


def every_node_then_rows(
    enc: LightGCNEncoder, g: BipartiteGraph, users: torch.Tensor, items: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward as it was: mean and normalisation over every node, then the rows."""
    x = torch.cat([enc.user_emb, enc.item_emb])
    adjacency = NormalisedAdjacency.build(g, enc.num_users, enc.num_items, None, x.dtype)
    total = x
    for _ in range(enc.num_layers):
        x = adjacency @ x
        total = total + x
    out = F.normalize(total / (enc.num_layers + 1), dim=-1)
    return out[users], out[items + enc.num_users]


@pytest.fixture
def one_thread() -> Iterator[None]:
    """CPU kernels that accumulate into rows (the gather's backward) split rows over threads
    in an order that varies run to run: bit-for-bit comparisons of two runs need one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("scored", [150, 64 * 33])  # fewer rows than nodes; more: every node
def test_rows_only_forward_gives_the_same_floats_and_gradients(
    scored: int, one_thread: None
) -> None:
    """Normalising only the asked rows changes no value and no gradient bit, repeated rows
    (negatives drawn twice) included."""
    gen = torch.Generator().manual_seed(5)
    enc = LightGCNEncoder(num_relations=1, dim=16, num_layers=2)
    enc.grow(300, 200)
    n = 3_000
    g = BipartiteGraph(
        300,
        200,
        torch.randint(0, 300, (n,), generator=gen),
        torch.randint(0, 200, (n,), generator=gen),
        torch.zeros(n, dtype=torch.long),
        torch.rand(n, generator=gen),
        torch.zeros(n, dtype=torch.long),
        0,
    )
    users = torch.randint(0, 300, (64,), generator=gen)
    items = torch.randint(0, 200, (scored,), generator=gen)  # repeats
    weights = torch.randn(64 + scored, 16, generator=gen)
    grads = []
    for forward in (enc, lambda *a: every_node_then_rows(enc, *a)):
        enc.zero_grad(set_to_none=True)
        u, i = forward(g, users, items)
        (torch.cat([u, i]) * weights).sum().backward()
        grads.append((u.detach(), i.detach(), enc.user_emb.grad, enc.item_emb.grad))
    for new, old in zip(*grads, strict=True):
        assert old is not None and new is not None and torch.equal(new, old)
    every = torch.arange(300), torch.arange(200)
    for new, old in zip(enc.embed(g, *every), every_node_then_rows(enc, g, *every), strict=True):
        assert torch.equal(new, old)


@pytest.mark.parametrize("device", DEVICES)
def test_the_adjacency_of_a_canonical_graph_equals_that_of_any_order(device: str) -> None:
    # A snapshot's canonical order (by user, item, relation) takes the one-sort path, any
    # other order the two-sort one: the same entries (values up to the order in which
    # parallel edges add up, which follows the order given), and the dense matrix's.
    g = random_graph(40, 3, device)
    order = torch.argsort((g.users * g.num_items + g.items) * 3 + g.relations, stable=True)
    canonical = BipartiteGraph(
        g.num_users,
        g.num_items,
        g.users[order],
        g.items[order],
        g.relations[order],
        g.weights[order],
        g.times[order],
        0,
    )
    shuffled = torch.randperm(order.numel(), generator=torch.Generator().manual_seed(3))
    as_given = BipartiteGraph(
        g.num_users,
        g.num_items,
        *(t[shuffled.to(t.device)] for t in (g.users, g.items, g.relations, g.weights, g.times)),
        0,
    )
    built = [
        NormalisedAdjacency.build(graph, g.num_users, g.num_items, None, torch.float64).blocks[0]
        for graph in (canonical, as_given)
    ]
    for part in ("crow_indices", "col_indices"):
        assert torch.equal(getattr(built[0], part)(), getattr(built[1], part)())
    assert torch.allclose(built[0].values(), built[1].values(), rtol=1e-12, atol=0)
    n = g.num_users + g.num_items
    dense = torch.zeros(n, n, dtype=torch.float64)
    for u, i, w in zip(g.users.tolist(), g.items.tolist(), g.weights.tolist(), strict=True):
        dense[u, g.num_users + i] += w
        dense[g.num_users + i, u] += w
    inv = dense.sum(1).pow(-0.5).nan_to_num(posinf=0.0)
    assert torch.allclose(built[0].to_dense().cpu(), inv[:, None] * dense * inv[None, :])


@pytest.mark.parametrize("layers", [0, 2])
def test_negative_vectors_are_the_last_embeddings_moving_only_their_own_rows(
    layers: int,
) -> None:
    """A local step's negatives: right after an embedding (of every row, or of some rows
    on their exact neighbourhood) the same values as the forward's; the gradient reaches
    the negatives' own item rows only; a grown or reset row holds its own row alone."""
    enc = LightGCNEncoder(num_relations=1, dim=8, num_layers=layers)
    enc.grow(5, 5)
    g = make_graph()
    items = torch.tensor([0, 3, 3, 1])
    assert not enc.keeps_neighbour_means  # a full step never asks: nothing kept
    enc.negative_vectors(items)  # from now on embeddings keep the items' layers 1..L
    assert enc.keeps_neighbour_means
    _, embedded = enc.embed(g, torch.arange(5), torch.arange(5))
    torch.testing.assert_close(enc.negative_vectors(items), embedded[items])
    # an embedding of two items alone on their exact (no fan-out cap) neighbourhood
    with torch.no_grad():
        enc.item_emb.mul_(2.0)  # parameters moved since: only what is re-embedded follows
    index = GraphIndex.build(g, enc.num_users, enc.num_items)
    seeds = torch.tensor([enc.num_users + 1, enc.num_users + 2])
    hood = sample_neighbourhood(index, seeds, layers, 0)
    assert hood is not None
    with torch.no_grad():
        _, local = enc.forward_local(hood, torch.zeros(0, dtype=torch.long), seeds - enc.num_users)
    _, full = enc.embed(g, torch.arange(5), torch.arange(5))
    torch.testing.assert_close(enc.negative_vectors(torch.tensor([1, 2])), local)
    torch.testing.assert_close(local, full[1:3])
    enc.zero_grad()
    enc.negative_vectors(items).sum().backward()
    assert enc.user_emb.grad is None
    grad = enc.item_emb.grad
    assert grad is not None and grad.is_sparse
    assert set(grad.coalesce().indices()[0].tolist()) == {0, 1, 3}
    enc.reset_rows(torch.zeros(0, dtype=torch.long), torch.tensor([3]))
    enc.grow(5, GROW_CHUNK + 1)  # fresh rows: nothing embedded yet
    for row in (3, GROW_CHUNK):
        alone = F.normalize(enc.item_emb[row : row + 1].detach(), dim=-1)
        torch.testing.assert_close(enc.negative_vectors(torch.tensor([row])).detach(), alone)


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_historical_vectors_from_one_hop_are_the_full_forwards_while_the_history_is_current(
    layers: int,
) -> None:
    """Right after an embedding of every row, a one-hop neighbourhood (every edge) and the
    kept layers give the seeds the full forward's vectors, repeated seeds included; the
    gradient reaches the seeds' and their neighbours' rows only; an embedding of some rows
    keeps their layers in turn (a second full embedding agrees), and a reset row keeps
    none."""
    enc = LightGCNEncoder(num_relations=1, dim=8, num_layers=layers)
    enc.grow(5, 5)
    g = make_graph()
    index = GraphIndex.build(g, enc.num_users, enc.num_items)
    users, items = torch.tensor([0, 2, 0]), torch.tensor([3, 1])
    seeds = torch.cat([users, items + enc.num_users])
    hood = sample_neighbourhood(index, seeds, 1, 0)
    assert hood is not None
    enc.keep_layer_history()
    assert not enc.has_layer_history  # asked for, nothing embedded yet
    full_users, full_items = enc.embed(g, torch.arange(5), torch.arange(5))
    assert enc.has_layer_history
    user_vec, item_vec = enc.forward_historical(hood, users, items)
    torch.testing.assert_close(user_vec, full_users[users])
    torch.testing.assert_close(item_vec, full_items[items])
    enc.zero_grad()
    (user_vec.sum() + item_vec.sum()).backward()
    reached = {  # the seeds and their one-hop neighbours, in node space
        *seeds.tolist(),
        *hood.nodes[hood.src].tolist(),
    }
    for table, offset in ((enc.user_emb, 0), (enc.item_emb, enc.num_users)):
        assert table.grad is not None and table.grad.is_sparse
        rows = set(table.grad.coalesce().indices()[0].tolist())
        assert {r + offset for r in rows} <= reached
    # parameters move; an embedding of user 2 alone keeps its layers from its neighbours'
    with torch.no_grad():
        enc.user_emb.mul_(2.0)
        one = torch.tensor([2])
        alone = sample_neighbourhood(index, one, 1, 0)
        assert alone is not None
        enc.forward_historical(alone, one, torch.zeros(0, dtype=torch.long))
    kept = enc.user_history[2].clone()
    enc.embed(g, torch.arange(5), torch.arange(5))  # every row's layers, exactly
    if layers == 1:
        assert kept.numel() == 0
    else:  # layer 1 is exact from the neighbours' rows now; deeper ones from older layers
        torch.testing.assert_close(kept[:8], enc.user_history[2, :8])
    enc.reset_rows(torch.tensor([2]), torch.zeros(0, dtype=torch.long))
    assert not enc.user_history[2].any()
    enc.grow(GROW_CHUNK + 1, 5)
    assert enc.user_history.shape[0] == enc.num_users and not enc.user_history[5:].any()
