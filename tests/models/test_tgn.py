"""TGN-style encoder: the encoder contract, memory updates in observe only, GRU gradients."""

from __future__ import annotations

import pytest
import torch

from models.base import GROW_CHUNK, BipartiteGraph, EdgeBatch, Encoder
from models.errors import ModelConfigError
from models.resolver import encoder_resolver
from models.tgn import TGNEncoder

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
USERS, ITEMS = torch.arange(10), torch.arange(8)


def random_graph(edges: int = 40, seed: int = 0, users: int = 10) -> BipartiteGraph:
    gen = torch.Generator().manual_seed(seed)
    return BipartiteGraph(
        users,
        8,
        torch.randint(0, users, (edges,), generator=gen),
        torch.randint(0, 8, (edges,), generator=gen),
        torch.randint(0, 3, (edges,), generator=gen),
        torch.rand(edges, generator=gen) + 0.05,
        torch.randint(0, 3_600_000, (edges,), generator=gen),
        3_600_000,
    )


def batch(users: list[int], items: list[int], times: list[int], relation: int = 1) -> EdgeBatch:
    count = len(users)
    return EdgeBatch(
        torch.tensor(users, dtype=torch.long),
        torch.tensor(items, dtype=torch.long),
        torch.full((count,), relation),
        torch.ones(count),
        torch.tensor(times, dtype=torch.long),
    )


def build(seed: int = 0, **kwargs: object) -> TGNEncoder:
    torch.manual_seed(seed)
    encoder = encoder_resolver("tgn", 3, dim=8, time_dim=4, relation_dim=4, **kwargs)
    assert isinstance(encoder, TGNEncoder)
    encoder.grow(10, 8)
    return encoder


def snapshot(encoder: Encoder) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in encoder.state_dict().items()}


def same_state(encoder: Encoder, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(before[key], value) for key, value in encoder.state_dict().items())


def test_resolver_and_validation() -> None:
    assert type(encoder_resolver("tgn", 3, dim=16)) is TGNEncoder
    with pytest.raises(ModelConfigError, match="heads must be > 0, got 0"):
        encoder_resolver("tgn", 3, heads=0)
    encoder = build()
    with pytest.raises(ValueError, match=f"batch item row {GROW_CHUNK}"):
        encoder.observe(batch([0], [GROW_CHUNK], [5]))
    with pytest.raises(ValueError, match="relation 7"):
        encoder.observe(batch([0], [1], [5], relation=7))
    with pytest.raises(ValueError, match="user row -2"):
        encoder(random_graph(), torch.tensor([-2]), ITEMS)


def test_unit_vectors_and_memory_is_in_the_state_dict() -> None:
    encoder = build()
    users, items = encoder(random_graph(), USERS, ITEMS)
    assert torch.allclose(torch.cat([users, items]).norm(dim=-1), torch.ones(18), atol=1e-5)
    keys = set(encoder.state_dict())
    assert {"user_state.memory", "item_state.last_update", "user_state.pending_partner"} <= keys
    alone, _ = encoder.embed(random_graph(edges=0), USERS, torch.arange(0))
    assert torch.isfinite(alone).all()


