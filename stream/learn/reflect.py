"""Publish what a user just did before the next gradient step.

A full learn call costs what the whole graph costs (a million edges: a second or more on a
small CPU), and an event waits for the call in progress and then its own. With
``reflect_before_step`` the worker splits the call: :meth:`IncrementalTrainer.reflect`
merges the events into the graph and re-embeds only the users with new events, from their
own edges; those vectors are published at once, and the step
(:meth:`IncrementalTrainer.step`) follows and publishes what it moved, items included
(a batch's items are the popular ones, whose edges are a large share of the graph: a
second's worth of them at 10,000 events/s reaches most of a million edges).

The re-embedding is LightGCN's last hop: a row's layers ``1..L`` are its edges'
normalised coefficients times its neighbours' sums of layers ``0..L-1``
(:class:`models.base.PartialSums`, kept from the last full propagation), plus its own row:

.. math::

    z_v = \\mathrm{normalize}\\Big(e^{(0)}_v + \\sum_n \\tilde A_{vn} \\sum_{k<L} e^{(k)}_n\\Big)

Exact for every row when nothing changed since that propagation, and exact for the rows
re-embedded when ``L`` is 1; with more layers a neighbour's deeper layers are as of the
propagation (its other edges since are not in them). Cost: the rows' edges times ``dim``,
whatever the graph's size. A neighbour new since the propagation or reset by eviction
passes on its own row. Other rows keep their vectors until the step re-embeds them (its
new edges renormalise its neighbours too).

Only after a full propagation (a full step, or a local one that fell back to it): a local
re-embedding moves rows whose sums it does not recompute, so it drops them and the calls
after it publish after their step, as without the setting. Not in a torchrun job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from models.ids import KINDS
from models.neighbourhood import sample_neighbourhood
from stream.learn.refresh import folded, joined_rows, write_rows

if TYPE_CHECKING:
    from stream.learn.trainer import IncrementalTrainer


def reflect_rows(trainer: IncrementalTrainer, users: Tensor) -> dict[str, Tensor] | None:
    """Re-embed these users (the new edges' users; their items are left to the step, see
    the module docstring) into the latest vectors from their own edges; the rows to
    publish, by kind (None: no partial sums to read from)."""
    t = trainer
    partial = t._partial
    if partial is None or t._latest is None or t.ranks is not None:
        return None
    users = torch.unique(users.cpu())
    view = t.mirror.view(t.encoder.num_users, t.encoder.num_items)
    hood = sample_neighbourhood(view, users, hops=1, fanout=0)
    assert hood is not None  # no edge limit
    stale = tuple(joined_rows(t._reset_rows[k]) for k in KINDS)
    on = {"user": users.to(t.device), "item": torch.zeros(0, dtype=torch.long, device=t.device)}
    with t._amp.autocast():
        user_vec, item_vec = t.encoder.embed_one_hop(
            partial, hood.to(t.device), on["user"], on["item"], (stale[0], stale[1])
        )
    write_rows(t, on, folded(t, user_vec, item_vec, on["item"]))
    if t.reflected_behind is not None:
        t.reflected_behind.append(users)
    user_rows = t.publish.select("user", t._latest["user"], on["user"], on["user"])
    return {"user": user_rows, "item": user_rows[:0]}
