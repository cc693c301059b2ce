"""``streamgnn consume``: follow the embedding topics, or answer top-k items for a user.

streamgnn consume --from-beginning --max-seconds 10     # print updates as a table
streamgnn consume --json                                 # ... or as JSON lines
streamgnn consume --user u42 --k 10                      # read the table, print top-k
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import TextIO

from stream.errors import StreamGNNError
from stream.publish.consumer import EmbeddingTable, TableUpdate
from stream.publish.schema import float32_decimals
from stream.settings import OPTIONS, load_settings

_SETTINGS = ("bootstrap_servers", "user_topic", "item_topic")


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "consume",
        help="follow the embedding topics; top-k items for a user",
        description="Keeps a local table of the latest vectors from the embedding topics. "
        "Options fall back to their environment variable, then a default.",
    )
    for option in OPTIONS:
        if option.name in _SETTINGS:
            parser.add_argument(
                option.flag, dest=option.name, metavar="VALUE", help=f"{option.help} [{option.env}]"
            )
    parser.add_argument("--json", action="store_true", help="print JSON lines, not a table")
    parser.add_argument("--user", metavar="ID", help="read the whole table, print top-k items")
    parser.add_argument("--k", type=int, default=10, help="items to print for --user (10)")
    parser.add_argument(
        "--from-beginning",
        action="store_true",
        help="follow from the beginning of the topics (default: only new updates)",
    )
    parser.add_argument(
        "--max-seconds", type=float, metavar="S", help="stop after S seconds (default: never)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out if out is not None else sys.stdout
    if args.k < 1:
        print(f"--k must be >= 1, got {args.k}", file=sys.stderr)
        return 2
    if args.max_seconds is not None and args.max_seconds < 0:
        print(f"--max-seconds must be >= 0, got {args.max_seconds}", file=sys.stderr)
        return 2
    try:
        settings = load_settings({name: getattr(args, name) for name in _SETTINGS}, os.environ)
        table = EmbeddingTable(
            settings.kafka.bootstrap_servers,
            settings.publish.user_topic,
            settings.publish.item_topic,
            from_beginning=args.from_beginning or args.user is not None,
        )
    except StreamGNNError as exc:
        print(f"streamgnn consume: {exc}", file=sys.stderr)
        return 2
    with table:
        if args.user is not None:
            return _answer_top_k(table, args, out)
        return _follow(table, args, out)


def _answer_top_k(table: EmbeddingTable, args: argparse.Namespace, out: TextIO) -> int:
    table.catch_up(timeout_s=args.max_seconds if args.max_seconds else 60.0)
    try:
        ranked = table.top_k(args.user, args.k)
    except KeyError:
        print(f"streamgnn consume: no vector for user {args.user!r}", file=sys.stderr)
        return 1
    if not args.json:
        print(f"{'rank':>4}  {'item':<24} {'score':>10}", file=out)
    for rank, (item, score) in enumerate(ranked, start=1):
        if args.json:
            line = {"user": args.user, "rank": rank, "item": item, "score": score}
            print(json.dumps(line, ensure_ascii=False), file=out)
        else:
            print(f"{rank:>4}  {item:<24} {score:>10.5f}", file=out)
    return 0


def _follow(table: EmbeddingTable, args: argparse.Namespace, out: TextIO) -> int:
    show: Callable[[TableUpdate], str] = _json_line if args.json else _table_row
    if not args.json:
        print(_HEADER, file=out, flush=True)
    deadline = None if args.max_seconds is None else time.monotonic() + args.max_seconds
    try:
        while deadline is None or time.monotonic() < deadline:
            wait_ms = 500 if deadline is None else max(int((deadline - time.monotonic()) * 1000), 0)
            for update in table.poll(timeout_ms=min(wait_ms, 500)):
                print(show(update), file=out)
            out.flush()
    except KeyboardInterrupt:
        pass
    s = table.stats
    print(
        f"users {len(table.users)}, items {len(table.items)}; applied {s.applied}, "
        f"stale ignored {s.stale}, deleted {s.deleted}, invalid {s.invalid}",
        file=sys.stderr,
    )
    return 0


_HEADER = (
    f"{'kind':<5} {'id':<24} {'version':>8} {'dim':>5} {'event_time_ms':>14} "
    f"{'publish_time_ms':>15} {'norm':>8}"
)


def _table_row(update: TableUpdate) -> str:
    record = update.record
    if record is None:
        return f"{update.kind:<5} {update.id:<24} {'deleted':>8}"
    norm = float((record.vector.astype("float64") ** 2).sum() ** 0.5)
    return (
        f"{record.kind:<5} {record.id:<24} {record.model_version:>8} {record.dim:>5} "
        f"{record.event_time_ms:>14} {record.publish_time_ms:>15} {norm:>8.4f}"
    )


def _json_line(update: TableUpdate) -> str:
    record = update.record
    if record is None:
        return json.dumps({"kind": update.kind, "id": update.id, "deleted": True})
    line = {
        "kind": record.kind,
        "id": record.id,
        "model_version": record.model_version,
        "dim": record.dim,
        "event_time_ms": record.event_time_ms,
        "publish_time_ms": record.publish_time_ms,
        "vector": [float(text) for text in float32_decimals(record.vector)],
    }
    return json.dumps(line, ensure_ascii=False)