def test_observe_moves_memory_of_touched_rows_and_embed_moves_nothing() -> None:
    encoder, graph = build(), random_graph()
    encoder.observe(batch([1, 2], [3, 3], [1_000, 2_000]))
    assert (encoder.user_state.memory == 0).all()  # pending only: applied at the next observe
    before = snapshot(encoder)
    first = encoder.embed(graph, USERS, ITEMS)
    encoder(graph, USERS, ITEMS)
    assert same_state(encoder, before)
    encoder.observe(batch([], [], []))  # commits the pending messages only
    touched = (encoder.user_state.memory != 0).any(dim=-1).nonzero().flatten().tolist()
    assert touched == [1, 2]
    assert encoder.user_state.last_update[[1, 2]].tolist() == [1_000, 2_000]
    assert encoder.item_state.last_update[3] == 2_000  # the later of item 3's two events
    assert (encoder.item_state.memory[[0, 1, 2, 4]] == 0).all()
    # embed already saw the memory after the pending messages: committing moves no vector.
    committed = encoder.embed(graph, USERS, ITEMS)
    for a, b in zip(committed, first, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_latest_event_per_node_is_the_pending_message() -> None:
    encoder = build()
    encoder.observe(batch([0, 0, 0], [1, 2, 3], [500, 900, 700]))
    assert encoder.user_state.pending_partner[0] == 2
    assert encoder.user_state.pending_time[0] == 900


def test_gradients_reach_the_gru_through_pending_messages() -> None:
    encoder, graph = build(), random_graph()
    users, items = encoder(graph, USERS, ITEMS)
    (users.sum() + items.sum()).backward()
    assert encoder.gru.weight_ih.grad is None  # no pending message, no GRU in the graph
    encoder.zero_grad()
    encoder.observe(batch([0, 1], [2, 3], [100, 200]))
    users, items = encoder(graph, USERS, ITEMS)
    (users.sum() + items.sum()).backward()
    grads = [encoder.gru.weight_ih.grad, encoder.time_enc.frequency.grad]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_state_round_trip_seeded_runs_and_reset() -> None:
    graph = random_graph()
    encoder = build(seed=1)
    encoder.observe(batch([0, 1], [2, 3], [100, 200]))
    encoder.observe(batch([1, 5], [2, 7], [300, 400]))
    fresh = build(seed=2)
    fresh.load_state_dict(encoder.state_dict())
    for a, b in zip(fresh(graph, USERS, ITEMS), encoder(graph, USERS, ITEMS), strict=True):
        assert torch.equal(a, b)
    twin = build(seed=1)
    twin.observe(batch([0, 1], [2, 3], [100, 200]))
    twin.observe(batch([1, 5], [2, 7], [300, 400]))
    for a, b in zip(
        twin.embed(graph, USERS, ITEMS), encoder.embed(graph, USERS, ITEMS), strict=True
    ):
        assert torch.equal(a, b)
    encoder.reset_rows(torch.tensor([1]), torch.tensor([2]))
    assert (encoder.user_state.memory[1] == 0).all() and encoder.user_state.last_update[1] == -1
    assert encoder.item_state.pending_partner[2] == -1
    encoder.reset_state()
    assert (encoder.user_state.memory == 0).all() and (
        encoder.item_state.pending_partner == -1
    ).all()


def test_grow_keeps_rows_and_state() -> None:
    encoder, graph = build(), random_graph()
    encoder.observe(batch([0, 1], [2, 3], [100, 200]))
    encoder.observe(batch([1], [4], [300]))
    users, items = encoder.embed(graph, USERS, ITEMS)
    encoder.grow(GROW_CHUNK + 1, GROW_CHUNK + 1)
    assert (encoder.num_users, encoder.num_items) == (2 * GROW_CHUNK, 2 * GROW_CHUNK)
    assert encoder.user_state.memory.shape[0] == 2 * GROW_CHUNK
    grown_u, grown_i = encoder.embed(graph, USERS, ITEMS)
    assert torch.allclose(grown_u, users, atol=1e-6) and torch.allclose(grown_i, items, atol=1e-6)
    encoder.observe(batch([GROW_CHUNK], [GROW_CHUNK], [400]))
    new_user, _ = encoder.embed(
        random_graph(users=GROW_CHUNK + 1), torch.tensor([GROW_CHUNK]), ITEMS
    )
    assert torch.isfinite(new_user).all()


@pytest.mark.parametrize("device", DEVICES)
def test_runs_on_every_device_with_the_same_vectors(device: str) -> None:
    encoder, twin, graph = build(), build(), random_graph()
    for model in (encoder, twin):
        model.observe(batch([0, 1], [2, 3], [100, 200]))
    twin.observe(batch([4], [5], [300]))
    expected = twin.embed(graph, USERS, ITEMS)
    encoder.to(device)
    encoder.observe(batch([4], [5], [300]).to(device))
    got = encoder.embed(graph.to(device), USERS.to(device), ITEMS.to(device))
    for a, b in zip(got, expected, strict=True):
        assert a.device.type == device and torch.allclose(a.cpu(), b, atol=1e-5)
