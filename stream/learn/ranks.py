"""Trainers as ranks of one ``torch.distributed`` job: one model, one version sequence.

Every rank holds the whole graph (all ranks learn on the same event batches, in the same
order: rank 0 reads the changelog and :meth:`Ranks.broadcast_records` hands every rank
the same records) and the same model (same seed; :meth:`Ranks.check_same` verifies it at start).
Within each optimiser step every rank draws the same shuffled chunk of positives (the
learn call's shared generator) and trains on its share of it, ``chunk[rank::world]``;
its gradients, weighted by its share of the chunk, are summed over the ranks before the
optimiser step, so every rank takes the step of the whole chunk and the parameters stay
identical. A rank whose share is empty still joins the step with zero gradients: every
rank calls the collectives the same number of times (the step count depends only on the
chunk sizes, which all ranks share). Negatives and neighbourhood samples are drawn per
rank (:meth:`Ranks.own_generator`), which is sound because gradients are reduced first.

The id tables' gradients are reduced row-sparse on gloo (only the rows a rank touched
travel; the rows moved are the union over ranks, the same set on every rank, as
:class:`stream.learn.optimiser.RowAdam` needs), dense elsewhere (NCCL has no sparse
all-reduce). The model version is the learn-call count, the same on every rank. Each key
is published by exactly one rank: the one numbered ``crc32(key as UTF-8) % world``
(stable across processes and restarts, unlike Python's ``hash``).

A single process has no ``Ranks`` (``None``); nothing here runs then.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from stream.learn.local_step import LocalStep
from stream.learn.optimiser import RowAdam
from stream.settings.training import TrainerSettings

Record = tuple[int, int, bytes, bytes | None]
"""A changelog record: partition, offset, key, value (None: a tombstone)."""


class RanksDiverged(RuntimeError):
    """The ranks do not hold the same model (different seed, checkpoint or settings)."""


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job.

    Args:
        rank: this process's rank, ``0 <= rank < world``.
        world: the number of ranks.
        group: the process group (None: the default one).
        sparse: reduce the id tables' gradients row-sparse (gloo) instead of dense.
    """

    rank: int
    world: int
    group: Any = None
    sparse: bool = True

    @classmethod
    def from_env(cls, device: torch.device) -> Ranks | None:
        """The job torchrun started (``WORLD_SIZE`` > 1; ``RANK``, ``MASTER_ADDR``,
        ``MASTER_PORT`` read by ``init_process_group("env://")``), None without one.
        gloo for a CPU trainer, NCCL for CUDA (each local rank on GPU ``LOCAL_RANK``)."""
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return None
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda" and device.index is None:  # one GPU per local rank
            torch.cuda.set_device(local_rank())
        if not dist.is_initialized():
            dist.init_process_group(backend, init_method="env://")
        return cls(dist.get_rank(), dist.get_world_size(), sparse=backend == "gloo")

    # -- ownership --------------------------------------------------------------------

    def owner(self, key: str) -> int:
        """The rank that publishes ``key``."""
        return zlib.crc32(key.encode()) % self.world

    def owned(self, keys: Iterable[str]) -> list[int]:
        """Positions of the keys this rank publishes, in their order."""
        return [k for k, key in enumerate(keys) if self.owner(key) == self.rank]

    def share(self, chunk: Tensor) -> Tensor:
        """This rank's positions of one step's chunk (every ``world``-th, from ``rank``)."""
        return chunk[self.rank :: self.world]

    def own_generator(self, shared: torch.Generator, salt: int) -> torch.Generator:
        """A generator of this rank's own, derived from the learn call's shared one."""
        seed = (shared.initial_seed() * 1_000_003 + (self.rank + 1) * 7919 + salt) % (2**63 - 1)
        return torch.Generator().manual_seed(seed)

    # -- collectives (every rank calls each, in the same order) --------------------------

    def reduce_gradients(self, optimizer: torch.optim.Optimizer, weight: float) -> None:
        """Sum ``weight`` times this rank's gradients over the ranks, in place.

        A parameter with a gradient on any rank gets one on every rank (zeros where this
        rank had none); one with none anywhere keeps none, as in a single process.
        """
        params = [p for group in optimizer.param_groups for p in group["params"]]
        has = torch.tensor([p.grad is not None for p in params], dtype=torch.int32)
        dist.all_reduce(has, op=dist.ReduceOp.MAX, group=self.group)
        row_sparse = self.sparse and isinstance(optimizer, RowAdam)
        tables = optimizer._tables if isinstance(optimizer, RowAdam) else set()
        dense: list[torch.nn.Parameter] = []
        for p, any_rank in zip(params, has.tolist(), strict=True):
            if not any_rank:
                p.grad = None
            elif row_sparse and id(p) in tables:
                grad = _rows_of(p) * weight
                dist.all_reduce(grad, group=self.group)
                p.grad = grad.coalesce()
            else:
                dense.append(p)
        if not dense:
            return
        grads = [
            (p.grad.to_dense() if p.grad is not None else torch.zeros_like(p)).reshape(-1)
            for p in dense
        ]
        flat = torch.cat(grads) * weight
        dist.all_reduce(flat, group=self.group)
        parts = torch.split(flat, [g.numel() for g in grads])
        for p, part in zip(dense, parts, strict=True):
            p.grad = part.view_as(p)

    def broadcast_records(self, records: Sequence[Record] | None) -> list[Record]:
        """Rank 0's ``records`` on every rank (rank 0 passes them, the others None).

        A job's ranks learn what rank 0 read, not what each reads itself: a compacted
        changelog read at different moments holds different records (compaction removes
        superseded ones), and ids take their rows in the order they are first folded, so
        only the same record sequence gives every rank the same graph, rows and batches.
        Plain bytes and integers travel (no pickling).
        """
        if self.rank == 0:
            assert records is not None
            header = torch.tensor(
                [[p, o, len(k), -1 if v is None else len(v)] for p, o, k, v in records],
                dtype=torch.long,
            ).reshape(-1, 4)
            data = b"".join(k + (v or b"") for _, _, k, v in records)
            payload = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else None
            sizes = torch.tensor([len(records), len(data)], dtype=torch.long)
        else:
            sizes = torch.zeros(2, dtype=torch.long)
        dist.broadcast(sizes, 0, group=self.group)
        count, length = (int(v) for v in sizes)
        if self.rank != 0:
            header = torch.zeros(count, 4, dtype=torch.long)
            payload = torch.zeros(length, dtype=torch.uint8) if length else None
        if count:
            dist.broadcast(header, 0, group=self.group)
        if payload is not None:
            dist.broadcast(payload, 0, group=self.group)
        data = payload.numpy().tobytes() if payload is not None else b""
        out: list[Record] = []
        at = 0
        for partition, offset, key_len, value_len in header.tolist():
            key = data[at : at + key_len]
            at += key_len
            value = None if value_len < 0 else data[at : at + value_len]
            at += max(value_len, 0)
            out.append((partition, offset, key, value))
        return out

    def broadcast_text(self, text: str | None) -> str | None:
        """Rank 0's ``text`` on every rank (rank 0 passes it, the others anything), as
        one record's value through :meth:`broadcast_records`."""
        mine = [(0, 0, b"", None if text is None else text.encode("utf-8"))]
        (record,) = self.broadcast_records(mine if self.rank == 0 else None)
        return None if record[3] is None else record[3].decode("utf-8")

    def merge_moved(self, local: LocalStep) -> None:
        """Let a learn call's local step know the rows every rank's steps moved (the
        union: the rows to re-embed are the same on every rank)."""
        moved = local.moved
        counts = torch.tensor([moved.numel(), local.whole_graph_steps], dtype=torch.long)
        every = [torch.zeros_like(counts) for _ in range(self.world)]
        dist.all_gather(every, counts, group=self.group)
        longest = max(int(c[0]) for c in every)
        padded = torch.full((longest,), -1, dtype=torch.long)
        padded[: moved.numel()] = moved
        parts = [torch.zeros_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded, group=self.group)
        union = torch.unique(torch.cat(parts))
        local.absorb(union[union >= 0], sum(int(c[1]) for c in every))

    def check_model(self, settings: TrainerSettings, parameters: Sequence[Tensor]) -> None:
        """:meth:`check_same` on a trainer's settings (its ``device`` aside,
        which may differ per rank) and parameters."""
        meaning = [
            (f.name, getattr(settings, f.name))
            for f in dataclasses.fields(settings)
            if f.name != "device"
        ]
        fingerprint = torch.tensor([zlib.crc32(repr(meaning).encode())])
        self.check_same([fingerprint, *parameters], "settings or parameters")

    def check_same(self, tensors: Sequence[Tensor], what: str = "parameters") -> None:
        """Raise :class:`RanksDiverged` unless every rank holds bit-identical ``tensors``."""
        ours = checksum(tensors)
        low, high = ours.clone(), ours.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN, group=self.group)
        dist.all_reduce(high, op=dist.ReduceOp.MAX, group=self.group)
        if not torch.equal(low, high):
            raise RanksDiverged(
                f"rank {self.rank} of {self.world}: the ranks' {what} differ (checksum "
                f"{ours.tolist()} here); every rank must start from the same seed, settings "
                "and checkpoint"
            )


