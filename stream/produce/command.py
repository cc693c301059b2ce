"""``streamgnn produce``: a synthetic stream or a file replay into ``interactions``.

streamgnn produce                                   # synthetic, 100 events/s, until SIGTERM
streamgnn produce --rate 0 --count 100000           # as fast as possible, then stop
streamgnn produce --data ../shared/data/ml-100k/u.data --format movielens --rate 2000

Synthetic events carry the wall clock at send time as ``ts`` (late ones, earlier); a
replay keeps the file's times. SIGINT/SIGTERM stop the stream, flush what was sent and
exit 0. Wiring only: the work is in :mod:`stream.produce`.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from stream.errors import ConfigError
from stream.evaluation.data import data_format, read_interactions
from stream.kafka.access import check_access_blocking
from stream.produce.producer import InteractionProducer, produce
from stream.produce.replay import replay_events
from stream.produce.synthetic import SyntheticConfig, SyntheticStream, wall_clock_ms
from stream.settings import add_options, select, settings_from_args

PRODUCE_OPTIONS = select(
    "kafka.bootstrap_servers", "kafka.interactions_topic", "kafka.security", "produce", "data"
)


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "produce",
        help="send a synthetic stream or replay a file into the interactions topic",
        description="A synthetic shop-like stream (default) or a timestamped file (--data), "
        "paced at --rate events/s. Options fall back to their environment variable, "
        "then a default.",
    )
    add_options(parser, PRODUCE_OPTIONS)
    parser.set_defaults(run=main)


def main(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    chosen, data = settings.produce, settings.data
    if chosen.synthetic and data.path is not None:
        raise ConfigError("--synthetic and --data exclude each other; pass one")
    total: int | None = chosen.count or None
    events: Iterable[dict[str, object]]
    if data.path is not None:
        loaded = read_interactions(data.path, data_format(data))
        print(f"{data.path}: {loaded.summary()}", file=sys.stderr)
        for example in loaded.bad_examples:
            print(f"  {example}", file=sys.stderr)
        events = replay_events(loaded.interactions)
        total = min(total or len(loaded.interactions), len(loaded.interactions))
    else:
        config = SyntheticConfig(
            users=chosen.users,
            items=chosen.items,
            new_user_share=chosen.new_user_share,
            late_share=chosen.late_share,
            seed=chosen.seed,
        )
        events = SyntheticStream(config).events(wall_clock_ms)
    topic = settings.kafka.interactions_topic
    check_access_blocking(settings.kafka)
    stop = threading.Event()
    with (
        _stop_on_signals(stop),
        InteractionProducer(settings.kafka, topic) as sink,
    ):
        report = produce(
            events,
            sink,
            rate=chosen.rate,
            count=chosen.count or None,
            duration_s=chosen.duration_s or None,
            stop=stop,
            progress=not chosen.no_progress,
            total=total,
        )
    print(
        f"sent {report.sent} events to {topic} in {report.seconds:.1f} s "
        f"({report.rate:.0f} events/s)",
        file=sys.stderr,
    )
    return 0


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` (the stream ends, is flushed, exit 0) while inside."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.getsignal(signum) for signum in signals}
    for signum in signals:
        signal.signal(signum, lambda _signum, _frame: stop.set())
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
