"""Each row's mirror slots, one side of :class:`stream.learn.graph_view.MirrorIndex`.

A CSR of the slots held at the last rebuild plus a sorted delta of the slots written since
(merged in per write: a merge of two sorted runs, no sort of the whole). Entries may be
stale (a slot released, reused or rewritten since): the index filters them on read.
"""

from __future__ import annotations

import torch
from torch import Tensor

from models.neighbourhood import incident, window_draw


class SlotLists:
    """One direction of the index: each row's slots (users' or items')."""

    def __init__(self) -> None:
        self.crow = torch.zeros(1, dtype=torch.long)  # base CSR over rows
        self.slot = torch.zeros(0, dtype=torch.long)
        self.key = torch.zeros(0, dtype=torch.long)  # delta: sorted rows, their slots, gens
        self.delta_slot = torch.zeros(0, dtype=torch.long)
        self.delta_gen = torch.zeros(0, dtype=torch.long)

    def rebuild(self, rows: Tensor, slots: Tensor) -> None:
        order = torch.argsort(rows, stable=True)
        size = int(rows.max()) + 1 if rows.numel() else 0
        self.crow = torch.zeros(size + 1, dtype=torch.long)
        self.crow[1:] = torch.bincount(rows, minlength=size).cumsum(0)
        self.slot = slots[order]
        self.key = self.delta_slot = self.delta_gen = torch.zeros(0, dtype=torch.long)

    def add(self, rows: Tensor, slots: Tensor, gens: Tensor) -> None:
        """Merge entries into the sorted delta (a merge of two sorted runs, no full sort)."""
        order = torch.argsort(rows, stable=True)
        rows, slots, gens = (t.index_select(0, order) for t in (rows, slots, gens))
        # where each run's entries land: a new one after the held ones of its row
        at = torch.searchsorted(self.key, rows, right=True) + torch.arange(rows.numel())
        held_at = torch.searchsorted(rows, self.key) + torch.arange(self.key.numel())
        size = self.key.numel() + rows.numel()
        merged = []
        for column, new in ((self.key, rows), (self.delta_slot, slots), (self.delta_gen, gens)):
            out = torch.empty(size, dtype=torch.long)
            merged.append(out.index_copy_(0, at, new).index_copy_(0, held_at, column))
        self.key, self.delta_slot, self.delta_gen = merged

    def entries(
        self, rows: Tensor, fanout: int, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(owner row, slot, scale, generation)`` of these rows' entries, the base ones
        drawn with the fan-out window; stale ones included (the caller filters them):
        generation -1 marks a base entry, valid while its slot is unwritten since."""
        owner, position, scale = window_draw(rows, *self._base(rows), fanout, generator)
        lo = torch.searchsorted(self.key, rows)
        hi = torch.searchsorted(self.key, rows, right=True)
        d_owner, d_position = incident(rows, lo, hi - lo)
        return (
            torch.cat([owner, d_owner]),
            torch.cat(
                [self.slot.index_select(0, position), self.delta_slot.index_select(0, d_position)]
            ),
            torch.cat([scale, torch.ones(d_owner.numel())]),
            torch.cat(
                [torch.full((owner.numel(),), -1), self.delta_gen.index_select(0, d_position)]
            ),
        )

    def _base(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """``(start, count)`` of each row in the base CSR (rows past it have none)."""
        size = self.crow.numel() - 1
        if size == 0:
            return torch.zeros_like(rows), torch.zeros_like(rows)
        inside = rows < size
        at = rows.clamp(max=size - 1)
        start = torch.where(inside, self.crow.index_select(0, at), 0)
        return start, torch.where(inside, self.crow.index_select(0, at + 1) - start, 0)

    def counts(self, rows: Tensor, fanout: int) -> Tensor:
        """At most how many entries :meth:`entries` gives each row."""
        base = self._base(rows)[1]
        if fanout > 0:
            base = base.clamp(max=fanout)
        delta = torch.searchsorted(self.key, rows, right=True) - torch.searchsorted(self.key, rows)
        return base + delta

    @property
    def delta_size(self) -> int:
        return int(self.key.numel())

    @property
    def base_size(self) -> int:
        return int(self.slot.numel())
