"""A step that runs behind the stream: its heavy half outside the trainer's lock.

With ``reflect_before_step`` the worker's learner thread takes the steps while the trainer
thread reflects (:mod:`stream.learn.reflect`) and publishes each new batch's users at once:
an event then waits for its own reflect, not for a step in progress. A step behind is

1. under the trainer's lock (short): the whole graph's view, the replay draw, the live
   rows;
2. under the parameters' lock only (the second or so of a full step on a large graph): the
   optimiser steps and one propagation over that view, which also gives the new partial
   sums. Reflects run meanwhile; they read the partial sums and the rows as of the last
   propagation, never the parameters being moved;
3. under the trainer's lock again: the new vectors of the rows live at (1) put in place
   but for the users reflected during (2), which keep their reflected vectors (their
   newest edges are not in the view of (1)) until the next step; the batch's items
   published, and every row of (1) compared for publishing as after any step (the
   batch's users, published by their reflect, among them: once the step moved them past
   the threshold).

Rows reset by eviction during (2) stay stale for the next reflects (their new id's edges
are not in that view either). A reflect that has to grow the tables (geometrically: seldom)
or reset evicted rows waits for (2) to end: those move parameters. Only for a full step of
an encoder with partial sums, in a process of its own (no torchrun job); otherwise
:meth:`IncrementalTrainer.step`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from models.ids import KINDS
from stream.learn.refresh import folded, joined_rows, write_rows

if TYPE_CHECKING:
    from stream.learn.report import TrainReport
    from stream.learn.trainer import Absorbed, IncrementalTrainer


def step_behind(
    trainer: IncrementalTrainer,
    absorbed: Absorbed,
    deliver: Callable[[TrainReport], object] = lambda report: None,
) -> TrainReport:
    """Fine-tune on ``absorbed`` with the compute outside the lock; see the module.
    ``deliver`` gets the report under the trainer's lock, as its version is taken: a
    reflect's version is then above every report delivered before it, below any after."""
    t = trainer
    if t.scope != "full" or t.ranks is not None or not t.keep_partial_sums:
        with t._lock:
            report = t.step(absorbed)
            deliver(report)
            return report
    batch = absorbed.batch
    with t._lock, t._params_lock:
        t._grow()
        graph = t._graph()
        generator = torch.Generator().manual_seed(t.seed_of(absorbed.version))
        positives, replayed = t._positives(batch, lambda: graph, generator)
        live = {k: t.registry.live(k) for k in KINDS}
        resets = {k: len(t._reset_rows[k]) for k in KINDS}
        t.reflected_behind = []
    with t._params_lock:
        loss, steps = t._objective.train(
            t.encoder,
            t.optimizer,
            lambda: graph,
            positives,
            live["item"],
            t.settings.steps_per_batch,
            generator,
            None if absorbed.trend is None else (absorbed.trend, torch.zeros_like(positives[0])),
        )
        if len(batch):
            t.encoder.observe(batch.to(t.device))
        users = torch.arange(live["user"], device=t.device)
        items = torch.arange(live["item"], device=t.device)
        with t._amp.autocast():
            user_vec, item_vec, partial = t.encoder.embed_with_partial(graph, users, items)
    with t._lock:
        vectors = dict(zip(KINDS, folded(t, user_vec, item_vec, items), strict=True))
        # Users reflected meanwhile keep their reflected vectors (their newest edges are
        # not in the view of (1)) until the next step.
        again = torch.unique(joined_rows(t.reflected_behind))
        t.reflected_behind = None
        if t._latest is None:
            t._latest = {k: vectors[k][:0] for k in KINDS}
        again = again[again < min(live["user"], t._latest["user"].shape[0])].to(t.device)
        kept = t._latest["user"][again].clone()
        stepped = {k: torch.arange(live[k], device=t.device) for k in KINDS}
        write_rows(t, stepped, (vectors["user"], vectors["item"]))
        t._latest["user"][again] = kept
        t._partial = partial
        t._reset_rows = {k: t._reset_rows[k][resets[k] :] for k in KINDS}
        t.reembedded = {k: None for k in KINDS}
        # The batch's users published by their reflect: again only once the step moved
        # them past the threshold, as any row; the others and its items now.
        changed = {}
        users_now = absorbed.users_to_publish.to(t.device)
        for kind, touched in (("user", users_now), ("item", batch.items.to(t.device))):
            changed[kind] = t.publish.select(kind, t._latest[kind][: live[kind]], touched)
        t.model_version += 1
        report = t._report(absorbed, changed, replayed, steps, loss, [], with_vectors=True)
        deliver(report)
        return report
