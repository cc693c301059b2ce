"""The loss the trainer minimises, and the optimiser steps that minimise it.

Each step scores a batch of positive ``(user, item)`` rows against negatives (sampled by
:func:`models.sampling.sample_negatives`, or the other positives of the batch for an
in-batch softmax) with BPR or InfoNCE (:mod:`models.losses`), under CUDA mixed precision
where enabled. With the score prior on (:mod:`models.prior`) a score is ``<z_u, z_i> + p_i``
(the dot product of the folded vectors a ranker gets), each positive's items priced at the
trend of its own moment. InfoNCE over ``popularity`` negatives subtracts ``log Q`` (their draw
probability) from every logit, so the sampled softmax estimates the full one instead of
learning the sampler's bias; so does the in-batch softmax, whose negatives (the other rows'
positives) come as often as their items are interacted with: ``Q`` ∝ the item's decayed
weighted degree (Yi et al., https://doi.org/10.1145/3298689.3346996), and a column of the
row's own item is masked (no false negative). On the ML-100K warm-up the correction took
the in-batch softmax's Recall@20 from 0.075 to 0.117, still short of 64 uniform negatives
per positive (0.170; docs/evaluation.md, "Negatives from the batch").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from models.base import BipartiteGraph, Encoder
from models.losses import bpr, in_batch_scores, info_nce, negative_scores
from models.prior import ScorePrior, TrendFeatures, fold
from models.sampling import item_degrees, popularity_weights, sample_negatives
from stream.learn.device import MixedPrecision
from stream.learn.local_step import LocalStep
from stream.settings.training import TrainerSettings

if TYPE_CHECKING:
    from stream.learn.ranks import Ranks

Trend = tuple[TrendFeatures, Tensor]
"""The items' trend features, and the moment (a row of the table) of each positive."""


