"""The loss the trainer minimises, and the optimiser steps that minimise it.

Each step scores a batch of positive ``(user, item)`` rows against negatives (sampled by
:func:`models.sampling.sample_negatives`, or the other positives of the batch for an
in-batch softmax) with BPR or InfoNCE (:mod:`models.losses`), under CUDA mixed precision
where enabled.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from models.base import BipartiteGraph, Encoder
from models.losses import bpr_loss, info_nce_loss
from models.sampling import sample_negatives
from stream.learn.device import MixedPrecision
from stream.settings.training import TrainerSettings


class Objective:
    """Shuffled passes of optimiser steps over positives, as the settings ask."""

    def __init__(
        self, settings: TrainerSettings, amp: MixedPrecision, device: torch.device
    ) -> None:
        self.settings = settings
        self.amp = amp
        self.device = device

    def train(
        self,
        encoder: Encoder,
        optimizer: torch.optim.Optimizer,
        graph: BipartiteGraph,
        positives: tuple[Tensor, Tensor],
        num_items: int,
        passes: int,
        generator: torch.Generator,
    ) -> tuple[float, int]:
        """``passes`` shuffled passes over the positives in ``batch_size`` steps, at most
        ``max_steps_per_batch`` steps; returns ``(mean loss, steps)`` (nan, 0: none ran)."""
        s = self.settings
        pos_users, pos_items = positives
        if pos_users.numel() == 0 or num_items == 0:
            return math.nan, 0
        encoder.train()
        losses: list[Tensor] = []
        cap = s.max_steps_per_batch or math.inf
        for _ in range(passes):
            order = torch.randperm(pos_users.numel(), generator=generator).to(self.device)
            for chunk in torch.split(order, s.batch_size):
                if len(losses) >= cap:
                    break
                users, items = pos_users[chunk], pos_items[chunk]
                losses.append(
                    self._step(encoder, optimizer, graph, users, items, num_items, generator)
                )
        return float(torch.stack(losses).mean()), len(losses)

    def _step(
        self,
        encoder: Encoder,
        optimizer: torch.optim.Optimizer,
        graph: BipartiteGraph,
        users: Tensor,
        items: Tensor,
        num_items: int,
        generator: torch.Generator,
    ) -> Tensor:
        s = self.settings
        in_batch_softmax = s.loss == "info_nce" and s.negatives == "in_batch"
        neg = torch.zeros(users.numel(), 0, dtype=torch.long, device=self.device)
        if not in_batch_softmax:
            neg = sample_negatives(
                s.negatives,
                users,
                items,
                num_items=num_items,
                generator=generator,
                graph=graph,
                num_negatives=s.num_negatives,
                score=lambda u, pool: _score(encoder, graph, u, pool),
                pool_size=s.hard_pool,
            )
        with self.amp.autocast():
            user_vec, item_vec = encoder(graph, users, torch.cat([items, neg.flatten()]))
            pos_vec = item_vec[: users.numel()]
            neg_vec = item_vec[users.numel() :].reshape(
                users.numel(), neg.shape[1], item_vec.shape[1]
            )
            if s.loss == "bpr":
                loss = bpr_loss(user_vec, pos_vec, neg_vec)
            else:
                loss = info_nce_loss(
                    user_vec, pos_vec, None if in_batch_softmax else neg_vec, s.temperature
                )
        self.amp.step(loss, optimizer)
        return loss.detach().float()


def _score(encoder: Encoder, graph: BipartiteGraph, users: Tensor, pool: Tensor) -> Tensor:
    """Scores of each user against its own pool of candidate items (hard negatives)."""
    user_vec, item_vec = encoder.embed(graph, users, pool.flatten())
    return (user_vec.unsqueeze(1) * item_vec.view(*pool.shape, -1)).sum(-1)
