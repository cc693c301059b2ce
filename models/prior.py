"""What is rising now, in the score: an item prior fused into the model's dot product.

The model scores a (user, item) pair as

.. math::

    s(u, i) = \\langle z_u, z_i \\rangle + w_u\\, p_i, \\qquad
    p_i = \\sum_k a_k\\, f_k(i)

- ``z``: the encoder's L2-normalised vectors;
- ``f_k(i)``: the item's trend features, one per time scale (the trainer computes them
  from the stream: ``stream.learn.trend``);
- ``a_k``: their learnt mix (which time scale predicts the next interaction is learnt
  from the stream, not configured per data set);
- ``w_u = 1`` for every user (a learnt per-user weight scored lower on ML-100K).

The published vectors carry the prior as one extra component, user ``[z_u, 1]`` and item
``[z_i, p_i]`` (:func:`fold`), so a ranker's dot product *is* the model's score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from models.errors import ModelConfigError


class ScorePrior(torch.nn.Module):
    """The learnt part of the prior: the mix ``a`` of the trend features (starts at 0).

    Args:
        num_features: trend features per item (one per half-life).
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        if num_features <= 0:
            raise ModelConfigError(f"num_features must be > 0, got {num_features!r}")
        self.mix = torch.nn.Parameter(torch.zeros(num_features))

    def item_prior(self, features: Tensor) -> Tensor:
        """``[I]`` prior ``p_i`` of items with ``[I, K]`` trend features."""
        return features.to(self.mix.dtype) @ self.mix

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.mix.zero_()


def fold(user_vec: Tensor, item_vec: Tensor, prior: Tensor) -> tuple[Tensor, Tensor]:
    """Published vectors: the prior as one extra component on both sides.

    ``fold(u, i, p)`` gives ``[u, 1]`` and ``[i, p]``, so their dot product is
    ``<u, i> + p``, the model's score.

    >>> u, i = torch.tensor([[0.6, 0.8]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> fu, fi = fold(u, i, torch.tensor([0.5, -1.0]))
    >>> (fu @ fi.T).tolist()
    [[1.100000023841858, -0.19999998807907104]]
    """
    return (
        torch.cat([user_vec, user_vec.new_ones(user_vec.shape[0], 1)], dim=1),
        torch.cat([item_vec, prior.to(item_vec.dtype).unsqueeze(1)], dim=1),
    )


class TrendFeatures(Protocol):
    """Item trend features as of some moments, read by (moment, item)."""

    def at(self, moments: Tensor, items: Tensor) -> Tensor:
        """``[N, K]`` float32 features of ``items[j]`` as of moment ``moments[j]``."""
        ...


@dataclass(frozen=True)
class TrendTable:
    """Item trend features as of ``T`` moments: ``features [T, items, K]``.

    A positive is scored with the features of its own moment (what was rising before it
    happened), so the prior learns to predict, not to recount the positive itself.

    >>> table = TrendTable(torch.arange(12.0).view(2, 3, 2))
    >>> table.at(torch.tensor([1, 0]), torch.tensor([2, 0])).tolist()
    [[10.0, 11.0], [0.0, 1.0]]
    """

    features: Tensor

    def at(self, moments: Tensor, items: Tensor) -> Tensor:
        """``[N, K]`` features of ``items[j]`` as of moment ``moments[j]``."""
        return self.features[moments, items]
