"""Incremental update vs full retrain: compute per 1,000 new events, at matched quality.

What it measures, on ML-100K by default, through the same prequential protocol, store and
trainer code as ``streamgnn eval`` (:func:`stream.evaluation.prequential.run_prequential`,
:mod:`stream.evaluation.methods`):

- The stream is the eval's: sorted by time, a 50 % warm-up, the rest in 10 equal chunks.
  The first ``--chunks`` of them are played, the same events for every method (4 by
  default: the retrains are the costly part; 4 took 12 minutes on a busy 2-core machine,
  all 10 take well over half an hour).
- ``incremental``: a model fitted once on the warm-up (``--warmup-epochs``, a one-time
  cost reported apart), then :meth:`IncrementalTrainer.learn` on every micro-batch.
- ``retrain@E`` for each ``--epochs`` E: a fresh trainer fitted from scratch for E epochs
  on the whole graph before every chunk is scored.
- ``static``: the warm-up model never updated (a floor: shows what updating buys).

Every method is scored on each chunk before it learns the chunk (Recall@20, NDCG@20, MRR).
Cost is what keeping a method current takes: wall seconds and CPU seconds (process time,
all threads) of its ``prepare`` + ``learn`` calls, per 1,000 events played. "Same quality"
is concrete: the retrain costed is the cheapest budget whose Recall@20 is at least the
incremental method's; if no budget gets there, the one with the best Recall@20 (and the
document says the quality was not matched). The ratio is retrain / incremental cost.

Run: ``make bench-retrain`` or
``.venv/bin/python -m bench.incremental_vs_retrain [--chunks 10] [--epochs 1,2,5,10,20,40]``
(about 10 minutes on 2 shared CPU cores); writes bench/results/incremental_vs_retrain.json.
Torch runs on ``--threads`` 1 by default, so CPU seconds are the work done and wall
seconds do not hinge on how many cores other jobs leave free.
``--device cuda`` runs the trainers on a GPU; the document records the device.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import itertools
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from stream.behaviours import DEFAULT_BEHAVIOURS, Behaviour
from stream.evaluation.data import read_interactions, table_format
from stream.evaluation.methods import FullRetrain, IncrementalModel, StaticModel, TrainerRecipe
from stream.evaluation.metrics import METRICS
from stream.evaluation.prequential import Method, ProtocolSettings, run_prequential, split_stream
from stream.events import Interaction
from stream.learn.device import resolve_device
from stream.settings.training import TrainerSettings
from stream.state.graph_store import DecayedGraphStore

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "ml-100k" / "u.data"
RESULTS = ROOT / "bench" / "results" / "incremental_vs_retrain.json"
GOAL = 20.0  # retrain cost / incremental cost, at the same quality
QUALITY = "recall@20"
KEYS = (
    "benchmark", "command", "date", "device", "dataset", "settings", "methods",
    "same_quality", "incremental_seconds_per_1000_events", "retrain_seconds_per_1000_events",
    "ratio", "ratio_cpu", "ratio_at_incremental_freshness", "goal", "goal_met", "notes",
)  # fmt: skip


@dataclass(frozen=True)
class BenchSettings:
    """Args:
    trainer: the trainer of every model method (its ``device`` picks CPU or CUDA).
    epochs: the retrain budgets tried, in epochs of one from-scratch fit.
    warmup_epochs: epochs of the incremental method's one warm-up fit (the eval's 20).
    chunks: how many of the eval's chunks to play (the first ones).
    warmup, eval_chunks: the eval's split of the stream (50 % warm-up, 10 chunks).
    micro_batch: events per store write and incremental learn call.
    behaviours, epsilon, seed: the store's configuration and the tie-break seed.
    """

    trainer: TrainerSettings = field(default_factory=TrainerSettings)
    epochs: tuple[int, ...] = (1, 2, 5, 10, 20, 40)
    warmup_epochs: int = 20
    chunks: int = 4
    warmup: float = 0.5
    eval_chunks: int = 10
    micro_batch: int = 1_000
    behaviours: Mapping[str, Behaviour] = field(default_factory=lambda: DEFAULT_BEHAVIOURS)
    epsilon: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.epochs or any(e < 1 for e in self.epochs):
            raise ValueError(f"epochs must be a non-empty list of ints >= 1, got {self.epochs}")
        if len(set(self.epochs)) != len(self.epochs):
            raise ValueError(f"epochs must not repeat, got {self.epochs}")
        if self.warmup_epochs < 1:
            raise ValueError(f"warmup_epochs must be >= 1, got {self.warmup_epochs}")
        if not 1 <= self.chunks <= self.eval_chunks:
            raise ValueError(f"chunks must be in 1..{self.eval_chunks}, got {self.chunks}")


class MeteredMethod(Method):
    """Wraps a method; meters wall and CPU seconds of its upkeep (prepare + learn)."""

    def __init__(self, inner: Method, name: str, device: torch.device) -> None:
        self.inner, self.name, self.updates = inner, name, inner.updates
        self._cuda = device.type == "cuda"
        self.warmup_seconds = self.seconds = self.cpu_seconds = 0.0
        self.prepares = self.learns = 0

    def _timed(self, call: Callable[[], None]) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        call()
        if self._cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - wall, time.process_time() - cpu

    def start(self, store: DecayedGraphStore) -> None:
        self.warmup_seconds, _ = self._timed(lambda: self.inner.start(store))

    def prepare(self, store: DecayedGraphStore) -> None:
        self._upkeep(self._timed(lambda: self.inner.prepare(store)))
        self.prepares += 1

    def learn(self, store: DecayedGraphStore, batch: Sequence[Interaction]) -> None:
        self._upkeep(self._timed(lambda: self.inner.learn(store, batch)))
        self.learns += 1

    def _upkeep(self, spent: tuple[float, float]) -> None:
        self.seconds += spent[0]
        self.cpu_seconds += spent[1]

    def scores(self, users: Sequence[str], items: Sequence[str]) -> Tensor:
        return self.inner.scores(users, items)

    def close(self) -> None:
        self.inner.close()


def eval_prefix(
    stream: Sequence[Interaction], settings: BenchSettings
) -> tuple[list[Interaction], ProtocolSettings]:
    """The eval's warm-up plus its first ``settings.chunks`` chunks, and a protocol that
    splits exactly that back into the same warm-up and chunks."""
    eval_split = ProtocolSettings(warmup=settings.warmup, chunks=settings.eval_chunks)
    warm, chunks = split_stream(stream, eval_split)
    kept = chunks[: settings.chunks]
    prefix = warm + list(itertools.chain.from_iterable(kept))
    protocol = ProtocolSettings(
        warmup=(len(warm) + 0.5) / len(prefix),  # int(len * warmup) == len(warm)
        chunks=len(kept),
        micro_batch=settings.micro_batch,
        behaviours=settings.behaviours,
        epsilon=settings.epsilon,
        seed=settings.seed,
    )
    again_warm, again = split_stream(prefix, protocol)
    if len(again_warm) != len(warm) or [len(c) for c in again] != [len(c) for c in kept]:
        raise RuntimeError("the prefix does not split back into the eval's chunks")
    return prefix, protocol


def measure(
    stream: Sequence[Interaction],
    settings: BenchSettings,
    command: str,
    dataset: Mapping[str, Any],
    progress: Callable[[int, int, str], None] | None = None,
) -> dict[str, Any]:
    """Play the stream prefix through every method; the JSON document (keys: ``KEYS``)."""
    prefix, protocol = eval_prefix(stream, settings)
    device = resolve_device(settings.trainer.device)
    behaviours = dict(settings.behaviours)
    warm_recipe = TrainerRecipe(
        settings.trainer, behaviours, settings.epsilon, settings.warmup_epochs
    )
    static = StaticModel(warm_recipe)
    methods = [
        MeteredMethod(static, "static", device),
        MeteredMethod(IncrementalModel(warm_recipe, lambda: static.trainer), "incremental", device),
    ]
    for epochs in settings.epochs:
        recipe = dataclasses.replace(warm_recipe, epochs=epochs)
        methods.append(MeteredMethod(FullRetrain(recipe), f"retrain@{epochs}", device))
    began = time.perf_counter()
    load = os.getloadavg()
    result = run_prequential(prefix, methods, protocol, progress=progress)
    events = sum(info.events for info in result.chunks)
    figures: dict[str, dict[str, Any]] = {}
    for method in methods:
        totals = result.methods[method.name].totals()
        epochs_of = method.name.partition("@")[2]
        figures[method.name] = {
            **totals.means(),
            "queries": totals.queries,
            "per_chunk_recall@20": [
                c.metrics.means()[QUALITY] for c in result.methods[method.name].chunks
            ],
            **({"epochs": int(epochs_of)} if epochs_of else {}),
            "retrains": method.prepares if epochs_of else 0,
            "learn_calls": method.learns if method.name == "incremental" else 0,
            "warmup_seconds": method.warmup_seconds,
            "seconds": method.seconds,
            "cpu_seconds": method.cpu_seconds,
            "events": events,
            "seconds_per_1000_events": 1000 * method.seconds / events,
            "cpu_seconds_per_1000_events": 1000 * method.cpu_seconds / events,
        }
    incremental = figures["incremental"]
    incremental["warmup_seconds"] += figures["static"]["warmup_seconds"]  # its warm-up fit
    for name, f in figures.items():
        if name.startswith("retrain@"):
            f["seconds_per_retrain"] = f["seconds"] / f["retrains"]
            f["ratio_to_incremental"] = f["seconds"] / incremental["seconds"]
    chosen, matched = choose_retrain(figures)
    retrain = figures[chosen]
    ratio = retrain["seconds_per_1000_events"] / incremental["seconds_per_1000_events"]
    # A retrain-only system as fresh as the incremental one refits every micro-batch.
    fresh = 1000 * retrain["seconds_per_retrain"] / settings.micro_batch
    chunk_events = [info.events for info in result.chunks]
    return {
        "benchmark": "incremental_vs_retrain",
        "command": command,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "device": device_info(device),
        "dataset": dict(dataset),
        "settings": {
            "warmup_events": result.warmup_events,
            "eval_split": {"warmup": settings.warmup, "chunks": settings.eval_chunks},
            "chunks_played": len(chunk_events),
            "chunk_events": chunk_events,
            "micro_batch": settings.micro_batch,
            "retrain_epochs": list(settings.epochs),
            "incremental_warmup_epochs": settings.warmup_epochs,
            "seed": settings.seed,
            "trainer": _jsonable(
                {
                    f.name: getattr(settings.trainer, f.name)
                    for f in dataclasses.fields(TrainerSettings)
                }
            ),
            "wall_seconds": time.perf_counter() - began,
            "load_average_before_after": [round(load[0], 2), round(os.getloadavg()[0], 2)],
        },
        "methods": figures,
        "same_quality": {
            "metric": QUALITY,
            "incremental": incremental[QUALITY],
            "retrain": chosen,
            "retrain_value": retrain[QUALITY],
            "matched": matched,
            "rule": "cheapest retrain budget with recall@20 >= incremental's; if none, the "
            "budget with the best recall@20 (matched false)",
        },
        "incremental_seconds_per_1000_events": incremental["seconds_per_1000_events"],
        "retrain_seconds_per_1000_events": retrain["seconds_per_1000_events"],
        "ratio": ratio,
        "ratio_cpu": retrain["cpu_seconds_per_1000_events"]
        / incremental["cpu_seconds_per_1000_events"],
        "ratio_at_incremental_freshness": fresh / incremental["seconds_per_1000_events"],
        "goal": GOAL,
        "goal_met": ratio >= GOAL,
        "notes": NOTES,
    }


NOTES = [
    "seconds are wall seconds of prepare + learn (what keeping the method current costs; "
    "scoring is excluded); cpu_seconds are process time over all threads in those calls",
    "ratio is at the retrain cadence the quality was measured under (one from-scratch fit "
    "per chunk); ratio_at_incremental_freshness costs a retrain after every micro-batch, "
    "which is how fresh the incremental vectors are",
    "the incremental method's warm-up fit (warmup_seconds) is a one-time cost, not counted "
    "per 1,000 events; a retrain's cost grows with the graph, so later chunks cost more",
    "quality is over the scored users of the chunks played (queries); a few hundred "
    "queries leave differences of about 0.01-0.02 in recall@20 within noise",
]


def choose_retrain(figures: Mapping[str, Mapping[str, Any]]) -> tuple[str, bool]:
    """``(retrain name, matched)``: see :data:`NOTES` and the module docstring."""
    target = figures["incremental"][QUALITY]
    retrains = {n: f for n, f in figures.items() if n.startswith("retrain@")}
    good = [n for n, f in retrains.items() if f[QUALITY] >= target]
    if good:
        return min(good, key=lambda n: retrains[n]["seconds"]), True
    return min(retrains, key=lambda n: (-retrains[n][QUALITY], retrains[n]["seconds"])), False


def device_info(device: torch.device) -> dict[str, Any]:
    return {
        "kind": device.type,
        "name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "processor": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def _progress(began: float) -> Callable[[int, int, str], None]:
    def report(done: int, total: int, what: str) -> None:
        print(f"[{time.perf_counter() - began:7.1f}s] {done}/{total} {what}", file=sys.stderr)

    return report


def _epochs(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected e.g. 1,2,5,10,20, got {text!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    defaults = BenchSettings()
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data", type=Path, default=DATA, help="MovieLens u.data")
    parser.add_argument("--chunks", type=int, default=defaults.chunks, help="eval chunks to play")
    parser.add_argument(
        "--epochs",
        type=_epochs,
        default=",".join(map(str, defaults.epochs)),
        help="retrain budgets, comma list",
    )
    parser.add_argument(
        "--warmup-epochs", type=int, default=defaults.warmup_epochs, help="incremental warm-up"
    )
    parser.add_argument("--encoder", default="lightgcn")
    parser.add_argument("--device", default="cpu", help="cpu, cuda[:n] or auto")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=RESULTS, help="where to write")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    settings = BenchSettings(
        trainer=TrainerSettings(encoder=args.encoder, device=args.device, seed=args.seed),
        epochs=args.epochs,
        warmup_epochs=args.warmup_epochs,
        chunks=args.chunks,
        seed=args.seed,
    )
    loaded = read_interactions(args.data, table_format("movielens"))
    dataset = {"path": str(args.data), "events": len(loaded.interactions)}
    python = os.path.relpath(sys.executable)
    command = shlex.join([sys.executable if python.startswith("..") else python, *sys.argv])
    document = measure(
        loaded.interactions, settings, command, dataset, _progress(time.perf_counter())
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=2) + "\n")
    print(summary(document))
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


def summary(document: Mapping[str, Any]) -> str:
    head = f"{'method':<12} " + " ".join(f"{m:>9}" for m in METRICS)
    head += f" {'s/1k ev':>8} {'cpu/1k':>8}"
    lines = [head, "-" * len(head)]
    for name, f in document["methods"].items():
        quality = " ".join(f"{f[m]:>9.4f}" for m in METRICS)
        lines.append(
            f"{name:<12} {quality} {f['seconds_per_1000_events']:>8.3f} "
            f"{f['cpu_seconds_per_1000_events']:>8.3f}"
        )
    same = document["same_quality"]
    lines.append(
        f"ratio {document['ratio']:.1f} ({same['retrain']} vs incremental, quality matched: "
        f"{same['matched']}); goal >= {document['goal']:g}: "
        f"{'met' if document['goal_met'] else 'NOT met'}"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
