"""The ``streamgnn`` command: one sub-command per module listed in :data:`COMMANDS`.

Each command module defines ``add_command(commands)``, which adds its sub-parser and
sets ``run`` (a function of the parsed arguments returning the exit status).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from stream.errors import ConfigError, KafkaAccessError, StreamGNNError

COMMANDS: tuple[str, ...] = (
    "stream.worker",
    "stream.ingest.command",
    "stream.train",
    "stream.demo",
    "stream.publish.command",
    "stream.evaluation.command",
    "stream.produce.command",
)


def service_logging() -> None:
    """Timestamped INFO lines for the long-running commands (worker, train); kafka-python's
    own connection chatter (some twenty INFO lines for each admin client's life) only from
    WARNING."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamgnn",
        description="Interaction events in, fresh graph-neural-network embeddings out.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        importlib.import_module(module).add_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status: int = args.run(args)
    except (KafkaAccessError, ConfigError) as exc:  # a refused login, a missing topic
        print(f"streamgnn {args.command}: {exc}", file=sys.stderr)
        return 2
    except StreamGNNError as exc:  # ours, with a message that says it: no traceback
        print(f"streamgnn {args.command}: {exc}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
