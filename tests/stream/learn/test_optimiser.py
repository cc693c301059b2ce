"""RowAdam: Adam on the rows a sparse gradient holds, every other row untouched."""

from __future__ import annotations

import torch

from stream.learn.optimiser import RowAdam


def test_row_sparse_steps_are_adams_on_the_rows_they_hold() -> None:
    gen = torch.Generator().manual_seed(0)
    table = torch.nn.Parameter(torch.randn(50, 4, generator=gen))
    rows = torch.tensor([3, 7, 8, 41])
    reference = torch.nn.Parameter(table.detach()[rows].clone())
    untouched = table.detach().clone()
    row_adam = RowAdam([table], [table], lr=0.05)
    adam = torch.optim.Adam([reference], lr=0.05)
    for _ in range(5):
        values = torch.randn(rows.numel(), 4, generator=gen)
        table.grad = torch.sparse_coo_tensor(rows[None], values, table.shape)
        reference.grad = values.clone()
        row_adam.step()
        adam.step()
    torch.testing.assert_close(table.detach()[rows], reference.detach())
    others = torch.ones(50, dtype=torch.bool)
    others[rows] = False
    assert torch.equal(table.detach()[others], untouched[others])
    assert row_adam.state[table]["row_step"][rows].tolist() == [5.0] * rows.numel()
