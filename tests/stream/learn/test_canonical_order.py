"""CanonicalOrder: the order kept across snapshots is the one a full sort gives."""

from __future__ import annotations

import pytest
import torch

from stream.learn.canonical_order import CanonicalOrder


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kept_order_brought_up_to_date_equals_a_full_sort(seed: int) -> None:
    """Slots handed out, released, handed out again with other keys, and edges decaying
    out of ``live`` between snapshots: each merged order equals sorting the live keys."""
    gen = torch.Generator().manual_seed(seed)
    capacity = 400
    keys = torch.zeros(capacity, dtype=torch.long)
    alive = torch.zeros(capacity, dtype=torch.bool)
    order = CanonicalOrder()
    order.grow(capacity)
    used: set[int] = set()
    reused = 0
    for step in range(30):
        free = (~alive).nonzero().flatten()
        handed = free[torch.randperm(free.numel(), generator=gen)[:20]]
        keys[handed] = torch.randint(0, 10**12, (handed.numel(),), generator=gen)
        alive[handed] = True
        order.allocated(handed)
        held = alive.nonzero().flatten()
        gone = held[torch.rand(held.numel(), generator=gen) < 0.15]
        alive[gone] = False
        order.released(gone)
        reused += len(used & set(handed.tolist()))
        used.update(handed.tolist())
        live = alive & (torch.rand(capacity, generator=gen) < 0.9)  # a read's epsilon cut
        slots, got = order.current(live, lambda s: keys[s])
        expected, _ = torch.sort(keys[live.nonzero().flatten()])
        assert torch.equal(got, expected)
        assert torch.equal(keys[slots], got) and bool(live[slots].all())
        if step % 3 != 2:  # a pruning snapshot keeps its order; a read does not
            alive &= live
            order.released((~live).nonzero().flatten())
            order.keep(*order.current(alive, lambda s: keys[s]))
    assert reused > 100  # slots were handed out again, with other keys
