"""``streamgnn consume``: follow the embedding topics, or answer top-k items for a user.

streamgnn consume --from-beginning --max-seconds 10     # print updates as a table
streamgnn consume --json                                 # ... or as JSON lines
streamgnn consume --user u42 --k 10                      # read the table, print top-k
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import TextIO

import orjson

from stream.errors import StreamGNNError
from stream.kafka.access import check_access_blocking
from stream.publish.consumer import EmbeddingTable, TableUpdate
from stream.settings import ConsumeSettings, add_options, select, settings_from_args

CONSUME_OPTIONS = select(
    "kafka.bootstrap_servers",
    "kafka.security",
    "publish.user_topic",
    "publish.item_topic",
    "consume",
)


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "consume",
        help="follow the embedding topics; top-k items for a user",
        description="Keeps a local table of the latest vectors from the embedding topics. "
        "Options fall back to their environment variable, then a default.",
    )
    add_options(parser, CONSUME_OPTIONS)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out if out is not None else sys.stdout
    try:
        settings = settings_from_args(args)
        chosen = settings.consume
        check_access_blocking(settings.kafka)
        table = EmbeddingTable(
            settings.kafka,
            settings.publish.user_topic,
            settings.publish.item_topic,
            from_beginning=chosen.from_beginning or chosen.user is not None,
        )
    except StreamGNNError as exc:
        print(f"streamgnn consume: {exc}", file=sys.stderr)
        return 2
    with table:
        if chosen.user is not None:
            return _answer_top_k(table, chosen.user, chosen, out)
        return _follow(table, chosen, out)


def _answer_top_k(table: EmbeddingTable, user: str, args: ConsumeSettings, out: TextIO) -> int:
    table.catch_up(timeout_s=args.max_seconds if args.max_seconds else 60.0)
    try:
        ranked = table.top_k(user, args.k)
    except KeyError:
        print(f"streamgnn consume: no vector for user {user!r}", file=sys.stderr)
        return 1
    if not args.json:
        print(f"{'rank':>4}  {'item':<24} {'score':>10}", file=out)
    for rank, (item, score) in enumerate(ranked, start=1):
        if args.json:
            line = {"user": user, "rank": rank, "item": item, "score": score}
            print(json.dumps(line, ensure_ascii=False), file=out)
        else:
            print(f"{rank:>4}  {item:<24} {score:>10.5f}", file=out)
    return 0


def _follow(table: EmbeddingTable, args: ConsumeSettings, out: TextIO) -> int:
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
        "vector": record.vector,  # float32 decimals, as on the topic
    }
    return orjson.dumps(line, option=orjson.OPT_SERIALIZE_NUMPY).decode()
