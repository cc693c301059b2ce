"""The mirror's held edges in canonical order (by user, item, relation), kept across snapshots.

A snapshot hands the encoders its edges sorted by their packed slot keys
(``user << 40 | item << 8 | relation``, which orders exactly as the triple does); sorting
every held edge again per learn call cost a sort of the whole graph (~30 ms at 1.2M edges
on this machine's CPU, a sixth of a snapshot). :class:`CanonicalOrder` keeps the last
order and brings it up to date: the edges of slots handed out since (sorted among
themselves, a batch's worth) are merged into it, and the slots released since are left
out. Every key is held once, so the merged order is the one a full sort gives.

>>> order = CanonicalOrder()
>>> order.grow(8)
>>> keys = torch.tensor([50, 10, 30, 0, 0, 0, 0, 0])
>>> live = torch.tensor([True, True, True, False, False, False, False, False])
>>> order.keep(*order.current(live, lambda slots: keys[slots]))
>>> order.slots.tolist()
[1, 2, 0]
>>> order.released(torch.tensor([2]))       # slot 2 forgotten, then handed out again
>>> order.allocated(torch.tensor([2, 3]))
>>> keys[2], keys[3] = 60, 20
>>> live[3] = True
>>> order.current(live, lambda slots: keys[slots])
(tensor([1, 3, 0, 2]), tensor([10, 20, 50, 60]))
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

_NONE = torch.zeros(0, dtype=torch.long)


class CanonicalOrder:
    """Slots in key order as of the last :meth:`keep`, and what changed since."""

    def __init__(self) -> None:
        self.slots: Tensor | None = None  # None: no order kept (the next one sorts)
        self._keys = _NONE
        self._since: list[Tensor] = []  # slots handed out since the order was kept
        self._released = torch.zeros(0, dtype=torch.bool)  # released since, by slot

    def grow(self, capacity: int) -> None:
        missing = capacity - self._released.numel()
        if missing > 0:
            self._released = torch.cat([self._released, torch.zeros(missing, dtype=torch.bool)])

    def allocated(self, slots: Tensor) -> None:
        """These slots now hold edges they did not hold when the order was kept."""
        if slots.numel():
            self._since.append(slots)

    def released(self, slots: Tensor) -> None:
        """These slots' edges are gone: their place in the kept order is stale."""
        self._released[slots] = True

    def current(self, live: Tensor, keys_of: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor]:
        """``(slots, keys)`` of the slots ``live`` marks, by key; ``keys_of(slots)`` packs
        those slots' keys. Changes nothing (see :meth:`keep`)."""
        if self.slots is None:
            slots = live.nonzero().flatten()
            keys, order = torch.sort(keys_of(slots))
            return slots.index_select(0, order), keys
        held = live & ~self._released[: live.numel()]
        kept = held.index_select(0, self.slots).nonzero().flatten()
        old_slots, old_keys = self.slots.index_select(0, kept), self._keys.index_select(0, kept)
        new = torch.unique(torch.cat(self._since)) if self._since else _NONE
        new = new.index_select(0, live.index_select(0, new).nonzero().flatten())
        new_keys, order = torch.sort(keys_of(new))
        new = new.index_select(0, order)
        # each new key goes before the first kept key above it (keys are distinct); the
        # kept keys fill the places left, in their order
        at_new = torch.searchsorted(old_keys, new_keys) + torch.arange(new.numel())
        total = old_keys.numel() + new.numel()
        left = torch.ones(total, dtype=torch.bool).index_fill_(0, at_new, False)
        slots = torch.empty(total, dtype=torch.long).masked_scatter_(left, old_slots)
        keys = torch.empty(total, dtype=torch.long).masked_scatter_(left, old_keys)
        slots.index_copy_(0, at_new, new)
        keys.index_copy_(0, at_new, new_keys)
        return slots, keys

    def keep(self, slots: Tensor, keys: Tensor) -> None:
        """Keep this order (the held edges' now): what changes from here is tracked anew."""
        self.slots, self._keys = slots, keys
        self._since.clear()
        self._released.zero_()
