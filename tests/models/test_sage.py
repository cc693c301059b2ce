"""GraphSAGE / PinSAGE: the encoder contract, stateless sampling and inductive vectors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.base import GROW_CHUNK, BipartiteGraph, Encoder
from models.errors import ModelConfigError
from models.resolver import encoder_resolver
from models.row_space import row_edges, smallest_k_per_group
from models.sage import PinSAGEEncoder, SAGEEncoder

NAMES = ["sage", "pinsage"]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def random_graph(users: int = 12, items: int = 9, edges: int = 40, seed: int = 0) -> BipartiteGraph:
    gen = torch.Generator().manual_seed(seed)
    return BipartiteGraph(
        users,
        items,
        torch.randint(0, users, (edges,), generator=gen),
        torch.randint(0, items, (edges,), generator=gen),
        torch.randint(0, 2, (edges,), generator=gen),
        torch.rand(edges, generator=gen) + 0.05,
        torch.randint(0, 10_000, (edges,), generator=gen),
        10_000,
    )


def build(name: str, seed: int = 0, **kwargs: object) -> Encoder:
    torch.manual_seed(seed)
    encoder = encoder_resolver(name, 2, dim=8, **kwargs)
    encoder.grow(12, 9)
    return encoder


def snapshot(encoder: Encoder) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in encoder.state_dict().items()}


ALL_USERS, ALL_ITEMS = torch.arange(12), torch.arange(9)


@pytest.mark.parametrize("name", NAMES)
def test_resolver_builds_the_class_and_validates(name: str) -> None:
    expected = {"sage": SAGEEncoder, "pinsage": PinSAGEEncoder}[name]
    assert type(encoder_resolver(name, 3, dim=16)) is expected
    with pytest.raises(ModelConfigError, match=r"num_neighbors.*-1"):
        encoder_resolver(name, 3, dim=16, num_neighbors=-1)
    encoder = build(name)
    with pytest.raises(ValueError, match=f"user row {GROW_CHUNK}"):
        encoder(random_graph(), torch.tensor([GROW_CHUNK]), ALL_ITEMS)
    with pytest.raises(ValueError, match="call grow"):
        encoder(random_graph(users=GROW_CHUNK + 1), ALL_USERS, ALL_ITEMS)


@pytest.mark.parametrize("name", NAMES)
def test_vectors_are_unit_length_and_differentiable(name: str) -> None:
    encoder = build(name)
    users, items = encoder(random_graph(), ALL_USERS, ALL_ITEMS)
    assert users.shape == (12, 8) and items.shape == (9, 8)
    assert torch.allclose(torch.cat([users, items]).norm(dim=-1), torch.ones(21), atol=1e-5)
    (users.sum() + items.sum()).backward()
    assert encoder.user_emb.grad is not None and torch.isfinite(encoder.user_emb.grad).all()
    empty_u, empty_i = encoder.embed(random_graph(edges=0), torch.arange(0), ALL_ITEMS)
    assert empty_u.shape == (0, 8) and torch.isfinite(empty_i).all()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("combine", [True, False])
def test_combined_layers_keep_the_id_row_and_the_last_layer_alone_does_not(
    name: str, combine: bool
) -> None:
    encoder, graph = build(name, combine_layers=combine), random_graph()
    with torch.no_grad():
        for conv in encoder.convs:  # every layer's output zero: only layer 0 is left
            for parameter in conv.parameters():
                parameter.zero_()
    users, items = encoder.embed(graph, ALL_USERS, ALL_ITEMS)
    own = F.normalize(torch.cat([encoder.user_emb[:12], encoder.item_emb[:9]]), dim=-1)
    if combine:
        assert torch.allclose(torch.cat([users, items]), own, atol=1e-6)
    else:
        assert torch.cat([users, items]).abs().max() == 0


def test_only_pinsage_combines_layers_by_default_and_its_revision_says_so() -> None:
    assert PinSAGEEncoder(2).combine_layers and not SAGEEncoder(2).combine_layers
    assert PinSAGEEncoder.revision > SAGEEncoder.revision == 1


@pytest.mark.parametrize("name", NAMES)
def test_embed_moves_nothing_is_deterministic_and_independent_of_the_request(name: str) -> None:
    encoder, graph = build(name), random_graph()
    before = snapshot(encoder)
    users, items = encoder.embed(graph, ALL_USERS, ALL_ITEMS)
    assert encoder.training
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    again_u, again_i = encoder.embed(graph, ALL_USERS, ALL_ITEMS)
    assert torch.equal(users, again_u) and torch.equal(items, again_i)
    alone_u, alone_i = encoder.embed(graph, torch.tensor([3]), torch.tensor([5]))
    assert torch.allclose(alone_u[0], users[3], atol=1e-6)
    assert torch.allclose(alone_i[0], items[5], atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_state_round_trip_and_seeded_runs(name: str) -> None:
    encoder, graph = build(name, seed=1), random_graph()
    with torch.no_grad():
        encoder.user_emb.add_(1.0)
    fresh = build(name, seed=2)
    fresh.load_state_dict(encoder.state_dict())
    for a, b in zip(
        fresh(graph, ALL_USERS, ALL_ITEMS), encoder(graph, ALL_USERS, ALL_ITEMS), strict=True
    ):
        assert torch.equal(a, b)
    for a, b in zip(
        build(name, seed=3).embed(graph, ALL_USERS, ALL_ITEMS),
        build(name, seed=3).embed(graph, ALL_USERS, ALL_ITEMS),
        strict=True,
    ):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_grow_keeps_old_rows_and_reset_rows_reinitialises(name: str) -> None:
    encoder, graph = build(name), random_graph()
    users, items = encoder.embed(graph, ALL_USERS, ALL_ITEMS)
    encoder.grow(GROW_CHUNK + 1, 3)
    assert (encoder.num_users, encoder.num_items) == (2 * GROW_CHUNK, GROW_CHUNK)
    grown_u, grown_i = encoder.embed(graph, ALL_USERS, ALL_ITEMS)
    assert torch.allclose(grown_u, users, atol=1e-6) and torch.allclose(grown_i, items, atol=1e-6)
    new_user, _ = encoder.embed(graph, torch.tensor([GROW_CHUNK]), torch.arange(0))
    assert torch.isfinite(new_user).all()
    initial = encoder.user_emb.detach().clone()
    with torch.no_grad():
        encoder.user_emb.add_(1.0)  # as if trained
    encoder.reset_rows(torch.tensor([4]), torch.tensor([], dtype=torch.long))
    back = (encoder.user_emb.detach() == initial).all(dim=-1)  # only that row, to its start
    assert back.nonzero().flatten().tolist() == [4]
    with pytest.raises(ValueError, match="user row -1"):
        encoder.reset_rows(torch.tensor([-1]), torch.tensor([], dtype=torch.long))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_runs_on_every_device_with_the_same_vectors(name: str, device: str) -> None:
    encoder, graph = build(name), random_graph()
    expected = encoder.embed(graph, ALL_USERS, ALL_ITEMS)
    encoder.to(device)
    got = encoder.embed(graph.to(device), ALL_USERS.to(device), ALL_ITEMS.to(device))
    for a, b in zip(got, expected, strict=True):
        assert a.device.type == device and torch.allclose(a.cpu(), b, atol=1e-5)


def test_sage_samples_by_decayed_weight() -> None:
    # User 0 has one heavy edge among near-zero ones: one neighbour, one layer, it must win.
    light = BipartiteGraph(
        1,
        4,
        torch.zeros(4, dtype=torch.long),
        torch.arange(4),
        torch.zeros(4, dtype=torch.long),
        torch.tensor([1e-9, 1e-9, 1e3, 1e-9]),
        torch.zeros(4, dtype=torch.long),
        0,
    )
    heavy_only = BipartiteGraph(
        1,
        4,
        torch.zeros(1, dtype=torch.long),
        torch.tensor([2]),
        torch.zeros(1, dtype=torch.long),
        torch.tensor([1e3]),
        torch.zeros(1, dtype=torch.long),
        0,
    )
    encoder = build("sage", num_layers=1, num_neighbors=1)
    for seed in range(5):
        encoder.seed = seed
        got, _ = encoder.embed(light, torch.tensor([0]), torch.arange(0))
        want, _ = encoder.embed(heavy_only, torch.tensor([0]), torch.arange(0))
        assert torch.allclose(got, want, atol=1e-6)


def test_pinsage_neighbourhoods_are_bounded_importance_weights() -> None:
    encoder = build("pinsage", num_neighbors=3, num_walks=5, walk_length=3)
    assert isinstance(encoder, PinSAGEEncoder)
    edges = row_edges(random_graph(), encoder.num_users)
    nodes = torch.tensor([0, 1, 2, encoder.num_users + 4])
    src, dst, weight = encoder._sample(edges, nodes, seed=0)
    assert set(dst.tolist()) <= set(nodes.tolist()) and not (src == dst).any()
    assert torch.bincount(dst).max() <= 3
    assert (weight >= 1).all() and (weight <= 5 * 3).all()


def test_smallest_k_per_group_keeps_k_smallest() -> None:
    group = torch.tensor([2, 0, 2, 2, 0, 1])
    score = torch.tensor([5.0, 1.0, 3.0, 4.0, 0.0, 9.0])
    kept = smallest_k_per_group(group, score, 2)
    assert sorted(kept.tolist()) == [1, 2, 3, 4, 5]  # position 0 is group 2's largest


def community_graph(seed: int, new_user_item: int | None = None) -> BipartiteGraph:
    """4 communities of 10 users and 5 items; each user touches 3 items of its own."""
    gen = torch.Generator().manual_seed(seed)
    users, items = [], []
    for user in range(40):
        for item in torch.randperm(5, generator=gen)[:3].tolist():
            users.append(user)
            items.append(user // 10 * 5 + item)
    if new_user_item is not None:
        users.append(40)
        items.append(new_user_item)
    count = len(users)
    zeros = torch.zeros(count, dtype=torch.long)
    return BipartiteGraph(
        41, 20, torch.tensor(users), torch.tensor(items), zeros, torch.ones(count), zeros, 0
    )


@pytest.mark.parametrize("name", NAMES)
def test_new_user_gets_its_item_neighbourhood_without_retrain(name: str) -> None:
    torch.manual_seed(0)
    encoder = encoder_resolver(name, 1, dim=16)
    encoder.grow(40, 20)
    graph = community_graph(seed=0)
    optimiser = torch.optim.Adam(encoder.parameters(), lr=0.02)
    gen = torch.Generator().manual_seed(1)
    for _ in range(60):  # BPR on the old users only
        negatives = torch.randint(0, 20, (graph.num_edges,), generator=gen)
        users, items = encoder(graph, graph.users, torch.cat([graph.items, negatives]))
        gap = (users * (items[: graph.num_edges] - items[graph.num_edges :])).sum(-1)
        loss = -F.logsigmoid(5 * gap).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    encoder.grow(41, 20)
    encoder.reset_rows(torch.tensor([40]), torch.tensor([], dtype=torch.long))  # a fresh row
    item = 6  # community 1 owns items 5..9
    user, items = encoder.embed(
        community_graph(0, new_user_item=item), torch.tensor([40]), torch.arange(20)
    )
    cosine = (user @ items.T)[0]
    others = torch.cat([cosine[:5], cosine[10:]])
    community = cosine[5:10]
    # Clearly closer to its item and that item's community than to the other communities.
    assert cosine[item] > others.mean() + 0.25
    assert community.mean() > others.mean() + 0.25