def checksum(tensors: Sequence[Tensor]) -> Tensor:
    """An exact checksum of the tensors' sizes and bits: ``[count, elements, hash]``
    (int64, wrapping on overflow; equal bits give equal checksums)."""
    elements = combined = 0
    for index, t in enumerate(tensors):
        t = t.detach().cpu().contiguous()
        bits = t.float().view(torch.int32) if t.is_floating_point() else t
        bits = bits.reshape(-1).long()
        weights = torch.arange(1, bits.numel() + 1, dtype=torch.long) % 65_521 + 1
        mixed = int((bits * weights).sum()) * (2 * index + 1) + bits.numel()
        combined = (combined + mixed) % 2**62
        elements += bits.numel()
    return torch.tensor([len(tensors), elements, combined], dtype=torch.long)


def _rows_of(p: torch.nn.Parameter) -> Tensor:
    """``p``'s gradient as a row-sparse tensor (the rows a dense one has non-zero; none:
    empty), the form the gloo sparse all-reduce sums."""
    grad = p.grad
    if grad is not None and grad.is_sparse:
        return grad.coalesce()
    if grad is None:
        rows = torch.zeros(0, dtype=torch.long, device=p.device)
        values = p.new_zeros(0, *p.shape[1:])
    else:
        rows = (grad != 0).reshape(grad.shape[0], -1).any(dim=1).nonzero().flatten()
        values = grad[rows]
    return torch.sparse_coo_tensor(rows[None], values, p.shape, check_invariants=False)


def local_rank() -> int:
    """This process's rank on its machine, as torchrun sets it (0 outside a job). The
    one place besides ``from_env`` that reads torchrun's variables."""
    return int(os.environ.get("LOCAL_RANK", "0"))
