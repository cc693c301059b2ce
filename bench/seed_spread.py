"""How far the default ``incremental`` figures (or ``retrain``'s, ``--method``) move with
nothing but the trainer's seed.

``streamgnn eval`` reports 95 % bootstrap intervals over queries: how much a figure
would move with other users asked. A learnt method also moves with its seed (initial
vectors, negatives, replay draws), which those intervals do not show; a lever whose gain
is smaller than this spread cannot be chosen from one run. Each data set goes through the
default eval protocol (50 % warm-up, 10 chunks, the worker's training settings) with the
protocol's seed fixed at the default for every run, so every seed is scored on the same
queries with the same item tie-break; only ``training.seed`` changes. The baselines run
once (they do not learn from a seed), for the ratio of ``incremental``'s mean to the best
baseline's figure on each metric.

    .venv/bin/python -m bench.seed_spread                       # ML-100K, RetailRocket, seeds 0-4
    .venv/bin/python -m bench.seed_spread --datasets ml-100k --seeds 3
    .venv/bin/python -m bench.seed_spread --datasets ml-100k --seeds 3 --encoder sage \
        --lr 0.01 --out bench/results/seed_spread-sage.json
    .venv/bin/python -m bench.seed_spread --datasets retailrocket --seeds 3 \
        --method retrain --out bench/results/seed_spread-retrain.json

Writes bench/results/seed_spread.json (``--out``): per data set the baselines' figures,
each seed's, and per metric the mean, sample standard deviation, min, max and
mean / best baseline. ``make bench-seed-spread``; about 15 minutes on this 2-core machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from stream.evaluation.catalogue import BASELINES, build_methods
from stream.evaluation.command import method_options, protocol_settings, recipe
from stream.evaluation.data import data_format, read_interactions
from stream.evaluation.metrics import METRICS
from stream.evaluation.prequential import run_prequential
from stream.evaluation.report import figures
from stream.events import Interaction
from stream.settings import Settings, load_settings
from stream.settings.commands import DataSettings

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DATASETS = {
    "ml-100k": DataSettings(SHARED / "ml-100k" / "u.data", "movielens"),
    "retailrocket": DataSettings(SHARED / "retailrocket" / "sampled_events.csv", "retailrocket"),
}
RESULTS = ROOT / "bench" / "results" / "seed_spread.json"
LEARNT = ("incremental", "retrain")  # the methods whose figures a training seed moves


def spread(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), min and max.

    >>> spread([1.0, 2.0, 3.0])
    {'mean': 2.0, 'sd': 1.0, 'min': 1.0, 'max': 3.0}
    """
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "sd": sd, "min": min(values), "max": max(values)}


def run_methods(
    events: Sequence[Interaction], names: Sequence[str], settings: Settings, training_seed: int
) -> dict[str, dict[str, Any]]:
    """Each method's figures (means and intervals) on the default protocol, the trainer
    seeded with ``training_seed`` and everything else as ``settings`` says."""
    training = dataclasses.replace(settings.training, seed=training_seed)
    # the protocol's seed stays ``settings``': the same queries for every training seed
    chosen = recipe(dataclasses.replace(settings, training=training))
    methods = build_methods(names, method_options(settings, chosen))
    result = run_prequential(events, methods, protocol_settings(settings))
    return {
        name: figures(method.per_query(), settings.eval.bootstrap_resamples)
        for name, method in result.methods.items()
    }


def dataset_spread(
    events: Sequence[Interaction],
    seeds: Sequence[int],
    settings: Settings,
    method: str = "incremental",
) -> dict[str, Any]:
    """The baselines once, ``method`` under each seed, and the spread per metric."""
    baselines = run_methods(events, BASELINES, settings, settings.training.seed)
    runs = {seed: run_methods(events, [method], settings, seed)[method]
            for seed in seeds}  # fmt: skip
    summary = {}
    for metric in METRICS:
        best = max(baselines, key=lambda name: baselines[name][metric])
        figures_ = spread([runs[seed][metric] for seed in seeds])
        ratio = figures_["mean"] / baselines[best][metric] if baselines[best][metric] else None
        summary[metric] = {**figures_, "best_baseline": best, "mean_over_best_baseline": ratio}
    return {
        "queries": baselines[BASELINES[0]]["queries"],
        "baselines": baselines,
        f"{method}_by_seed": {str(seed): runs[seed] for seed in seeds},
        f"{method}_spread": summary,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--seeds", type=int, default=5, help="training seeds 0 .. N-1")
    parser.add_argument("--encoder", help="the trainer's encoder (default: the worker's)")
    parser.add_argument(
        "--lr", type=float, help="the trainer's learning rate (default: the worker's)"
    )
    parser.add_argument(
        "--replay-ratio", type=float, help="the trainer's replay ratio (default: the worker's)"
    )
    parser.add_argument("--method", default="incremental", choices=LEARNT, help="the method seeded")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    given = (("encoder", args.encoder), ("lr", args.lr), ("replay_ratio", args.replay_ratio))
    chosen = {k: v for k, v in given if v is not None}
    # as streamgnn eval loads them: an encoder's own defaults (ENCODER_DEFAULTS) apply to
    # what is not given; the environment plays no part
    settings = load_settings({f"training.{k}": str(v) for k, v in chosen.items()}, {})
    seeds = list(range(args.seeds))
    load_before = os.getloadavg()
    results = {}
    for name in args.datasets:
        data = DATASETS[name]
        assert data.path is not None
        events = read_interactions(data.path, data_format(data)).interactions
        results[name] = dataset_spread(events, seeds, settings, args.method)
        print(name, json.dumps(results[name][f"{args.method}_spread"]), flush=True)
    report = {
        "benchmark": f"the default {args.method} method's figures under several training seeds",
        "command": " ".join([Path(sys.executable).name, "-m", "bench.seed_spread", *sys.argv[1:]]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "load_average_1_5_15_min": {"start": load_before, "end": os.getloadavg()},
        },
        "protocol": "streamgnn eval's defaults (50 % warm-up, 10 chunks, protocol seed "
        f"{settings.training.seed}); the trainer's settings the worker's but its seed"
        + "".join(f", {key} {value}" for key, value in chosen.items()),
        "encoder": settings.training.encoder,
        "seeds": seeds,
        "datasets": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
