"""Seconds per learn step at 100k, 1M and 10M edges: the full-graph step vs the local one.

A synthetic power-law bipartite graph (bench.propagation's: users = edges / 7, items =
edges / 14, three relations, random weights, each (user, item, relation) once) is loaded
straight into a trainer's mirror and id registry (no Kafka, no store); then each learn call
gets the same number of new events (``--batch``, default 1,000: users uniform, items by the
graph's power law, one second apart). The first ``--warmup`` calls of a trainer (default 3)
are not timed: they pay what a running worker pays once (the first embeds every row; the
first sampled one builds the mirror's index; the first moves of rows fault in the pages of
their optimiser state, allocated zeroed for the whole table); the median of the next
``--steps`` calls is, per size and per ``step_scope``, with the trainer's default settings
otherwise (64 uniform negatives per positive, replay ratio 1, fan-out 10, a sweep of 1,024
rows per kind, two layers, the score prior).

A second local configuration, ``local-shared``, draws 64 negatives shared by the whole
step instead of 64 per positive: a local step scores each negative from its own row (no
tree), so the two differ by ~128k negative rows' gathers, scores and row-wise Adam.
``local-history`` and ``local-history-shared`` are the same with layer history
(``layer_history``: one hop around the seeds, the neighbours' deeper layers as of their
last embedding); their first, untimed call steps on the whole graph (nothing kept yet).

With ``--interleave`` every size's trainer is loaded at once (one configuration at a time:
~11 GB at 10M edges) and call ``k`` is timed for every size before call ``k + 1`` for any:
this machine's speed moves by tens of percent within the hour, and sizes timed one after
another read that drift as cost (their ratio moved 1.42x -> 1.86x between two runs; taken
in turn, 1.55x and 1.58x while every figure moved 1.6x).

    .venv/bin/python -m bench.step_cost                      # 100k, 1M, 10M edges
    .venv/bin/python -m bench.step_cost --sizes 100000 --steps 3
    .venv/bin/python -m bench.step_cost --configs local-history-shared --steps 15 --interleave

Writes bench/results/step_cost.json (``--out``): the command, date, machine, settings and
per size and configuration ``seconds`` (median), ``seconds_all`` and ``edges``, the local
step's fallbacks and, for bounded calls, their work (``step_edges_max``,
``reembed_edges_max``: edges drawn from the mirror's index; ``moved_rows_max``: rows the
optimiser moved), which follows the batch, not the graph, ``nodes`` (users plus items)
and ``huge_page_share`` (of the process's anonymous memory, after the calls: huge pages the
kernel could not back cost a TLB miss per row again); plus, per local configuration,
``<config>_10m_over_100k`` (``local_10m_over_100k``, ...), the goal being at most 1.5, and
``<config>_10m_over_1m``. At 100k edges (21k nodes) a
step's neighbourhood holds most of the graph's nodes (its moved rows are ~70 % of them), so
from 100k to 10M the rows a step moves still grow (~15k to ~34k with layer history and
shared negatives); from 1M (214k nodes) to 10M they barely do.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import torch

from bench.propagation import NUM_RELATIONS, synthetic_graph
from models.base import BipartiteGraph
from stream.allocator import huge_page_share, worker_heap
from stream.behaviours import DAY_MS, Behaviour
from stream.events import Interaction
from stream.learn.graph_mirror import GraphMirror, slot_keys
from stream.learn.trainer import IncrementalTrainer
from stream.settings.sections import WorkerSettings
from stream.settings.training import TrainerSettings

RESULTS = Path(__file__).parent / "results" / "step_cost.json"
BEHAVIOURS = {
    name: Behaviour(beta, half_life)
    for name, beta, half_life in (
        ("click", 1.0, DAY_MS),
        ("cart", 3.0, 7 * DAY_MS),
        ("purchase", 5.0, 30 * DAY_MS),
    )
}
EPSILON = 1e-3
NOW = 1_700_000_000_000
CONFIGS: dict[str, dict[str, Any]] = {
    "full": {"step_scope": "full"},
    "local": {"step_scope": "local"},
    "local-shared": {"step_scope": "local", "negatives": "shared"},
    "local-history": {"step_scope": "local", "layer_history": True},
    "local-history-shared": {"step_scope": "local", "layer_history": True, "negatives": "shared"},
}


def loaded_trainer(graph: BipartiteGraph, settings: TrainerSettings) -> IncrementalTrainer:
    """A trainer whose registry holds ``u<row>`` / ``i<row>`` and whose mirror holds
    ``graph`` (edges last seen within the last hour, so nothing decays away)."""
    trainer = IncrementalTrainer(settings, BEHAVIOURS, EPSILON)
    for kind, count in (("user", graph.num_users), ("item", graph.num_items)):
        trainer.registry.assign(kind, [f"{kind[0]}{r}" for r in range(count)], NOW)
    trainer._grow()
    gen = torch.Generator().manual_seed(0)  # a trainer's work: a function of its graph alone
    times = NOW - torch.randint(0, 3_600_000, (graph.num_edges,), dtype=torch.long, generator=gen)
    fill_mirror(trainer.mirror, graph, times)
    return trainer


def fill_mirror(mirror: GraphMirror, graph: BipartiteGraph, times: torch.Tensor) -> None:
    """Put every edge into ``mirror`` as :meth:`GraphMirror.load_edges` would (partition 0),
    filling its arrays in bulk: 10M edges as Python objects would not fit the time."""
    n = graph.num_edges
    mirror._grow(max(1024, n))
    mirror._users[:n], mirror._items[:n] = graph.users, graph.items
    mirror._relations[:n], mirror._t_ref[:n] = graph.relations, times
    mirror._w_ref[:n] = graph.weights.double()
    mirror._alive[:n] = True
    keys = slot_keys(graph.users, graph.items, graph.relations)
    mirror._index = dict(zip(keys, range(n), strict=True))
    mirror._used = n
    mirror.advance(NOW, [0])


def batch_events(graph: BipartiteGraph, size: int, step: int) -> list[Interaction]:
    gen = torch.Generator().manual_seed(1_000 + step)
    users = torch.randint(0, graph.num_users, (size,), generator=gen).tolist()
    items = (torch.rand(size, generator=gen).pow(2) * graph.num_items).long().tolist()
    kinds = torch.randint(0, NUM_RELATIONS, (size,), generator=gen).tolist()
    names = sorted(BEHAVIOURS)
    t0 = NOW + 1_000 * size * step
    return [
        Interaction(f"u{u}", f"i{i}", names[k], t0 + 1_000 * j)
        for j, (u, i, k) in enumerate(zip(users, items, kinds, strict=True))
    ]


def time_steps(
    trainer: IncrementalTrainer, graph: BipartiteGraph, batch: int, steps: int, warmup: int = 3
) -> tuple[list[float], dict[str, int]]:
    """Seconds of each timed learn call, how many of them ran an optimiser step on the
    whole graph or re-embedded every row (a local step's fallbacks), the most rows a call
    re-embedded otherwise, and a bounded call's work: the most edges its step's samples
    and its re-embedding drew from the index, and rows its optimiser moved."""
    warm(trainer, graph, batch, warmup)
    tally = new_tally()
    seconds = [
        timed_call(trainer, graph, batch, step, tally) for step in range(warmup, warmup + steps)
    ]
    return seconds, tally


def warm(trainer: IncrementalTrainer, graph: BipartiteGraph, batch: int, warmup: int) -> None:
    """The untimed first calls of ``batch`` events: one-off costs (the module docstring)."""
    for call in range(warmup):
        trainer.learn(batch_events(graph, batch, call))


def new_tally() -> dict[str, int]:
    """:func:`timed_call`'s counters, zero."""
    fallbacks = {"whole_graph_steps": 0, "whole_graph_reembeds": 0, "reembedded_rows_max": 0}
    return {**fallbacks, "step_edges_max": 0, "reembed_edges_max": 0, "moved_rows_max": 0}


def timed_call(
    trainer: IncrementalTrainer, graph: BipartiteGraph, batch: int, step: int, tally: dict[str, int]
) -> float:
    """Seconds of learn call ``step`` (its ``batch`` events: :func:`batch_events`); its
    fallbacks and work counted into ``tally`` (see :func:`time_steps`)."""
    events = batch_events(graph, batch, step)
    start = time.perf_counter()
    trainer.learn(events)
    seconds = time.perf_counter() - start
    local = trainer.last_step
    tally["whole_graph_steps"] += local.whole_graph_steps if local is not None else 0
    if local is not None and not local.whole_graph_steps:
        for key, count in (
            ("step_edges_max", local.step_edges),
            ("reembed_edges_max", local.reembed_edges),
            ("moved_rows_max", int(local.moved.numel())),
        ):
            tally[key] = max(tally[key], count)
    rows = trainer.reembedded
    if rows["user"] is None or rows["item"] is None:
        tally["whole_graph_reembeds"] += 1
    else:
        count = int(rows["user"].numel() + rows["item"].numel())
        tally["reembedded_rows_max"] = max(tally["reembedded_rows_max"], count)
    return seconds


def interleaved(
    sizes: list[int], settings: TrainerSettings, batch: int, steps: int, warmup: int
) -> dict[int, tuple[list[float], dict[str, int], IncrementalTrainer, BipartiteGraph]]:
    """:func:`time_steps` for every size at once: each size's trainer loaded and warmed,
    then call ``k`` timed for every size before call ``k + 1`` for any, so a change of the
    machine's speed during the run weighs on every size alike (this 2-core machine's moves
    by tens of percent within the hour; sizes timed one after another read it as cost)."""
    graphs = {size: synthetic_graph(size, "cpu") for size in sizes}
    trainers = {size: loaded_trainer(graphs[size], settings) for size in sizes}
    for size in sizes:
        warm(trainers[size], graphs[size], batch, warmup)
    seconds: dict[int, list[float]] = {size: [] for size in sizes}
    tallies = {size: new_tally() for size in sizes}
    for step in range(warmup, warmup + steps):
        for size in sizes:
            seconds[size].append(
                timed_call(trainers[size], graphs[size], batch, step, tallies[size])
            )
    return {size: (seconds[size], tallies[size], trainers[size], graphs[size]) for size in sizes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--batch", type=int, default=1_000, help="events per learn call")
    parser.add_argument("--steps", type=int, default=5, help="timed learn calls per case")
    parser.add_argument("--warmup", type=int, default=3, help="untimed learn calls first")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (make gpu-check)")
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="load every size's trainer at once and take their timed calls in turn",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    # the worker's heap options (stream/allocator.py), so a step costs what it costs there
    heap = worker_heap(WorkerSettings())
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()  # other jobs on the machine slow every figure alike
    base = TrainerSettings(device=args.device, max_users=4_000_000, max_items=4_000_000)
    results: list[dict[str, Any]] = []

    def record(
        size: int,
        name: str,
        seconds: list[float],
        tally: dict[str, int],
        trainer: IncrementalTrainer,
        graph: BipartiteGraph,
    ) -> None:
        row = {
            "edges": size,
            "nodes": graph.num_users + graph.num_items,
            "config": name,
            "seconds": statistics.median(seconds),
            "seconds_all": seconds,
            **tally,
            "index_rebuilds": trainer.mirror.index.rebuilds,
            "rss_gb": psutil.Process().memory_info().rss / 2**30,  # interleaved: every size's
            "huge_page_share": huge_page_share(),
        }
        print(json.dumps(row), flush=True)
        results.append(row)

    if args.interleave:
        for name in args.configs:
            settings = dataclasses.replace(base, **CONFIGS[name])
            timed = interleaved(args.sizes, settings, args.batch, args.steps, args.warmup)
            for size, (seconds, tally, trainer, graph) in timed.items():
                record(size, name, seconds, tally, trainer, graph)
            del timed
            gc.collect()
    else:
        for size in args.sizes:
            graph = synthetic_graph(size, "cpu")  # the mirror lives on the host
            for name in args.configs:
                settings = dataclasses.replace(base, **CONFIGS[name])
                trainer = loaded_trainer(graph, settings)
                seconds, tally = time_steps(trainer, graph, args.batch, args.steps, args.warmup)
                record(size, name, seconds, tally, trainer, graph)
                del trainer
                gc.collect()
    report = {
        "command": " ".join([Path(sys.executable).name, "-m", "bench.step_cost", *sys.argv[1:]]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch_threads": args.threads,
            **heap,
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "torch": torch.__version__,
            "load_average_1_5_15_min": {"start": load_before, "end": os.getloadavg()},
        },
        "settings": {
            "batch_events": args.batch,
            "timed_steps": args.steps,
            "untimed_first_calls": args.warmup,
            "interleaved": args.interleave,
            "trainer": {
                f.name: getattr(base, f.name)
                for f in dataclasses.fields(base)
                if f.name != "encoder_options"
            },
            "configs": CONFIGS,
        },
        "results": results,
    }
    by = {(r["edges"], r["config"]): r["seconds"] for r in results}
    for name in CONFIGS:
        for small, label in ((100_000, "100k"), (1_000_000, "1m")):
            if name != "full" and (10_000_000, name) in by and (small, name) in by:
                ratio = by[10_000_000, name] / by[small, name]
                report[f"{name.replace('-', '_')}_10m_over_{label}"] = ratio
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
