"""Learnt user and item id tables, grown in chunks: the base of the inductive encoders."""

from __future__ import annotations

import torch
from torch import Tensor

from models.base import Encoder, grown_size
from models.errors import ModelConfigError


def grown_parameter(param: torch.nn.Parameter, rows: int, std: float) -> torch.nn.Parameter:
    """``param`` with rows appended up to ``rows``, the new ones ``N(0, std^2)``."""
    extra = torch.empty(rows - param.shape[0], *param.shape[1:], device=param.device)
    torch.nn.init.normal_(extra, std=std)
    return torch.nn.Parameter(torch.cat([param.detach(), extra.to(param.dtype)]))


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
    """An encoder with learnt user and item id tables (``N(0, init_std^2)``), grown in chunks."""

    def __init__(self, num_relations: int, dim: int, *, init_std: float) -> None:
        super().__init__(num_relations, dim)
        if not init_std > 0:
            raise ModelConfigError(f"init_std must be > 0, got {init_std!r}")
        self.init_std = init_std
        self.user_emb = torch.nn.Parameter(torch.empty(0, dim))
        self.item_emb = torch.nn.Parameter(torch.empty(0, dim))

    @property
    def num_users(self) -> int:
        return int(self.user_emb.shape[0])

    @property
    def num_items(self) -> int:
        return int(self.item_emb.shape[0])

    def grow(self, num_users: int, num_items: int) -> None:
        users, items = grown_size(num_users, self.num_users), grown_size(num_items, self.num_items)
        if users > self.num_users:
            self.user_emb = grown_parameter(self.user_emb, users, self.init_std)
        if items > self.num_items:
            self.item_emb = grown_parameter(self.item_emb, items, self.init_std)

    def reset_rows(self, users: Tensor, items: Tensor) -> None:
        check_reset_rows(self, users, items)
        with torch.no_grad():
            for table, rows in ((self.user_emb, users), (self.item_emb, items)):
                fresh = torch.empty(rows.numel(), self.dim, device=table.device)
                table[rows.to(table.device)] = torch.nn.init.normal_(fresh, std=self.init_std)

    def reset_tables(self) -> None:
        torch.nn.init.normal_(self.user_emb, std=self.init_std)
        torch.nn.init.normal_(self.item_emb, std=self.init_std)
