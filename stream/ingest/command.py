"""``streamgnn ingest``: the ingest half alone, the scale-out unit of a consumer group.

It is ``streamgnn worker --train false --changelog``: it consumes its share of the
``interactions`` partitions into its store and writes each partition's state to the
group's graph changelog in Kafka transactions (:mod:`stream.ingest.changelog`), so a
partition that moves to another ingest worker arrives with its graph and ``streamgnn
train`` can fold the whole graph. The changelog is always on, so ``--instance-id`` (the
stable part of its transactional.id) is required: one per worker of the group.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

from stream.errors import ConfigError
from stream.settings import add_options, select, settings_from_args
from stream.worker import serve

log = logging.getLogger("streamgnn.ingest")

# The worker's options less training, publishing and the changelog switch (always on).
INGEST_OPTIONS = select(
    "metrics_address", "kafka", "store.path", "store.epsilon", "store.sync_writes", "events"
)


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "ingest",
        help="consume interactions into the store and the graph changelog (until SIGTERM)",
        description="The ingest half of `streamgnn worker`, with the graph changelog on: run "
        "several in one group (each its own --instance-id) and one `streamgnn train`. Every "
        "option falls back to its environment variable, then a default.",
    )
    add_options(parser, INGEST_OPTIONS)
    parser.set_defaults(run=main)


def main(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
        settings = dataclasses.replace(
            settings,
            store=dataclasses.replace(settings.store, changelog=True),
            worker=dataclasses.replace(settings.worker, train=False),
        )
    except ConfigError as exc:
        print(f"streamgnn ingest: {exc}", file=sys.stderr)
        return 2
    return serve(settings)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m stream.ingest.command")
    add_options(parser, INGEST_OPTIONS)
    sys.exit(main(parser.parse_args()))