class Objective:
    """Shuffled passes of optimiser steps over positives, as the settings ask."""

    def __init__(
        self, settings: TrainerSettings, amp: MixedPrecision, device: torch.device
    ) -> None:
        self.settings = settings
        self.amp = amp
        self.device = device
        self.prior: ScorePrior | None = None  # the trainer's, when the prior is on
        self.ranks: Ranks | None = None  # the job this trainer is a rank of, if any

    def train(
        self,
        encoder: Encoder,
        optimizer: torch.optim.Optimizer,
        graph: Callable[[], BipartiteGraph],
        positives: tuple[Tensor, Tensor],
        num_items: int,
        passes: int,
        generator: torch.Generator,
        trend: Trend | None = None,
        capped: bool = True,
        local: LocalStep | None = None,
    ) -> tuple[float, int]:
        """``passes`` shuffled passes over the positives in ``batch_size`` steps, at most
        ``max_steps_per_batch`` steps when ``capped`` (a live learn call; a fit is not);
        returns ``(mean loss, steps)`` (nan, 0: none ran). With ``local`` each step runs on
        the sampled neighbourhood of its rows instead of the whole graph. ``graph`` builds
        the whole graph view (an O(edges) snapshot): called only where it is read. In a
        job of ranks each rank trains on its share of every step's chunk, and the step
        count is the same on every rank (:mod:`stream.learn.ranks`)."""
        s = self.settings
        pos_users, pos_items = positives
        if pos_users.numel() == 0 or num_items == 0:
            return math.nan, 0
        encoder.train()
        losses: list[Tensor] = []
        steps = 0
        cap = (s.max_steps_per_batch if capped else 0) or math.inf
        ranks = self.ranks
        draws = generator if ranks is None else ranks.own_generator(generator, salt=1)
        for _ in range(passes):
            order = torch.randperm(pos_users.numel(), generator=generator).to(self.device)
            for chunk in torch.split(order, s.batch_size):
                if steps >= cap:
                    break
                steps += 1
                reduce = None
                if ranks is not None:  # this rank's share; gradients summed over the ranks
                    mine = ranks.share(chunk)
                    weight = mine.numel() / chunk.numel()
                    reduce = partial(ranks.reduce_gradients, optimizer, weight)
                    if mine.numel() == 0:
                        self.amp.step(None, optimizer, reduce)
                        continue
                    chunk = mine
                users, items = pos_users[chunk], pos_items[chunk]
                step_trend = (trend[0], trend[1][chunk]) if trend is not None else None
                losses.append(
                    self._step(
                        encoder,
                        optimizer,
                        graph,
                        (users, items),
                        num_items,
                        draws,
                        step_trend,
                        local,
                        reduce,
                    )
                )
        return (float(torch.stack(losses).mean()) if losses else math.nan), steps

    def _step(
        self,
        encoder: Encoder,
        optimizer: torch.optim.Optimizer,
        graph: Callable[[], BipartiteGraph],
        positives: tuple[Tensor, Tensor],
        num_items: int,
        generator: torch.Generator,
        trend: Trend | None,
        local: LocalStep | None,
        reduce: Callable[[], None] | None = None,
    ) -> Tensor:
        s = self.settings
        users, items = positives
        batch = users.numel()
        in_batch_softmax = s.loss == "info_nce" and s.negatives == "in_batch"
        neg = torch.zeros(batch, 0, dtype=torch.long, device=self.device)
        if not in_batch_softmax:
            needs_graph = s.negatives in ("popularity", "hard")
            neg = sample_negatives(
                s.negatives,
                users,
                items,
                num_items=num_items,
                generator=generator,
                graph=graph() if needs_graph else None,
                num_negatives=s.num_negatives,
                score=lambda u, pool: self._score(encoder, graph(), u, pool, trend),
                pool_size=s.hard_pool,
            )
        shared = s.negatives == "shared"
        pool = neg[0] if shared else neg.flatten()
        scored = torch.cat([items, pool])
        with self.amp.autocast():
            if local is None:
                user_vec, item_vec = encoder(graph(), users, scored)
                # split, not two slices: a slice's backward zero-fills a tensor of the full size
                pos_vec, neg_vec = item_vec.split([batch, item_vec.shape[0] - batch])
            else:
                user_vec, pos_vec, neg_vec = local.vectors(encoder, users, items, pool)
            if in_batch_softmax:
                pos_score, neg_score = in_batch_scores(user_vec, pos_vec, items)
                neg = items.unsqueeze(0).expand(batch, batch)
            elif shared:
                pos_score, neg_score = (user_vec * pos_vec).sum(-1), user_vec @ neg_vec.T
            else:
                pos_score = (user_vec * pos_vec).sum(-1)
                neg_score = negative_scores(user_vec, neg_vec.view(*neg.shape, -1))
            if trend is not None and self.prior is not None:
                pos_score = pos_score + self.item_prior(trend, items)
                if shared:
                    neg_score = neg_score + self.shared_item_prior(trend, pool)
                else:
                    neg_score = neg_score + self.item_prior(trend, neg)
            if s.loss == "bpr":
                loss = bpr(pos_score, neg_score)
            else:
                offset = None
                if s.negatives == "popularity":
                    weights = popularity_weights(graph(), num_items).to(self.device)
                    log_q = (weights / weights.sum()).clamp(min=1e-30).log().float()
                    offset = -torch.cat([log_q[items, None], log_q[neg]], dim=1)
                elif in_batch_softmax:
                    # the other rows' positives come as often as the item is interacted
                    # with: Q ∝ its decayed weighted degree (a constant factor cancels)
                    log_q = _degrees(graph, local, items, num_items).clamp(min=1e-30).log()
                    offset = -torch.cat([log_q[:, None], log_q[None, :].expand(batch, batch)], 1)
                loss = info_nce(pos_score, neg_score, s.temperature, offset)
        self.amp.step(loss, optimizer, reduce)
        return loss.detach().float()

    def item_prior(self, trend: Trend, items: Tensor) -> Tensor:
        """The prior of ``items`` (``[B]`` or ``[B, n]``: row ``b`` at positive ``b``'s moment)."""
        assert self.prior is not None
        table, moments = trend
        at = moments.view(-1, *([1] * (items.dim() - 1))).expand_as(items)
        features = table.at(at.reshape(-1), items.reshape(-1))
        return self.prior.item_prior(features).view(items.shape)

    def shared_item_prior(self, trend: Trend, pool: Tensor) -> Tensor:
        """``[B, n]``: the prior of one row of items (``pool``, shared negatives) at each
        positive's moment, read once per distinct moment, not once per positive."""
        table, moments = trend
        distinct, which = torch.unique(moments, return_inverse=True)
        rows = pool.expand(distinct.numel(), -1)  # one row of the pool per distinct moment
        return self.item_prior((table, distinct), rows).index_select(0, which)

    def with_prior(
        self, user_vec: Tensor, item_vec: Tensor, items: Tensor, trend: Trend | None
    ) -> tuple[Tensor, Tensor]:
        """The vectors a ranker gets, whose dot product is the score :meth:`_step` trains:
        folded with the prior (:mod:`models.prior`) when it is on, ``items[j]`` at the
        moment ``trend[1][j]``."""
        if self.prior is None or trend is None:
            return user_vec, item_vec
        table, moments = trend
        return fold(user_vec, item_vec, self.prior.item_prior(table.at(moments, items)))

    def _score(
        self,
        encoder: Encoder,
        graph: BipartiteGraph,
        users: Tensor,
        pool: Tensor,
        trend: Trend | None,
    ) -> Tensor:
        """Scores of each user against its own pool of candidate items (hard negatives)."""
        user_vec, item_vec = encoder.embed(graph, users, pool.flatten())
        scores = (user_vec.unsqueeze(1) * item_vec.view(*pool.shape, -1)).sum(-1)
        if trend is not None and self.prior is not None:
            with torch.no_grad():
                scores = scores + self.item_prior(trend, pool)
        return scores


def _degrees(
    graph: Callable[[], BipartiteGraph], local: LocalStep | None, items: Tensor, num_items: int
) -> Tensor:
    """float32 decayed weighted degrees of ``items``: from the local step's index (no
    O(edges) work), or the whole graph view a full step has built anyway."""
    if local is not None:
        degree = local.index.node_degree((items + local.num_users).cpu())
    else:
        degree = item_degrees(graph(), num_items).index_select(0, items.cpu())
    return degree.float().to(items.device)
