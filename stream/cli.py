"""The ``streamgnn`` command. Sub-commands arrive with the worker; ``demo`` is here now."""

from __future__ import annotations

import argparse

from stream import demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="streamgnn", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="local broker, MovieLens replay, ingest, summary")
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo.main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
