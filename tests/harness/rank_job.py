"""Trainers as ranks of one gloo job on this machine, for tests and ``bench/scale.py``.

:func:`run_job` spawns ``world`` processes (127.0.0.1, a free port), each running
``target(ranks, *args)`` with its :class:`stream.learn.ranks.Ranks`, and returns each
rank's JSON result. A rank that raises fails the job with its traceback; a collective that
waits past ``collective_timeout_s`` raises in the rank (gloo's timeout), and a job past
``timeout_s`` is killed: a deadlock fails instead of hanging.

:func:`train_stream` is the target the rank tests and the scale benchmark run: one
trainer fed the same batches of events on every rank, reporting per learn call its
parameter and vector checksums and the keys it published at which version.
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from models.ids import KINDS
from stream.behaviours import Behaviour
from stream.events import Interaction
from stream.learn.ranks import Ranks, checksum
from stream.learn.trainer import IncrementalTrainer
from stream.local_broker.broker import free_ports
from stream.settings.training import TrainerSettings

BEHAVIOURS = {"click": Behaviour(1.0, 86_400_000), "purchase": Behaviour(5.0, 864_000_000)}
EPSILON = 1e-3

Target = Callable[..., Any]


def run_job(
    world: int,
    target: Target,
    args: Sequence[Any],
    timeout_s: float = 240.0,
    collective_timeout_s: float = 60.0,
) -> list[Any]:
    """Each rank's ``target(ranks, *args)`` result (JSON-able), in rank order."""
    port = free_ports(1)[0]
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="rank-job-") as tmp:
        outs = [Path(tmp) / f"rank{rank}.json" for rank in range(world)]
        procs = [
            ctx.Process(
                target=_rank_main,
                args=(rank, world, port, collective_timeout_s, target, list(args), outs[rank]),
            )
            for rank in range(world)
        ]
        for proc in procs:
            proc.start()
        deadline = time.monotonic() + timeout_s
        try:
            for proc in procs:
                proc.join(max(0.0, deadline - time.monotonic()))
        finally:
            hung = [rank for rank, proc in enumerate(procs) if proc.is_alive()]
            for proc in procs:
                if proc.is_alive():
                    proc.kill()
                    proc.join()
        results = [json.loads(out.read_text()) if out.exists() else None for out in outs]
    errors = [
        f"rank {rank}: {r['error'] if r else f'exit {procs[rank].exitcode}, no result'}"
        for rank, r in enumerate(results)
        if r is None or "error" in r
    ]
    if hung:
        raise TimeoutError(f"ranks {hung} still running after {timeout_s} s (deadlock?)")
    if errors:
        raise RuntimeError("rank job failed:\n" + "\n".join(errors))
    return [r["result"] for r in results if r is not None]


def _rank_main(
    rank: int,
    world: int,
    port: int,
    collective_timeout_s: float,
    target: Target,
    args: list[Any],
    out: Path,
) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    try:
        dist.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=world,
            timeout=datetime.timedelta(seconds=collective_timeout_s),
        )
        try:
            result = target(Ranks(rank, world), *args)
        finally:
            dist.destroy_process_group()
        out.write_text(json.dumps({"result": result}))
    except BaseException:
        out.write_text(json.dumps({"error": traceback.format_exc()}))
        raise SystemExit(1) from None


def events_of(rows: Sequence[Sequence[Any]]) -> list[Interaction]:
    """Interactions from ``(user, item, event_type, ts)`` rows."""
    return [Interaction(str(u), str(i), str(kind), int(ts)) for u, i, kind, ts in rows]


def train_stream(
    ranks: Ranks | None,
    settings: dict[str, Any],
    batches: list[list[list[Any]]],
    check_every_step: bool = True,
) -> dict[str, Any]:
    """Feed ``batches`` of ``(user, item, event_type, ts)`` rows to one trainer (a rank of
    a job, or alone with ``ranks`` None); per learn call: ``params`` and ``vectors``
    checksums, ``published`` ``{kind: keys}``, ``version``; and ``seconds`` learning. A
    job of one rank runs as a single process does (no ranks)."""
    ranks = ranks if ranks is not None and ranks.world > 1 else None
    trainer = IncrementalTrainer(TrainerSettings(**settings), BEHAVIOURS, EPSILON, ranks)
    steps: list[dict[str, Any]] = []
    seconds = 0.0
    for rows in batches:
        start = time.perf_counter()
        report = trainer.learn(events_of(rows))
        seconds += time.perf_counter() - start
        record: dict[str, Any] = {
            "version": report.model_version,
            "steps": report.steps,
            "published": {"user": report.changed_users, "item": report.changed_items},
            # rows re-embedded by kind (None: all, after a full step or a large local one)
            "reembedded": {
                kind: None if rows is None else rows.numel()
                for kind, rows in trainer.reembedded.items()
            },
        }
        if check_every_step:
            trainer.check_ranks()  # raises when the ranks' parameters differ
            record["params"] = checksum(trainer._parameters()).tolist()
            latest = trainer._current()
            record["vectors"] = checksum([latest[kind] for kind in KINDS]).tolist()
        steps.append(record)
    return {"steps": steps, "seconds": seconds, "events": sum(len(b) for b in batches)}
