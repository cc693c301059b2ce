"""Ranking losses: BPR and InfoNCE, on vectors or on scores already computed.

Scores are dot products, so on unit vectors they are cosines in ``[-1, 1]``. The score
versions (:func:`bpr`, :func:`info_nce`) take ``[B]`` positive and ``[B, n]`` negative
scores, however they were computed (per-row or batch-shared negatives, a prior added).

* BPR (Rendle et al., https://arxiv.org/abs/1205.2618):
  ``L = mean(-log sigmoid(s(u, i⁺) - s(u, i⁻)))`` over every (positive, negative) pair.
* InfoNCE (van den Oord et al., https://arxiv.org/abs/1807.03748):
  ``L = mean(-log softmax([s⁺, s⁻₁ … s⁻ₙ] / τ)[0])``; with ``negatives=None`` the other
  rows' positives in the batch are the negatives (in-batch, ``n = B - 1``).

When every score is equal the InfoNCE loss is ``log(1 + n)`` and BPR is ``log 2``:

>>> import math, torch
>>> u = torch.nn.functional.normalize(torch.ones(4, 3), dim=-1)
>>> round(info_nce_loss(u, u, u[:, None].expand(4, 5, 3), 0.2).item(), 5) == round(math.log(6), 5)
True
>>> round(bpr_loss(u, u, u).item(), 5) == round(math.log(2), 5)
True
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def _negative_scores(user: Tensor, neg: Tensor) -> Tensor:
    """``[B, n]`` scores of ``[B, d]`` users against ``[B, d]`` or ``[B, n, d]`` negatives."""
    if neg.dim() == 2:
        neg = neg.unsqueeze(1)
    if neg.dim() != 3 or neg.shape[0] != user.shape[0] or neg.shape[2] != user.shape[1]:
        raise ValueError(
            f"negatives of shape {tuple(neg.shape)} do not fit users {tuple(user.shape)}"
        )
    return negative_scores(user, neg)


def negative_scores(user: Tensor, neg: Tensor) -> Tensor:
    """``[B, n]``: each of ``[B, d]`` users scored against its own ``[n, d]`` negatives
    (``[B, n, d]``), ``einsum("bd,bnd->bn")``.

    On the CPU its backward hands the negatives their gradient in their own layout:
    einsum's is the transpose of it, which the caller's view of ``[B * n, d]`` rows
    copies whole (67 MB for 4,096 positives of 64 negatives); the same products, so the
    same floats.
    """
    if user.device.type == "cpu":
        scores: Tensor = _RowScores.apply(user, neg)
        return scores
    return torch.einsum("bd,bnd->bn", user, neg)


class _RowScores(torch.autograd.Function):
    """einsum's own products (``bmm`` of ``[B, 1, d]`` by ``[B, d, n]``), with a backward
    that writes the negatives' gradient ``[B, n, d]`` directly: each entry is one product
    ``g[b, n] * user[b, d]``, whichever way it is laid out."""

    @staticmethod
    def forward(ctx: Any, user: Tensor, neg: Tensor) -> Tensor:
        ctx.save_for_backward(user, neg)
        return torch.bmm(user.unsqueeze(1), neg.transpose(1, 2)).squeeze(1)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        user, neg = ctx.saved_tensors
        grad_user = grad_neg = None
        if ctx.needs_input_grad[0]:
            grad_user = torch.bmm(grad.unsqueeze(1), neg).squeeze(1)
        if ctx.needs_input_grad[1]:
            grad_neg = torch.bmm(grad.unsqueeze(2), user.unsqueeze(1))
        return grad_user, grad_neg


def bpr(pos_score: Tensor, neg_score: Tensor) -> Tensor:
    """BPR from scores: mean of ``-log sigmoid(s⁺ - s⁻)`` over ``[B]`` x ``[B, n]``."""
    return F.softplus(neg_score.float() - pos_score.float().unsqueeze(1)).mean()


def info_nce(
    pos_score: Tensor,
    neg_score: Tensor,
    temperature: float = 0.2,
    logit_offset: Tensor | None = None,
) -> Tensor:
    """InfoNCE from scores: ``[B]`` positives against ``[B, n]`` negatives (``-inf``: none).

    ``logit_offset`` (``[B, 1 + n]``, positive first) is added to the logits after the
    temperature, e.g. ``-log Q``: the sampled-softmax correction for negatives drawn from
    ``Q`` (Jean et al., https://arxiv.org/abs/1412.2007).
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    logits = torch.cat([pos_score.unsqueeze(1), neg_score], dim=1).float() / temperature
    if logit_offset is not None:
        logits = logits + logit_offset.to(logits.dtype)
    target = torch.zeros(pos_score.shape[0], dtype=torch.long, device=pos_score.device)
    return F.cross_entropy(logits, target)


def in_batch_scores(
    user: Tensor, pos: Tensor, items: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """``(s⁺ [B], s⁻ [B, B])``: each row's negatives are the other rows' positives. Its own
    column is ``-inf``, and with ``items`` (``[B]``, the rows' positive items) so is every
    column of the same item: another row's positive is no negative of a row that has it."""
    scores = user @ pos.T
    if items is None:
        own = torch.eye(scores.shape[0], dtype=torch.bool, device=scores.device)
    else:
        own = items.unsqueeze(1) == items.unsqueeze(0)
    return scores.diagonal(), scores.masked_fill(own, float("-inf"))


def bpr_loss(user: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
    """Bayesian personalised ranking loss (mean over batch and negatives).

    Args:
        user: ``[B, d]`` user vectors.
        pos: ``[B, d]`` vectors of each user's positive item.
        neg: ``[B, d]`` or ``[B, n, d]`` negative item vectors.
    """
    if user.shape != pos.shape:
        raise ValueError(f"user {tuple(user.shape)} and pos {tuple(pos.shape)} shapes differ")
    return bpr((user * pos).sum(-1), _negative_scores(user, neg))


def info_nce_loss(
    user: Tensor, pos: Tensor, negatives: Tensor | None, temperature: float = 0.2
) -> Tensor:
    """InfoNCE (sampled softmax) loss; ``negatives=None`` uses in-batch negatives.

    Args:
        user: ``[B, d]`` user vectors.
        pos: ``[B, d]`` vectors of each user's positive item.
        negatives: ``[B, d]`` or ``[B, n, d]`` negatives, or None for in-batch.
        temperature: softmax temperature ``τ > 0``.
    """
    if user.shape != pos.shape:
        raise ValueError(f"user {tuple(user.shape)} and pos {tuple(pos.shape)} shapes differ")
    if negatives is None:
        return info_nce(*in_batch_scores(user, pos), temperature)
    return info_nce((user * pos).sum(-1), _negative_scores(user, negatives), temperature)
