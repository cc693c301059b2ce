"""What ``streamgnn eval`` hands back: a JSON document, a table and a plot."""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path
from typing import Any

import torch

from stream.errors import ConfigError
from stream.evaluation.metrics import METRICS
from stream.evaluation.prequential import PrequentialResult


def result_document(result: PrequentialResult, **context: Any) -> dict[str, Any]:
    """The JSON report: ``context`` (dataset, encoder, ...), per-method figures, machine."""
    methods: dict[str, Any] = {}
    for name, method in result.methods.items():
        learnt_events = sum(info.events for info in result.chunks)
        seconds = method.learn_seconds
        per_chunk = []
        for info, chunk in zip(result.chunks, method.chunks, strict=True):
            per_chunk.append(
                {
                    "chunk": info.index,
                    "events": info.events,
                    "queries": chunk.metrics.queries,
                    **chunk.metrics.means(),
                    "seconds": chunk.learn_seconds,
                    "score_seconds": chunk.score_seconds,
                }
            )
        totals = method.totals()
        methods[name] = {
            **totals.means(),
            "queries": totals.queries,
            "seconds": seconds,
            "score_seconds": method.score_seconds,
            "warmup_seconds": method.warmup_seconds,
            "events_per_second": learnt_events / seconds if seconds > 0 else None,
            "per_chunk": per_chunk,
        }
    return {
        **context,
        "warmup_events": result.warmup_events,
        "chunks": [vars(info) for info in result.chunks],
        "methods": methods,
        "machine": machine(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def table(document: dict[str, Any]) -> str:
    """A fixed-width table of the per-method figures.

    ``seconds`` is the compute spent keeping the method current (fits and learning);
    ``score s`` the time spent scoring.
    """
    head = f"{'method':<12} {'recall@20':>9} {'ndcg@20':>8} {'mrr':>7} {'seconds':>9} "
    head += f"{'score s':>8} {'events/s':>9}"
    lines = [head, "-" * len(head)]
    for name, m in document["methods"].items():
        rate = m["events_per_second"]
        lines.append(
            f"{name:<12} {m['recall@20']:>9.4f} {m['ndcg@20']:>8.4f} {m['mrr']:>7.4f} "
            f"{m['seconds']:>9.2f} {m['score_seconds']:>8.2f} "
            f"{'-' if rate is None else f'{rate:,.0f}':>9}"
        )
    return "\n".join(lines)


def plot(document: dict[str, Any], path: Path) -> None:
    """A PNG with one panel per metric, one line per method, over the chunks."""
    try:  # imported here: only ``--plot`` pays for it, and needs the ``plot`` extra
        import matplotlib
    except ImportError as exc:
        raise ConfigError(
            "--plot needs matplotlib, which is not installed: pip install 'streamgnn[plot]'"
        ) from exc
    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(1, len(METRICS), figsize=(5 * len(METRICS), 4))
    for axis, metric in zip(axes, METRICS, strict=True):
        for name, m in document["methods"].items():
            chunks = m["per_chunk"]
            axis.plot(
                [c["chunk"] + 1 for c in chunks], [c[metric] for c in chunks], "o-", label=name
            )
        axis.set_title(metric)
        axis.set_xlabel("chunk")
        axis.grid(alpha=0.3)
    axes[0].legend()
    dataset = document.get("dataset", {})
    figure.suptitle(f"{dataset.get('name', '')} prequential, encoder {document.get('encoder')}")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
