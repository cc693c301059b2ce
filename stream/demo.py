"""``streamgnn demo``: the whole pipeline on this machine, with a live summary.

Starts a local Kafka broker, then ``streamgnn worker`` (ingest, store, train, publish) and
``streamgnn produce`` (the synthetic stream, or a file with ``--data``) as child
processes, exactly as they run in production. Every ``--every-s`` it prints the events the
worker applied per second, freshness p50/p99 (from the worker's own histogram), the model
version, and a sample user's top-k items from the embedding topics as the stream changes
them. After ``--duration-s`` (or Ctrl-C) the producer stops, the worker trains what is
left, drains, checkpoints and exits, and the broker stops. Everything lives in a temp
directory that is removed at the end; logs are printed if a process fails.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from stream.local_broker.broker import LocalKafkaBroker, free_ports
from stream.metrics import histogram_quantile, owns_partitions, scrape_metrics, total
from stream.publish.consumer import EmbeddingTable
from stream.settings import (
    DemoSettings,
    KafkaSettings,
    Settings,
    add_options,
    select,
    settings_from_args,
)

_TOPICS = {"interactions": 2, "interactions.dlq": 1}
DEMO_OPTIONS = select("demo", "data")
_SECURITY_TWINS = frozenset(option.env for option in select("kafka.security"))


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "demo",
        help="broker, worker and producer on this machine, with a live summary",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    add_options(parser, DEMO_OPTIONS)
    parser.set_defaults(run=main)


class Demo:
    """The broker's address and the two child processes of one demo run."""

    def __init__(self, broker: LocalKafkaBroker, workdir: Path, settings: Settings):
        self.workdir = workdir
        self.metrics = f"127.0.0.1:{free_ports(1)[0]}"
        # The local broker is PLAINTEXT: the caller's TLS/SASL settings are not for it.
        inherited = {k: v for k, v in os.environ.items() if k not in _SECURITY_TWINS}
        env = {
            **inherited,
            "STREAMGNN_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "STREAMGNN_STORE_PATH": str(workdir / "graph"),
            "STREAMGNN_CHECKPOINT_DIR": str(workdir / "checkpoints"),
            "STREAMGNN_VERSION_LEDGER": str(workdir / "versions.json"),
            "STREAMGNN_METRICS_ADDRESS": self.metrics,
            "STREAMGNN_DIM": str(settings.demo.dim),
        }
        self.worker = _spawn(["worker"], env, workdir / "worker.log")
        produce = ["produce", "--rate", str(settings.demo.rate), "--no-progress"]
        if settings.data.path is not None:
            produce += _data_flags(settings)
        self._produce_args, self._env = produce, env
        self.producer: subprocess.Popen[bytes] | None = None

    def start_producer(self) -> None:
        self.producer = _spawn(self._produce_args, self._env, self.workdir / "produce.log")

    def stop(self) -> int:
        """Stop the producer, let the worker drain, stop it; the worker's exit status."""
        for process in (self.producer, self.worker):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        return self.worker.returncode

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name} (last lines)\n" + "\n".join(path.read_text().splitlines()[-15:])
            for path in sorted(self.workdir.glob("*.log"))
        )


def _data_flags(settings: Settings) -> list[str]:
    """The ``data`` options chosen here, as flags for ``streamgnn produce``."""
    flags: list[str] = []
    for option in select("data"):
        value = getattr(settings.data, option.name)
        if value is None:
            continue
        if option.kind == "toggle":
            flags.append(option.flag if value else "--no-" + option.flag.removeprefix("--"))
        else:
            flags += [option.flag, str(value)]
    return flags


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "stream.cli", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the demo only; it stops them in order
        )


def main(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    with tempfile.TemporaryDirectory(prefix="streamgnn-demo-") as tmp:
        workdir = Path(tmp)
        print("starting a local Kafka broker ...", flush=True)
        jars = settings.demo.kafka_libs
        with LocalKafkaBroker(workdir / "kafka", jars_dir=jars) as broker:
            broker.create_topics(dict(_TOPICS))
            demo = Demo(broker, workdir, settings)
            status = 1
            try:
                _wait_for_worker(demo)
                demo.start_producer()
                print(f"worker and producer running; metrics on http://{demo.metrics}/metrics")
                _summarise(demo, broker.bootstrap_servers, settings.demo)
            except KeyboardInterrupt:
                print("\nstopping ...")
            finally:
                status = demo.stop()
                print(f"stopped (worker exit status {status})")
                if status != 0:
                    print(f"the worker exited with status {status}\n{demo.logs()}")
            return 0 if status == 0 else 1


def _wait_for_worker(demo: Demo, timeout_s: float = 180.0) -> None:
    """Until the worker owns its partitions (its publisher made the embedding topics)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if demo.worker.poll() is not None:
            raise RuntimeError(f"the worker exited during start-up\n{demo.logs()}")
        if owns_partitions(demo.metrics):
            return
        time.sleep(0.5)
    raise TimeoutError(f"the worker did not start within {timeout_s:.0f} s\n{demo.logs()}")


def _summarise(demo: Demo, bootstrap: str, args: DemoSettings) -> None:
    start = last_time = time.monotonic()
    last_applied = 0.0
    busiest: Counter[str] = Counter()
    user: str | None = args.user
    with EmbeddingTable(KafkaSettings(bootstrap), from_beginning=True) as table:
        while time.monotonic() - start < args.duration_s:
            if demo.worker.poll() is not None:
                raise RuntimeError(f"the worker exited\n{demo.logs()}")
            deadline = time.monotonic() + args.every_s
            while time.monotonic() < deadline:
                for update in table.poll(timeout_ms=200):
                    if update.kind == "user":
                        busiest[update.id] += 1
            user = user or (busiest.most_common(1)[0][0] if busiest else None)
            samples = scrape_metrics(demo.metrics)
            now, applied = time.monotonic(), total(samples, "streamgnn_events_applied_total")
            rate = (applied - last_applied) / (now - last_time)
            last_time, last_applied = now, applied
            print(
                f"t={now - start:5.0f}s  applied {applied:9.0f} ({rate:6.0f}/s)  "
                f"{_freshness(samples)}  model v{total(samples, 'streamgnn_model_version'):.0f}"
                f"  {_top_k(table, user, args.k)}",
                flush=True,
            )


def _freshness(samples: dict[str, float]) -> str:
    p50, p99 = (histogram_quantile(q, samples, "streamgnn_freshness_seconds") for q in (0.5, 0.99))
    if p50 is None or p99 is None:
        return "freshness p50 -      p99 -     "
    return f"freshness p50 {p50:5.2f}s p99 {p99:5.2f}s"


def _top_k(table: EmbeddingTable, user: str | None, k: int) -> str:
    if user is None:
        return "(no user vector yet)"
    try:
        items = table.top_k(user, k)
    except KeyError:
        return f"{user}: (no vector yet)"
    return f"{user} top-{k}: " + " ".join(item for item, _ in items)
