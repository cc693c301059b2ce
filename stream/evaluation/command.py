"""``streamgnn eval``: prequential evaluation of the methods on a timestamped log.

Examples (data read from beside the repository, never copied into it)::

    streamgnn eval --data ../shared/data/ml-100k/u.data --format movielens \\
        --json bench/results/eval-ml100k.json --plot bench/results/eval-ml100k.png
    streamgnn eval --data ../shared/data/retailrocket/sampled_events.csv \\
        --format retailrocket --target-types cart,purchase

The model methods learn with the ``training`` section of the settings, the worker's own
(flags such as ``--dim`` or ``--steps-per-batch`` change it, as they would the worker's).
Model code is imported when the command runs, not when the parser is built.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import shlex
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from stream.behaviours import Behaviour, behaviours_option
from stream.errors import ConfigError
from stream.evaluation.catalogue import BASELINES, MethodOptions, build_methods
from stream.evaluation.data import data_format, read_interactions
from stream.evaluation.prequential import ProtocolSettings, run_prequential
from stream.evaluation.report import plot, result_document, table
from stream.progress import progress_bar
from stream.settings import Option, Settings, add_options, select, settings_from_args

if TYPE_CHECKING:
    from stream.evaluation.methods import TrainerRecipe

# The graph (behaviours, epsilon), how the model learns, the protocol, the file.
EVAL_OPTIONS = select("events.behaviours", "store.epsilon", "training", "eval", "data")

log = logging.getLogger("streamgnn.eval")


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "eval",
        help="prequential evaluation: baselines, static, incremental and full retrain",
        description="Test-then-train over a timestamped interaction log, through the live "
        "graph store and trainer, with the worker's training settings. Prints a table; "
        "optionally writes JSON and a PNG. Options fall back to their environment "
        "variable, then a default.",
    )
    add_options(parser, EVAL_OPTIONS)
    parser.set_defaults(run=main)


def recipe(settings: Settings) -> TrainerRecipe:
    """How the model methods build and fit their trainers: the ``training`` section as is."""
    from stream.evaluation.methods import TrainerRecipe

    behaviours = dict(settings.events.behaviours)
    return TrainerRecipe(
        settings.training, behaviours, settings.store.epsilon, settings.eval.epochs
    )


def protocol_settings(settings: Settings) -> ProtocolSettings:
    """The prequential protocol the ``eval`` section describes (its seed: ``training.seed``)."""
    ev = settings.eval
    return ProtocolSettings(
        warmup=ev.warmup,
        chunks=ev.chunk_count,
        chunk_duration_ms=ev.chunk_duration_ms,
        micro_batch=ev.micro_batch,
        behaviours=settings.events.behaviours,
        epsilon=settings.store.epsilon,
        seed=settings.training.seed,
        target_types=_targets(settings),
    )


def method_options(settings: Settings, chosen: TrainerRecipe) -> MethodOptions:
    """What the methods share with :func:`protocol_settings`'s protocol; model methods learn
    by ``chosen``."""
    ev = settings.eval
    return MethodOptions(
        settings.events.behaviours,
        chosen,
        retrain_epochs=ev.retrain_epochs,
        window_fractions=ev.window_fractions,
        target_types=_targets(settings),
        seed=settings.training.seed,
    )


def _targets(settings: Settings) -> frozenset[str] | None:
    types = settings.eval.target_types
    return frozenset(types) if types is not None else None


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    began = time.perf_counter()
    settings = settings_from_args(args)
    ev, data = settings.eval, settings.data
    if data.path is None:
        raise ConfigError("--data / STREAMGNN_DATA: the interaction file to evaluate on")
    fmt = data_format(data)
    targets = _targets(settings)

    loaded = read_interactions(data.path, fmt)
    print(f"{data.path}: {loaded.summary()}", file=sys.stderr)
    for example in loaded.bad_examples:
        print(f"  {example}", file=sys.stderr)
    protocol = protocol_settings(settings)
    methods = build_methods(ev.methods, method_options(settings, recipe(settings)))
    with _progress_bar(not ev.no_progress) as bar:
        result = run_prequential(loaded.interactions, methods, protocol, progress=bar)
    stream = loaded.interactions
    document = result_document(
        result,
        baselines=BASELINES,
        resamples=ev.bootstrap_resamples,
        command=command_line(settings, args.settings_options),
        dataset={
            "name": data.path.name if data.format == "csv" else data.path.parent.name,
            "path": str(data.path),
            "format": data.format,
            "rows": loaded.rows,
            "events": len(stream),
            "duplicates": loaded.duplicates,
            "bad_rows": dict(loaded.bad_rows),
            "time_unit": loaded.time_unit,
            "users": len({e.user_id for e in stream}),
            "items": len({e.item_id for e in stream}),
            "event_types": dict(sorted(Counter(e.event_type for e in stream).items())),
        },
        encoder=settings.training.encoder,
        graph={
            "behaviours": {
                name: dataclasses.asdict(b)  # as --behaviours takes them (behaviours_option)
                for name, b in sorted(settings.events.behaviours.items())
            },
            "epsilon": settings.store.epsilon,
        },
        protocol={
            "warmup": protocol.warmup,
            "chunks": protocol.chunks if protocol.chunk_duration_ms is None else None,
            "chunk_duration_ms": protocol.chunk_duration_ms,
            "micro_batch": protocol.micro_batch,
            "epochs": ev.epochs,
            "retrain_epochs": list(ev.retrain_epochs),
            "window_fractions": list(ev.window_fractions),
            "target_types": sorted(targets) if targets else None,
            "seed": settings.training.seed,
        },
        trainer=_jsonable(
            {
                f.name: getattr(settings.training, f.name)
                for f in dataclasses.fields(settings.training)
            }
        ),
        wall_seconds=time.perf_counter() - began,
    )
    print(table(document))
    if ev.json:
        ev.json.parent.mkdir(parents=True, exist_ok=True)
        ev.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"wrote {ev.json}", file=sys.stderr)
    if ev.plot:
        plot(document, ev.plot)
        print(f"wrote {ev.plot}", file=sys.stderr)
    return 0


def command_line(settings: Settings, options: Sequence[Option]) -> str:
    """The command that reproduces this run: every option (flag or environment twin) whose
    value differs from its default, spelt out as a flag; the data file first."""
    defaults = Settings()
    words = ["streamgnn", "eval"]
    for option in sorted(options, key=lambda o: o.section != "data"):
        value, default = _value(settings, option), _value(defaults, option)
        if value == default or value is None or option.kind == "secret":
            continue
        if option.kind == "switch":
            words.append(option.flag)
        elif option.kind == "toggle":
            words.append(option.flag if value else "--no-" + option.flag.removeprefix("--"))
        else:
            words += [option.flag, _text(value)]
    return shlex.join(words)


def _value(settings: Settings, option: Option) -> Any:
    section = functools.reduce(getattr, option.section.split("."), settings)
    return getattr(section, option.name)


def _text(value: Any) -> str:
    if isinstance(value, Mapping):
        if value and all(isinstance(v, Behaviour) for v in value.values()):
            return behaviours_option(value)
        return json.dumps({str(k): v for k, v in value.items()})
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


class _progress_bar:
    """A progress bar on stderr fed by the protocol's ``progress(done, total, what)``."""

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._bar: Any = None

    def __enter__(self) -> _progress_bar:
        return self

    def __call__(self, done: int, total: int, what: str) -> None:
        if not self._enabled:
            return
        if self._bar is None:
            self._bar = progress_bar(True, total, "step")
            if self._bar is None:
                self._enabled = False
                return
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
