"""Negative samplers and replay: supports, proportions and seeding."""

from __future__ import annotations

import pytest
import torch

from models.base import BipartiteGraph
from models.errors import ModelConfigError
from models.sampling import (
    NEGATIVE_SAMPLERS,
    POPULARITY_EXPONENT,
    sample_negatives,
    sample_replay,
    weighted_draw,
)


def graph(
    users: list[int], items: list[int], weights: list[float], times: list[int]
) -> BipartiteGraph:
    n = len(users)
    return BipartiteGraph(
        max(users) + 1,
        max(items) + 1,
        torch.tensor(users),
        torch.tensor(items),
        torch.zeros(n, dtype=torch.long),
        torch.tensor(weights),
        torch.tensor(times),
        max(times),
    )


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


G = graph([0, 1, 2, 2], [0, 1, 1, 3], [1.0, 8.0, 8.0, 0.5], [0, 10, 20, 30])


@pytest.mark.parametrize("method", NEGATIVE_SAMPLERS)
def test_every_sampler_gives_item_rows_of_the_right_shape_and_is_seeded(method: str) -> None:
    users, pos = torch.tensor([0, 1, 2]), torch.tensor([0, 1, 3])

    def score(u: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
        return pool.float()

    def draw(seed: int) -> torch.Tensor:
        return sample_negatives(
            method,
            users,
            pos,
            num_items=5,
            generator=gen(seed),
            graph=G,
            num_negatives=2,
            score=score,
            pool_size=8,
        )

    neg = draw(0)
    assert neg.shape == (3, 2) and neg.dtype == torch.long
    assert bool(((neg >= 0) & (neg < 5)).all())
    assert torch.equal(neg, draw(0))


def test_popularity_follows_degree_to_the_three_quarters() -> None:
    # weighted degrees: item 0 -> 1, item 1 -> 16, item 3 -> 0.5, items 2 and 4 -> 0
    neg = sample_negatives(
        "popularity",
        torch.zeros(40_000, dtype=torch.long),
        torch.zeros(40_000, dtype=torch.long),
        num_items=5,
        generator=gen(),
        graph=G,
    ).flatten()
    counts = torch.bincount(neg, minlength=5).double()
    assert counts[2] == 0 and counts[4] == 0
    assert counts[1] / counts[0] == pytest.approx(16**POPULARITY_EXPONENT, rel=0.1)
    assert counts[0] / counts[3] == pytest.approx(2**POPULARITY_EXPONENT, rel=0.1)


def test_in_batch_negatives_are_other_rows_positives() -> None:
    pos = torch.tensor([10, 11, 12, 13])
    neg = sample_negatives(
        "in_batch", torch.arange(4), pos, num_items=20, generator=gen(), num_negatives=6
    )
    for b in range(4):
        others = set(pos.tolist()) - {int(pos[b])}
        assert set(neg[b].tolist()) <= others


def test_hard_negatives_are_the_top_scored_non_positives() -> None:
    # score = item row, so the hardest candidate is the highest row the user has no edge to
    users, pos = torch.tensor([0, 2]), torch.tensor([4, 2])
    neg = sample_negatives(
        "hard",
        users,
        pos,
        num_items=5,
        generator=gen(),
        graph=G,
        num_negatives=1,
        score=lambda u, pool: pool.float(),
        pool_size=200,
    )
    assert neg.flatten().tolist() == [3, 4]  # user 0: 4 is its positive; user 2 has item 3


def test_replay_is_proportional_to_weight_and_respects_older_than() -> None:
    idx = sample_replay(G, 40_000, gen())
    counts = torch.bincount(idx, minlength=4).double()
    assert counts[1] / counts[0] == pytest.approx(8.0, rel=0.1)
    old = sample_replay(G, 1_000, gen(), older_than=15)
    assert set(old.tolist()) <= {0, 1}
    assert sample_replay(G, 5, gen(), older_than=0).numel() == 0
    assert sample_replay(G, 0, gen()).numel() == 0


def test_weighted_draw_never_draws_zero_weights() -> None:
    w = torch.tensor([0.0, 1.0, 0.0, 2.0, 0.0])
    assert set(weighted_draw(w, 5_000, gen()).tolist()) == {1, 3}
    with pytest.raises(ValueError, match="all-zero"):
        weighted_draw(torch.zeros(3), 1, gen())


def test_unknown_sampler_lists_the_valid_names() -> None:
    with pytest.raises(ModelConfigError, match="uniform, shared, popularity, in_batch, hard"):
        sample_negatives("nope", torch.zeros(1), torch.zeros(1), num_items=1, generator=gen())


def test_shared_negatives_are_one_draw_for_the_whole_batch() -> None:
    users, pos = torch.arange(6), torch.zeros(6, dtype=torch.long)
    neg = sample_negatives("shared", users, pos, num_items=50, generator=gen(1), num_negatives=8)
    assert neg.shape == (6, 8) and bool((neg == neg[0]).all())
    assert bool(((neg >= 0) & (neg < 50)).all()) and neg[0].unique().numel() > 1
