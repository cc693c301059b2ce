"""LightGCN: the propagation rule against a dense reference, growth and resets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.base import GROW_CHUNK, BipartiteGraph
from models.lightgcn import LightGCNEncoder
from stream.errors import ConfigError


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
    with pytest.raises(ConfigError, match="num_layers"):
        LightGCNEncoder(num_relations=1, num_layers=-1)
