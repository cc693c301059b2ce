"""``streamgnn eval``: prequential evaluation of the methods on a timestamped log.

Examples (data read from beside the repository, never copied into it)::

    streamgnn eval --data ../shared/data/ml-100k/u.data --format movielens \\
        --json bench/results/eval-ml100k.json --plot bench/results/eval-ml100k.png
    streamgnn eval --data ../shared/data/retailrocket/sampled_events.csv \\
        --format retailrocket --target-types cart,purchase

Model code is imported when the command runs, not when the parser is built.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
import sys
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stream.errors import ConfigError
from stream.evaluation.catalogue import (
    BASELINES,
    DEFAULT_METHODS,
    METHOD_NAMES,
    RETRAIN_EPOCHS,
    MethodOptions,
    check_names,
)
from stream.evaluation.data import (
    FORMATS,
    TIME_UNITS,
    TableFormat,
    parse_column,
    read_interactions,
    table_format,
)
from stream.evaluation.prequential import ProtocolSettings, run_prequential
from stream.evaluation.report import plot, result_document, table
from stream.settings import DEFAULT_BEHAVIOURS, parse_behaviours

_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}

log = logging.getLogger("streamgnn.eval")


def parse_duration(text: str) -> int:
    """``90s``, ``12h``, ``1d``, ``2w`` or plain milliseconds, as milliseconds.

    >>> parse_duration("1d"), parse_duration("1500")
    (86400000, 1500)
    """
    raw = text.strip().lower()
    unit = next((u for u in ("ms", "s", "m", "h", "d", "w") if raw.endswith(u)), "ms")
    number = raw[: -len(unit)] if raw.endswith(unit) else raw
    try:
        value = float(number) * _UNITS_MS[unit]
    except ValueError:
        raise ConfigError(f"--chunk-duration {text!r}: expected e.g. 12h, 1d, 2w, 3600s") from None
    if not value > 0:
        raise ConfigError(f"--chunk-duration must be > 0, got {text!r}")
    return round(value)


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "eval",
        help="prequential evaluation: baselines, static, incremental and full retrain",
        description="Test-then-train over a timestamped interaction log, through the live "
        "graph store and trainer. Prints a table; optionally writes JSON and a PNG.",
    )
    data = add_data_options(parser, required=True)
    data.add_argument("--behaviours", help="graph behaviours JSON (default: the worker's)")
    data.add_argument("--epsilon", type=float, default=1e-3, help="store pruning threshold")

    proto = parser.add_argument_group("protocol")
    proto.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help=f"comma list of {', '.join(METHOD_NAMES)} (default: all but retrain-decayed)",
    )
    proto.add_argument(
        "--target-types",
        help="only events of these types are targets, e.g. cart,purchase (default: all); "
        "every event still counts as history",
    )
    proto.add_argument("--encoder", default="lightgcn", help="encoder name (lightgcn)")
    proto.add_argument("--warmup", type=float, default=0.5, help="warm-up fraction (0.5)")
    split = proto.add_mutually_exclusive_group()
    split.add_argument("--chunks", type=int, default=10, help="equal-count chunks (10)")
    split.add_argument("--chunk-duration", help="chunks by event time instead: 12h, 1d, 1w")
    proto.add_argument(
        "--micro-batch", type=int, default=1_000, help="events per store write and learn call"
    )
    proto.add_argument(
        "--epochs", type=int, default=20, help="epochs of the warm-up fit of static/incremental"
    )
    proto.add_argument(
        "--retrain-epochs",
        default=",".join(map(str, RETRAIN_EPOCHS)),
        help="epoch budgets retrain chooses from on the warm-up (one value: no choice)",
    )
    proto.add_argument(
        "--trainer",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a TrainerSettings field, e.g. --trainer dim=64 --trainer steps_per_batch=4",
    )
    proto.add_argument("--seed", type=int, default=0, help="model and tie-break seed")

    out = parser.add_argument_group("output")
    out.add_argument("--json", type=Path, help="write the JSON report here")
    out.add_argument("--plot", type=Path, help="write a PNG of the metrics per chunk here")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=main)


def add_data_options(parser: argparse.ArgumentParser, *, required: bool) -> argparse._ArgumentGroup:
    """The interaction-file flags (``--data``, ``--format``, the csv layout) in a group.

    Shared by ``streamgnn eval`` and ``streamgnn produce`` so that both read a file the
    same way; :func:`data_format` turns the parsed flags into a ``TableFormat``.
    """
    data = parser.add_argument_group("data")
    data.add_argument("--data", type=Path, required=required, help="interaction file")
    data.add_argument("--format", choices=FORMATS, default="csv", help="file layout (csv)")
    data.add_argument("--sep", help="csv field separator (,)")
    data.add_argument(
        "--header", action=argparse.BooleanOptionalAction, default=None, help="csv header row"
    )
    for column, what in (("user", "user id"), ("item", "item id"), ("time", "timestamp")):
        data.add_argument(
            f"--{column}-col", help=f"csv column of the {what}: name or 0-based index"
        )
    data.add_argument("--weight-col", help="csv column of the weight (default: weight 1)")
    data.add_argument("--event-col", help="csv column of the event type (default: --event-type)")
    data.add_argument("--time-unit", choices=sorted(TIME_UNITS), help="guessed when absent")
    data.add_argument("--event-type", help="csv event type of every row (click)")
    return data


def data_format(args: argparse.Namespace) -> TableFormat:
    """The :class:`TableFormat` the flags of :func:`add_data_options` ask for."""
    csv_only = (args.sep, args.header, args.user_col, args.item_col, args.time_col,
                args.weight_col, args.event_col, args.time_unit, args.event_type)  # fmt: skip
    if args.format != "csv" and any(v is not None for v in csv_only):
        raise ConfigError(
            f"--format {args.format} has a fixed layout; the csv options need --format csv"
        )
    return table_format(
        args.format,
        sep=args.sep,
        header=args.header,
        user_col=parse_column(args.user_col),
        item_col=parse_column(args.item_col),
        time_col=parse_column(args.time_col),
        weight_col=parse_column(args.weight_col),
        event_col=parse_column(args.event_col),
        time_unit=args.time_unit,
        event_type=args.event_type,
    )


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    began = time.perf_counter()
    methods = _comma_list(args.methods)
    check_names(methods)
    behaviours = parse_behaviours(args.behaviours) if args.behaviours else DEFAULT_BEHAVIOURS
    targets = frozenset(_comma_list(args.target_types)) if args.target_types else None
    retrain_epochs = _epoch_grid(args.retrain_epochs)
    fmt = data_format(args)
    from stream.evaluation.catalogue import build_methods
    from stream.evaluation.methods import TrainerRecipe, trainer_settings

    recipe = TrainerRecipe(
        trainer_settings(args.encoder, args.seed, args.trainer),
        dict(behaviours),
        args.epsilon,
        args.epochs,
    )
    loaded = read_interactions(args.data, fmt)
    print(f"{args.data}: {loaded.summary()}", file=sys.stderr)
    for example in loaded.bad_examples:
        print(f"  {example}", file=sys.stderr)
    protocol = ProtocolSettings(
        warmup=args.warmup,
        chunks=args.chunks,
        chunk_duration_ms=parse_duration(args.chunk_duration) if args.chunk_duration else None,
        micro_batch=args.micro_batch,
        behaviours=behaviours,
        epsilon=args.epsilon,
        seed=args.seed,
        target_types=targets,
    )
    options = MethodOptions(behaviours, recipe, retrain_epochs, targets, args.seed)
    chosen = build_methods(methods, options)
    with _progress_bar(not args.no_progress) as bar:
        result = run_prequential(loaded.interactions, chosen, protocol, progress=bar)
    stream = loaded.interactions
    document = result_document(
        result,
        baselines=BASELINES,
        command=_command_line(args),
        dataset={
            "name": args.data.name if args.format == "csv" else args.data.parent.name,
            "path": str(args.data),
            "format": args.format,
            "rows": loaded.rows,
            "events": len(stream),
            "duplicates": loaded.duplicates,
            "bad_rows": dict(loaded.bad_rows),
            "time_unit": loaded.time_unit,
            "users": len({e.user_id for e in stream}),
            "items": len({e.item_id for e in stream}),
            "event_types": dict(sorted(Counter(e.event_type for e in stream).items())),
        },
        encoder=args.encoder,
        protocol={
            "warmup": protocol.warmup,
            "chunks": protocol.chunks if protocol.chunk_duration_ms is None else None,
            "chunk_duration_ms": protocol.chunk_duration_ms,
            "micro_batch": protocol.micro_batch,
            "epochs": args.epochs,
            "retrain_epochs": list(retrain_epochs),
            "target_types": sorted(targets) if targets else None,
            "seed": args.seed,
        },
        trainer=_jsonable(
            {f.name: getattr(recipe.settings, f.name) for f in dataclasses.fields(recipe.settings)}
        ),
        wall_seconds=time.perf_counter() - began,
    )
    print(table(document))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plot:
        plot(document, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def _comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _epoch_grid(text: str) -> list[int]:
    try:
        grid = [int(part) for part in _comma_list(text)]
    except ValueError:
        raise ConfigError(f"--retrain-epochs {text!r}: expected e.g. 5,10,20,40") from None
    if not grid or min(grid) < 1:
        raise ConfigError(f"--retrain-epochs {text!r}: epoch budgets must be >= 1")
    return grid


def _command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this run, every option spelt out."""
    words = ["streamgnn", "eval"]
    for key, value in vars(args).items():
        if key in {"run", "command"} or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            words.append(flag)
        elif isinstance(value, list):
            for item in value:
                words += [flag, str(item)]
        else:
            words += [flag, str(value)]
    if args.header is False:
        words.append("--no-header")
    return shlex.join(words)


class _progress_bar:
    """A tqdm bar on stderr fed by the protocol's ``progress(done, total, what)``."""

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._bar: Any = None

    def __enter__(self) -> _progress_bar:
        return self

    def __call__(self, done: int, total: int, what: str) -> None:
        if not self._enabled:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="step", file=sys.stderr, dynamic_ncols=True)
        self._bar.set_postfix_str(what, refresh=False)
        self._bar.update(done - self._bar.n)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
