"""Learnt user and item id tables, grown in chunks: the base of the inductive encoders.

Row ``r`` of either table is initialised from a generator seeded by
``(seed, kind, r // GROW_CHUNK)`` (:func:`seeded_rows`): a row's initial value depends on
nothing but the seed and its place, so growing in any steps, resetting rows and
resetting tables all agree, and no run depends on torch's global random state.
"""

from __future__ import annotations

import torch
from torch import Tensor

from models.base import GROW_CHUNK, Encoder, grown_size
from models.errors import ModelConfigError

KIND_CODE = {"user": 1, "item": 2}


def seeded_rows(seed: int, kind: str, rows: Tensor, dim: int, std: float) -> Tensor:
    """Initial values ``N(0, std^2)`` of these rows of the ``kind`` table (on the CPU)."""
    rows = rows.cpu()
    out = torch.empty(rows.numel(), dim)
    # rows grouped by chunk once (a sort), not a scan of every row per chunk: that
    # was quadratic, minutes for a table of 14M rows
    chunks = rows.div(GROW_CHUNK, rounding_mode="floor")
    order = torch.argsort(chunks, stable=True)
    unique, counts = torch.unique_consecutive(chunks[order], return_counts=True)
    for chunk, group in zip(unique.tolist(), torch.split(order, counts.tolist()), strict=True):
        g = torch.Generator().manual_seed((seed * 1_000_003 + KIND_CODE[kind]) * 1_000_003 + chunk)
        values = torch.randn(GROW_CHUNK, dim, generator=g) * std
        out[group] = values[rows[group] - chunk * GROW_CHUNK]
    return out


def grown_buffer(buffer: Tensor, rows: int, fill: float) -> Tensor:
    """``buffer`` with rows appended up to ``rows``, the new ones ``fill``."""
    extra = buffer.new_full((rows - buffer.shape[0], *buffer.shape[1:]), fill)
    return torch.cat([buffer, extra])


def check_reset_rows(encoder: Encoder, users: Tensor, items: Tensor) -> None:
    for name, rows, size in (
        ("user", users, encoder.num_users),
        ("item", items, encoder.num_items),
    ):
        bad = rows[(rows < 0) | (rows >= size)]
        if bad.numel():
            raise ValueError(f"cannot reset {name} row {int(bad[0])}: outside 0..{size - 1}")


class IdTableEncoder(Encoder):
    """An encoder with learnt user and item id tables (``N(0, init_std^2)``), grown in chunks.

    ``seed`` seeds the tables' rows (see the module docstring).
    """

    def __init__(self, num_relations: int, dim: int, *, init_std: float, seed: int) -> None:
        super().__init__(num_relations, dim)
        if not init_std > 0:
            raise ModelConfigError(f"init_std must be > 0, got {init_std!r}")
        self.init_std = init_std
        self.seed = seed
        self.user_emb = torch.nn.Parameter(torch.empty(0, dim))
        self.item_emb = torch.nn.Parameter(torch.empty(0, dim))

    @property
    def num_users(self) -> int:
        return int(self.user_emb.shape[0])

    @property
    def num_items(self) -> int:
        return int(self.item_emb.shape[0])

    def _table(self, kind: str) -> torch.nn.Parameter:
        return self.user_emb if kind == "user" else self.item_emb

    def _initial(self, kind: str, rows: Tensor) -> Tensor:
        table = self._table(kind)
        values = seeded_rows(self.seed, kind, rows, self.dim, self.init_std)
        return values.to(table.device, table.dtype)

    def grow(self, num_users: int, num_items: int) -> None:
        for kind, needed in (("user", num_users), ("item", num_items)):
            table = self._table(kind)
            size = grown_size(needed, table.shape[0])
            if size > table.shape[0]:
                fresh = self._initial(kind, torch.arange(table.shape[0], size))
                setattr(self, f"{kind}_emb", torch.nn.Parameter(torch.cat([table.detach(), fresh])))

    def reset_rows(self, users: Tensor, items: Tensor) -> None:
        check_reset_rows(self, users, items)
        with torch.no_grad():
            for kind, rows in (("user", users), ("item", items)):
                self._table(kind)[rows.to(self.user_emb.device)] = self._initial(kind, rows)

    def reset_tables(self) -> None:
        with torch.no_grad():
            for kind in KIND_CODE:
                table = self._table(kind)
                table.copy_(self._initial(kind, torch.arange(table.shape[0])))
