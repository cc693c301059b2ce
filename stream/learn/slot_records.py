"""One 64-byte row per mirror slot: what a draw reads of an edge, packed together.

A local step gathers a few edges of each node it samples from a graph of millions of
edges: read from the mirror's separate arrays (and the index's per-slot state), each
gathered edge costs a cache miss per field, eight of them once the arrays outgrow the
caches; read from one packed row, one. :class:`~stream.learn.graph_view.MirrorIndex`
keeps this copy in step with the mirror: it repacks the slots each write or release
touches, and every slot at a rebuild.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from stream.learn.graph_mirror import GraphMirror

USER, ITEM, RELATION, PART, T_REF, W_REF, GEN, FLAGS = range(8)  # columns (int64)
ALIVE, WRITTEN = 1, 2  # FLAGS bits: the slot holds an edge; written since the last rebuild
_CHUNK = 1 << 20  # slots packed at a time at a rebuild (bounds the temporary copies)


class SlotRecords:
    """``[slots, 8]`` int64: user, item, relation, partition, ``t_ref``, ``w_ref`` (the
    float64's bits), allocation generation and flags of each slot."""

    def __init__(self) -> None:
        self.rows = torch.zeros(0, 8, dtype=torch.long)

    def fit(self, size: int) -> None:
        """Room for ``size`` slots (new ones: empty, generation 0)."""
        if self.rows.shape[0] < size:
            more = self.rows.new_zeros(size - self.rows.shape[0], 8)
            self.rows = torch.cat([self.rows, more])

    def pack(self, mirror: GraphMirror, slots: Tensor, gen: Tensor, written: Tensor) -> None:
        """Copy these slots' fields from the mirror and the index's ``gen`` / ``written``."""
        m = mirror
        for part in torch.split(slots, _CHUNK):
            alive, done = m._alive.index_select(0, part), written.index_select(0, part)
            flags = alive.long() * ALIVE + done.long() * WRITTEN
            fields = (m._users, m._items, m._relations, m._part, m._t_ref)
            columns = [field.index_select(0, part) for field in fields]
            columns += [m._w_ref.index_select(0, part).view(torch.long)]
            columns += [gen.index_select(0, part), flags]
            self.rows.index_copy_(0, part, torch.stack(columns, dim=1))

    def read(self, slots: Tensor) -> Tensor:
        """``[len(slots), 8]`` rows of these slots (one gather; index_select copies whole
        rows, several times faster on the CPU than advanced indexing)."""
        return self.rows.index_select(0, slots)


def valid(records: Tensor, gens: Tensor) -> Tensor:
    """Whether each index entry still holds: its slot alive and, for a base entry (``gens``
    -1), unwritten since the rebuild, for a delta one, allocated no more times since."""
    flags = records[:, FLAGS]
    alive = (flags & ALIVE) != 0
    unwritten = (flags & WRITTEN) == 0
    return alive & torch.where(gens < 0, unwritten, records[:, GEN] == gens)


def w_ref(records: Tensor) -> Tensor:
    """float64 ``w_ref`` of each row."""
    return records[:, W_REF].contiguous().view(torch.float64)
