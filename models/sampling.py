"""Negative sampling by name, and replay of older edges by decayed weight.

Every draw takes an explicit :class:`torch.Generator` (on the CPU), so a run is a pure
function of its seed; results are moved to the device of the rows they go with.

Negative samplers (:data:`NEGATIVE_SAMPLERS`):

* ``uniform``: item rows uniformly from ``0 .. num_items - 1``, drawn for each row;
* ``shared``: one uniform draw for the whole batch, every row scored against all of it
  (a sampled softmax with shared samples: the step gathers ``n`` item vectors instead of
  ``B x n``, so many negatives cost little);
* ``popularity``: ∝ ``degree^0.75`` (word2vec's popularity correction), the degree being
  an item's decayed weighted degree in the graph; uniform when the graph is empty;
* ``in_batch``: another row's positive item from the same batch (with InfoNCE the trainer
  scores each row against every other row's positive instead, corrected by ``log Q``:
  :mod:`stream.learn.objective`);
* ``hard``: the top-scored items, under the current model, of a uniform candidate pool,
  leaving out the row's positive and every item the user already has an edge to.

>>> g = torch.Generator().manual_seed(0)
>>> neg = sample_negatives("uniform", torch.tensor([0, 1]), torch.tensor([3, 4]),
...                        num_items=10, generator=g, num_negatives=3)
>>> tuple(neg.shape), bool(((neg >= 0) & (neg < 10)).all())
((2, 3), True)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from models.base import BipartiteGraph
from models.errors import ModelConfigError

NEGATIVE_SAMPLERS = ("uniform", "shared", "popularity", "in_batch", "hard")
POPULARITY_EXPONENT = 0.75

ScoreFn = Callable[[Tensor, Tensor], Tensor]
"""``score(user_rows [B], item_rows [B, P]) -> [B, P]`` under the current model."""


def check_sampler(name: str) -> str:
    """``name`` if it is a negative sampler; the error lists the valid names."""
    if name not in NEGATIVE_SAMPLERS:
        raise ModelConfigError(
            f"unknown negative sampler {name!r}; valid names: {', '.join(NEGATIVE_SAMPLERS)}"
        )
    return name


def sample_negatives(
    method: str,
    users: Tensor,
    pos_items: Tensor,
    *,
    num_items: int,
    generator: torch.Generator,
    graph: BipartiteGraph | None = None,
    num_negatives: int = 1,
    score: ScoreFn | None = None,
    pool_size: int = 32,
) -> Tensor:
    """``[B, num_negatives]`` negative item rows for a batch of (user, positive item) rows.

    ``graph`` is needed by ``popularity`` and ``hard``; ``score`` by ``hard``.
    """
    check_sampler(method)
    if num_items <= 0:
        raise ValueError(f"num_items must be > 0, got {num_items!r}")
    if num_negatives <= 0:
        raise ValueError(f"num_negatives must be > 0, got {num_negatives!r}")
    batch = int(users.numel())
    shape = (batch, num_negatives)
    if method == "popularity":
        if graph is None:
            raise ValueError("popularity negatives need the graph")
        probs = popularity_weights(graph, num_items)
        if float(probs.sum()) > 0:
            out = weighted_draw(probs, batch * num_negatives, generator).view(shape)
            return out.to(users.device)
    elif method == "shared":
        pool = torch.randint(0, num_items, (1, num_negatives), generator=generator)
        return pool.to(users.device).expand(shape)
    elif method == "in_batch" and batch > 1:
        # another row j != b: shift b by 1 .. B-1 positions, so j is uniform over the others
        shift = torch.randint(1, batch, shape, generator=generator)
        other = (torch.arange(batch).unsqueeze(1) + shift) % batch
        return pos_items.cpu()[other].to(users.device)
    elif method == "hard":
        if graph is None or score is None:
            raise ValueError("hard negatives need the graph and a score function")
        return _hard(users, pos_items, num_items, generator, graph, num_negatives, score, pool_size)
    return torch.randint(0, num_items, shape, generator=generator).to(users.device)


def item_degrees(graph: BipartiteGraph, num_items: int) -> Tensor:
    """``[num_items]`` float64: each item's decayed weighted degree in ``graph``."""
    degree = torch.bincount(
        graph.items.cpu(), weights=graph.weights.cpu().double(), minlength=num_items
    )[:num_items]
    return degree.clamp(min=0)


def popularity_weights(graph: BipartiteGraph, num_items: int) -> Tensor:
    """``[num_items]`` float64 draw weights of ``popularity`` negatives (unnormalised):
    each item's decayed weighted degree to the power :data:`POPULARITY_EXPONENT`."""
    return item_degrees(graph, num_items) ** POPULARITY_EXPONENT


def _hard(
    users: Tensor,
    pos_items: Tensor,
    num_items: int,
    generator: torch.Generator,
    graph: BipartiteGraph,
    num_negatives: int,
    score: ScoreFn,
    pool_size: int,
) -> Tensor:
    if pool_size < num_negatives:
        raise ValueError(f"hard pool_size {pool_size} < num_negatives {num_negatives}")
    batch = int(users.numel())
    pool = torch.randint(0, num_items, (batch, pool_size), generator=generator)
    pool = pool.to(users.device)
    known = graph.users.to(users.device) * num_items + graph.items.to(users.device)
    is_positive = (pool == pos_items.unsqueeze(1)) | torch.isin(
        users.unsqueeze(1) * num_items + pool, known
    )
    with torch.no_grad():
        scores = score(users, pool).float().masked_fill(is_positive, float("-inf"))
    top = scores.topk(num_negatives, dim=1).indices
    return pool.gather(1, top)


def weighted_draw(weights: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """``n`` indices drawn with replacement ∝ non-negative ``weights`` (any length).

    Inverse-CDF sampling, so unlike :func:`torch.multinomial` it has no category limit;
    zero-weight entries are never drawn.
    """
    cdf = weights.detach().cpu().double().cumsum(0)
    if weights.numel() == 0 or not float(cdf[-1]) > 0:
        raise ValueError("cannot draw from all-zero (or no) weights")
    r = torch.rand(n, generator=generator, dtype=torch.float64) * cdf[-1]
    return torch.searchsorted(cdf, r, right=True).clamp(max=weights.numel() - 1)


def sample_replay(
    graph: BipartiteGraph, n: int, generator: torch.Generator, older_than: int | None = None
) -> Tensor:
    """Indices of ``n`` graph edges drawn ∝ decayed weight (with replacement).

    ``older_than`` keeps only edges whose newest event is before that time (the edges a
    micro-batch did not just touch). Returns an empty tensor when nothing qualifies.
    """
    if n < 0:
        raise ValueError(f"replay sample size must be >= 0, got {n!r}")
    weights = graph.weights.detach().cpu().double()
    if older_than is not None:
        weights = weights * (graph.times.cpu() < older_than)
    if n == 0 or not float(weights.sum()) > 0:
        return torch.zeros(0, dtype=torch.long, device=graph.users.device)
    return weighted_draw(weights, n, generator).to(graph.users.device)
