"""What ``streamgnn eval`` hands back: a JSON document, a table and a plot.

Every figure comes with its 95 % percentile bootstrap interval over queries
(:mod:`stream.evaluation.bootstrap`), overall and for cold users (fewer than
:data:`COLD_BELOW` events before the chunk) and warm users apart. A model method is also
compared with the best baseline (by Recall@20) on paired resamples of the same queries.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from stream.errors import ConfigError
from stream.evaluation import bootstrap
from stream.evaluation.metrics import METRICS, QueryMetrics
from stream.evaluation.prequential import PrequentialResult

COLD_BELOW = 5  # prior events: a user with fewer is cold


def _values(queries: Sequence[QueryMetrics], metric: str) -> list[float]:
    field = {"recall@20": "recall", "ndcg@20": "ndcg", "mrr": "mrr"}[metric]
    return [getattr(q, field) for q in queries]


def figures(
    queries: Sequence[QueryMetrics],
    resamples: int = bootstrap.RESAMPLES,
    seed: int = bootstrap.SEED,
) -> dict[str, Any]:
    """Means and intervals (over ``resamples`` bootstrap resamples) of every metric."""
    out: dict[str, Any] = {"queries": len(queries)}
    for metric in METRICS:
        values = _values(queries, metric)
        out[metric] = sum(values) / len(values) if values else 0.0
        interval = bootstrap.mean_interval(values, resamples, seed)
        out[f"{metric}_ci95"] = list(interval) if interval else None
    return out


def split_cold_warm(
    queries: Sequence[QueryMetrics], prior_events: Sequence[int]
) -> tuple[list[QueryMetrics], list[QueryMetrics]]:
    """``(cold, warm)``: queries of users with fewer than :data:`COLD_BELOW` prior events."""
    if len(queries) != len(prior_events):
        raise ValueError(f"{len(queries)} queries but {len(prior_events)} prior-event counts")
    cold = [q for q, n in zip(queries, prior_events, strict=True) if n < COLD_BELOW]
    warm = [q for q, n in zip(queries, prior_events, strict=True) if n >= COLD_BELOW]
    return cold, warm


def result_document(
    result: PrequentialResult,
    baselines: Sequence[str] = (),
    resamples: int = bootstrap.RESAMPLES,
    **context: Any,
) -> dict[str, Any]:
    """The JSON report: ``context`` (dataset, encoder, ...), per-method figures, machine.

    Intervals are over ``resamples`` bootstrap resamples of the queries.
    """
    methods: dict[str, Any] = {}
    learnt_events = sum(info.events for info in result.chunks)
    for name, method in result.methods.items():
        seconds = method.learn_seconds
        per_chunk = [
            {
                "chunk": info.index,
                "events": info.events,
                "queries": chunk.metrics.queries,
                **chunk.metrics.means(),
                "seconds": chunk.learn_seconds,
                "cpu_seconds": chunk.learn_cpu_seconds,
                "score_seconds": chunk.score_seconds,
            }
            for info, chunk in zip(result.chunks, method.chunks, strict=True)
        ]
        queries = method.per_query()
        cold, warm = split_cold_warm(queries, result.prior_events)
        methods[name] = {
            **figures(queries, resamples),
            "cold": figures(cold, resamples),
            "warm": figures(warm, resamples),
            "seconds": seconds,
            "cpu_seconds": method.learn_cpu_seconds,
            "score_seconds": method.score_seconds,
            "warmup_seconds": method.warmup_seconds,
            "warmup_cpu_seconds": method.warmup_cpu_seconds,
            "events_per_second": learnt_events / seconds if seconds > 0 else None,
            "tuning": result.described.get(name, {}),
            "per_chunk": per_chunk,
        }
    present = [b for b in baselines if b in methods]
    _compare_with_best_baseline(result, methods, present, resamples)
    return {
        **context,
        "bootstrap": {
            "resamples": resamples,
            "level": bootstrap.LEVEL,
            "seed": bootstrap.SEED,
            "cold_below_prior_events": COLD_BELOW,
        },
        "warmup_events": result.warmup_events,
        "chunks": [vars(info) for info in result.chunks],
        "methods": methods,
        "machine": machine(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def _compare_with_best_baseline(
    result: PrequentialResult,
    methods: dict[str, Any],
    baselines: Sequence[str],
    resamples: int = bootstrap.RESAMPLES,
) -> None:
    """``vs_best_baseline`` on every other method: paired intervals of the differences."""
    if not baselines:
        return
    best = max(baselines, key=lambda b: methods[b]["recall@20"])
    reference = result.methods[best].per_query()
    for name, method in result.methods.items():
        if name in baselines:
            continue
        mine = method.per_query()
        comparison: dict[str, Any] = {"baseline": best}
        for metric in METRICS:
            base = methods[best][metric]
            comparison[f"{metric}_ratio"] = methods[name][metric] / base if base else None
            interval = bootstrap.difference_interval(
                _values(mine, metric), _values(reference, metric), resamples
            )
            comparison[f"{metric}_diff_ci95"] = list(interval) if interval else None
        methods[name]["vs_best_baseline"] = comparison


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def _with_interval(figure: dict[str, Any], metric: str) -> str:
    interval = figure[f"{metric}_ci95"]
    if interval is None:
        return f"{figure[metric]:.4f} [  -  ,  -  ]"
    return f"{figure[metric]:.4f} [{interval[0]:.3f},{interval[1]:.3f}]"


def table(document: dict[str, Any]) -> str:
    """Fixed-width tables: per-method figures with intervals, then cold and warm users.

    ``learn s`` is the compute spent keeping the method current (fits and learning), wall
    and CPU; ``score s`` the time spent scoring, ``warm-up s`` starting (and tuning) on the
    warm-up.
    """
    head = f"{'method':<18}" + "".join(f"{m:>22}" for m in METRICS)
    head += f" {'learn s':>9} {'cpu s':>8} {'score s':>8} {'warm-up s':>9}"
    lines = [head, "-" * len(head)]
    for name, m in document["methods"].items():
        cells = "".join(f"{_with_interval(m, metric):>22}" for metric in METRICS)
        lines.append(
            f"{name:<18}{cells} {m['seconds']:>9.2f} {m['cpu_seconds']:>8.2f} "
            f"{m['score_seconds']:>8.2f} "
            f"{m['warmup_seconds']:>9.2f}"
        )
    first = next(iter(document["methods"].values()), None)
    if first is not None:
        lines.append("")
        lines.append(
            f"cold users (< {COLD_BELOW} prior events): {first['cold']['queries']} queries; "
            f"warm: {first['warm']['queries']}"
        )
        lines.append(f"{'method':<18}{'cold recall@20':>22}{'warm recall@20':>22}")
        for name, m in document["methods"].items():
            lines.append(
                f"{name:<18}{_with_interval(m['cold'], 'recall@20'):>22}"
                f"{_with_interval(m['warm'], 'recall@20'):>22}"
            )
    return "\n".join(lines)


def plot(document: dict[str, Any], path: Path) -> None:
    """A PNG: each metric per chunk (top row), and overall with its 95 % interval (bottom)."""
    try:  # imported here: only ``--plot`` pays for it, and needs the ``plot`` extra
        import matplotlib
    except ImportError as exc:
        raise ConfigError(
            "--plot needs matplotlib, which is not installed: pip install 'streamgnn[plot]'"
        ) from exc
    matplotlib.use("Agg")
    from matplotlib import pyplot

    names = list(document["methods"])
    figure, axes = pyplot.subplots(
        2, len(METRICS), figsize=(5.5 * len(METRICS), 4 + 0.35 * len(names) + 3)
    )
    for column, metric in enumerate(METRICS):
        top, bottom = axes[0][column], axes[1][column]
        for name, m in document["methods"].items():
            chunks = m["per_chunk"]
            top.plot([c["chunk"] + 1 for c in chunks], [c[metric] for c in chunks], "o-", ms=3,
                     label=name)  # fmt: skip
        top.set_title(f"{metric} per chunk")
        top.set_xlabel("chunk")
        top.grid(alpha=0.3)
        for row, name in enumerate(names):
            m = document["methods"][name]
            interval = m[f"{metric}_ci95"] or [m[metric], m[metric]]
            err = [[m[metric] - interval[0]], [interval[1] - m[metric]]]
            bottom.errorbar(m[metric], row, xerr=err, fmt="o", capsize=4, color=f"C{row % 10}")
        bottom.set_yticks(range(len(names)), names)
        bottom.invert_yaxis()
        bottom.set_title(f"{metric}, all queries, 95 % bootstrap interval")
        bottom.grid(alpha=0.3, axis="x")
    axes[0][0].legend(fontsize="small")
    dataset = document.get("dataset", {})
    targets = document.get("protocol", {}).get("target_types")
    suffix = f", targets {','.join(targets)}" if targets else ""
    figure.suptitle(
        f"{dataset.get('name', '')} prequential, encoder {document.get('encoder')}{suffix}"
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
