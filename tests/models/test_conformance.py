"""The encoder contract (models/base.py), checked on every encoder the resolver lists.

Each check runs on the CPU and, where a GPU exists, on CUDA (only the CUDA case is
skipped without one).
"""

from __future__ import annotations

import pytest
import torch

from models.base import GROW_CHUNK, BipartiteGraph, EdgeBatch, Encoder
from models.losses import bpr_loss
from models.resolver import ENCODERS, encoder_resolver
from tests.devices import DEVICES

NAMES = sorted(ENCODERS)
NUM_RELATIONS = 3
DIM = 8


def build(name: str, device: str, seed: int = 0) -> Encoder:
    torch.manual_seed(seed)
    return encoder_resolver(name, NUM_RELATIONS, dim=DIM).to(device)


def tiny_graph(device: str, num_users: int = 5, num_items: int = 6) -> BipartiteGraph:
    g = torch.Generator().manual_seed(1)
    n = 14
    return BipartiteGraph(
        num_users,
        num_items,
        torch.randint(0, num_users, (n,), generator=g),
        torch.randint(0, num_items, (n,), generator=g),
        torch.randint(0, NUM_RELATIONS, (n,), generator=g),
        torch.rand(n, generator=g) + 0.1,
        torch.arange(n) * 1_000,
        n * 1_000,
    ).to(device)


def as_batch(g: BipartiteGraph) -> EdgeBatch:
    return EdgeBatch(g.users, g.items, g.relations, g.weights, g.times)


def rows(g: BipartiteGraph) -> tuple[torch.Tensor, torch.Tensor]:
    device = g.users.device
    return torch.arange(g.num_users, device=device), torch.arange(g.num_items, device=device)


def assert_same(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.device.type == "cpu":
        assert torch.equal(a, b)
    else:  # GPU scatter-adds may sum in a different order
        assert torch.allclose(a, b, atol=1e-5)


def trained(name: str, device: str, seed: int = 0) -> tuple[Encoder, BipartiteGraph]:
    """An encoder after grow, observe and one optimiser step."""
    enc = build(name, device, seed)
    g = tiny_graph(device)
    enc.grow(g.num_users, g.num_items)
    enc.observe(as_batch(g))
    opt = torch.optim.Adam(enc.parameters(), lr=0.01)
    u, i = enc(g, g.users, torch.cat([g.items, g.items.flip(0)]))
    bpr_loss(u, i[: g.num_edges], i[g.num_edges :]).backward()
    opt.step()
    return enc, g


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_outputs_are_unit_vectors_of_the_right_shape(name: str, device: str) -> None:
    enc, g = trained(name, device)
    users, items = rows(g)
    u, i = enc.embed(g, users, items)
    assert u.shape == (g.num_users, DIM) and i.shape == (g.num_items, DIM)
    norms = torch.cat([u, i]).float().norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_state_round_trip_into_a_fresh_grown_instance(name: str, device: str) -> None:
    enc, g = trained(name, device)
    users, items = rows(g)
    expected = enc.embed(g, users, items)
    fresh = build(name, device, seed=99)
    fresh.grow(enc.num_users, enc.num_items)
    fresh.load_state_dict(enc.state_dict())
    for a, b in zip(expected, fresh.embed(g, users, items), strict=True):
        assert_same(a, b)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_embed_changes_no_state_and_keeps_the_mode(name: str, device: str) -> None:
    enc, g = trained(name, device)
    enc.train()
    before = {k: v.detach().clone() for k, v in enc.state_dict().items()}
    users, items = rows(g)
    first = enc.embed(g, users, items)
    second = enc.embed(g, users, items)
    assert enc.training
    after = enc.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
    for a, b in zip(first, second, strict=True):
        assert_same(a, b)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_unseen_rows_after_grow(name: str, device: str) -> None:
    enc, g = trained(name, device)
    users, items = rows(g)
    before = enc.embed(g, users, items)
    old = (enc.num_users, enc.num_items)
    enc.grow(GROW_CHUNK + 3, g.num_items)
    assert enc.num_users >= GROW_CHUNK + 3 and enc.num_users % GROW_CHUNK == 0
    assert (enc.num_users, enc.num_items) >= old
    for a, b in zip(before, enc.embed(g, users, items), strict=True):  # old rows intact
        assert torch.allclose(a, b, atol=1e-5)
    big = tiny_graph(device, num_users=GROW_CHUNK + 3)
    enc.observe(as_batch(big))
    u, _ = enc.embed(big, torch.tensor([GROW_CHUNK + 2], device=device), items)
    assert torch.isfinite(u).all()
    enc.grow(1, 1)  # never shrinks
    assert enc.num_users >= GROW_CHUNK + 3
    enc.reset_rows(torch.tensor([GROW_CHUNK + 2], device=device), items[:1])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_seeded_runs_are_identical(name: str, device: str) -> None:
    (a, g), (b, _) = trained(name, device), trained(name, device)
    users, items = rows(g)
    for x, y in zip(a.embed(g, users, items), b.embed(g, users, items), strict=True):
        assert_same(x, y)


@pytest.mark.parametrize("name", NAMES)
def test_id_rows_depend_on_the_seed_and_their_place_alone(name: str) -> None:
    def tables(enc: Encoder) -> list[torch.Tensor]:
        return [enc.get_parameter(f"{kind}_emb").detach().clone() for kind in ("user", "item")]

    at_once = encoder_resolver(name, NUM_RELATIONS, dim=DIM, seed=7)
    at_once.grow(GROW_CHUNK + 3, 6)
    in_steps = encoder_resolver(name, NUM_RELATIONS, dim=DIM, seed=7)
    in_steps.grow(5, 6)
    torch.manual_seed(99)  # the global generator's state plays no part
    torch.rand(10)
    in_steps.grow(GROW_CHUNK + 3, 6)
    for a, b in zip(tables(at_once), tables(in_steps), strict=True):
        assert torch.equal(a, b)
    initial = tables(at_once)
    with torch.no_grad():
        for table in at_once.parameters():
            table.add_(1.0)
    at_once.reset_rows(torch.tensor([1, GROW_CHUNK + 2]), torch.tensor([4]))
    users, items = tables(at_once)
    assert torch.equal(users[[1, GROW_CHUNK + 2]], initial[0][[1, GROW_CHUNK + 2]])
    assert torch.equal(items[4], initial[1][4]) and not torch.equal(users[0], initial[0][0])
    other = encoder_resolver(name, NUM_RELATIONS, dim=DIM, seed=8)
    other.grow(5, 6)
    assert not torch.equal(tables(other)[0], initial[0][:GROW_CHUNK])
