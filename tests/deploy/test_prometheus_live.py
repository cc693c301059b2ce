"""A real Prometheus, configured from deploy/prometheus, scrapes a real worker that has
processed a real stream; every PromQL expression of the dashboard and of the rules then
returns data.

The worker is ``python -m stream.worker`` as a child process, configured through its
STREAMGNN_* environment like a deployment, against the suite's Kafka broker. It ingests a
seeded synthetic stream plus some invalid records (so the rejection series exist), trains
and publishes, and keeps running while Prometheus scrapes it; at the end SIGTERM must stop
it with status 0. A second scrape target is down. Nothing is fed to the metrics by hand.

An alert's expression is checked with its comparisons made ``bool``: the threshold is
still evaluated, but as 0/1 for every series instead of a filter, so each alert's series,
label matching and arithmetic are checked whether or not the pipeline is in that trouble
right now (when each alert fires is promtool's unit tests' business, alerts_test.yml).

Prometheus comes from Debian's `prometheus` package (.ci/ensure_prometheus.sh); without it,
or without the broker, the test fails, never skips.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_files import (
    ALERTS,
    PROMETHEUS_CONFIG,
    ROOT,
    dashboard_exprs,
    load_yaml,
    require_tool,
    rule_exprs,
)

from stream.local_broker.broker import LocalKafkaBroker, free_ports
from stream.produce import (
    InteractionProducer,
    SimulatedClock,
    SyntheticConfig,
    SyntheticStream,
    produce,
)
from stream.settings import KafkaSettings

pytestmark = pytest.mark.integration

SCRAPE_S = 1
RATE_WINDOW = "30s"  # stands in for Grafana's $__rate_interval
READY_TIMEOUT_S = 30
DATA_TIMEOUT_S = 60
PROCESSED_TIMEOUT_S = 90  # the worker's start (torch import) and the whole stream
STOP_TIMEOUT_S = 60

VALID_EVENTS = 3_000
# (key, value, the reason the worker must reject it for); each sent INVALID_REPEATS times.
INVALID_RECORDS = (
    (b"u1", b'{"user_id":"u1","item_id":', "bad_json"),
    (b"u1", b'{"user_id":"u1","item_id":"i1","ts":1}', "missing_field"),
    (
        b"u1",
        b'{"user_id":"u1","item_id":"i1","event_type":"teleport","ts":1}',
        "unknown_event_type",
    ),
    (b"u2", b'{"user_id":"u1","item_id":"i1","event_type":"click","ts":1}', "key_mismatch"),
)
INVALID_REPEATS = 40


@dataclass
class WorkerRun:
    """A ``python -m stream.worker`` child and the stream it was given."""

    address: str
    process: subprocess.Popen[bytes]
    log_path: Path
    consumed: int
    applied: int
    reflected: int  # applied events a published vector reflects (follow events are not)
    rejected: dict[str, int]

    def tail(self) -> str:
        return _tail(self.log_path)


def _worker_env(tmp: Path, bootstrap: str, source: str, dlq: str, address: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMGNN_")}
    tag = source.rpartition("-")[2]
    env.update(
        STREAMGNN_BOOTSTRAP_SERVERS=bootstrap,
        STREAMGNN_INTERACTIONS_TOPIC=source,
        STREAMGNN_DLQ_TOPIC=dlq,
        STREAMGNN_GROUP_ID=f"g-{source}",
        STREAMGNN_MAX_BATCH_RECORDS="500",
        STREAMGNN_STORE_PATH=str(tmp / "graph"),
        STREAMGNN_USER_EMBEDDINGS_TOPIC=f"user-embeddings-{tag}",
        STREAMGNN_ITEM_EMBEDDINGS_TOPIC=f"item-embeddings-{tag}",
        STREAMGNN_VERSION_LEDGER=str(tmp / "publish" / "versions.json"),
        STREAMGNN_CHECKPOINT_DIR=str(tmp / "checkpoints"),
        STREAMGNN_DIM="16",
        STREAMGNN_DEVICE="cpu",
        STREAMGNN_METRICS_ADDRESS=address,
        PYTHONUNBUFFERED="1",
    )
    return env


def _produce_stream(bootstrap: str, topic: str) -> tuple[Counter[str], int]:
    """The valid synthetic events, then the invalid records; their rejection reasons, and
    how many valid events were ``follow`` (applied, but reflected in no vector)."""
    stream = SyntheticStream(SyntheticConfig(users=300, items=150, seed=4))
    start_ms = time.time_ns() // 1_000_000 - VALID_EVENTS * 1_000  # an hour of events
    rejected: Counter[str] = Counter()
    follows = 0

    def counted(events: Iterator[dict[str, object]]) -> Iterator[dict[str, object]]:
        nonlocal follows
        for event in events:
            follows += event["event_type"] == "follow"
            yield event

    with InteractionProducer(KafkaSettings(bootstrap), topic) as producer:
        events = counted(stream.events(SimulatedClock(start_ms, step_ms=1_000)))
        report = produce(events, producer, count=VALID_EVENTS)
        assert report.sent == VALID_EVENTS
        for _ in range(INVALID_REPEATS):
            for key, value, reason in INVALID_RECORDS:
                producer.send(key, value)
                rejected[reason] += 1
        producer.flush()
    return rejected, follows


@pytest.fixture(scope="module")
def worker(
    kafka_broker: LocalKafkaBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerRun]:
    """The worker child, started, and given the stream (it may still be processing it)."""
    tmp = tmp_path_factory.mktemp("worker")
    tag = uuid.uuid4().hex[:12]
    source, dlq = f"interactions-{tag}", f"interactions-dlq-{tag}"
    kafka_broker.create_topics({source: 2, dlq: 1})
    bootstrap = kafka_broker.bootstrap_servers
    (port,) = free_ports(1)
    address = f"127.0.0.1:{port}"
    log_path = tmp / "worker.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "stream.worker"],
            cwd=ROOT,
            env=_worker_env(tmp, bootstrap, source, dlq, address),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        rejected, follows = _produce_stream(bootstrap, source)  # while the worker starts
        yield WorkerRun(
            address=address,
            process=process,
            log_path=log_path,
            consumed=VALID_EVENTS + sum(rejected.values()),
            applied=VALID_EVENTS,
            reflected=VALID_EVENTS - follows,
            rejected=dict(rejected),
        )
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _api(base: str, path: str, **params: str) -> dict[str, Any]:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else f"{base}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            data: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as exc:  # 400 for a bad query: report its error text
        data = json.loads(exc.read())
    return data


@pytest.fixture(scope="module")
def prometheus(worker: WorkerRun, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Prometheus on 127.0.0.1 with deploy/'s config, retargeted; its base URL."""
    binary = require_tool("prometheus")
    tmp = tmp_path_factory.mktemp("prometheus")
    port, dead_port = free_ports(2)  # nothing listens on dead_port: a target that is down
    config = load_yaml(PROMETHEUS_CONFIG)
    config["global"].update(scrape_interval=f"{SCRAPE_S}s", evaluation_interval=f"{SCRAPE_S}s")
    config["rule_files"] = [
        str((PROMETHEUS_CONFIG.parent / f).resolve()) for f in config["rule_files"]
    ]
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [worker.address, f"127.0.0.1:{dead_port}"]}]
    config_path = tmp / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    log_path = tmp / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"prometheus exited with {process.returncode}:\n{_tail(log_path)}")
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"prometheus not ready in {READY_TIMEOUT_S}s:\n{_tail(log_path)}")
            time.sleep(0.3)
        yield base
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _query(base: str, query: str) -> list[Any]:
    answer = _api(base, "/api/v1/query", query=query)
    assert answer["status"] == "success", f"{query}: {answer.get('error')}"
    result: list[Any] = answer["data"]["result"]
    return result


def _wait_for(base: str, query: str, timeout_s: float = DATA_TIMEOUT_S) -> list[Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        result = _query(base, query)
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


@pytest.fixture(scope="module")
def processed(worker: WorkerRun, prometheus: str) -> str:
    """Prometheus' base URL once it has scraped the worker with the whole stream published
    (each event a published vector reflects is observed once in the freshness histogram)."""
    done = (
        f'streamgnn_freshness_seconds_count{{job="streamgnn"}} >= {worker.reflected}'
        f' and streamgnn_events_consumed_total{{job="streamgnn"}} >= {worker.consumed}'
    )
    deadline = time.monotonic() + PROCESSED_TIMEOUT_S
    while not _query(prometheus, done):
        if worker.process.poll() is not None:
            pytest.fail(f"the worker exited with {worker.process.returncode}:\n{worker.tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"stream not processed in {PROCESSED_TIMEOUT_S}s:\n{worker.tail()}")
        time.sleep(0.5)
    return prometheus


def _value(base: str, query: str) -> float:
    (sample,) = _query(base, query)
    return float(sample["value"][1])


def _comparisons_as_bool(expr: str) -> str:
    """``expr`` with ``bool`` after each comparison operator (label matchers untouched)."""
    parts = re.split(r"(\{[^{}]*\})", expr)
    return "".join(
        part
        if part.startswith("{")
        else re.sub(r"(==|!=|>=|<=|>|<)(?!\s*bool\b)", r"\1 bool", part)
        for part in parts
    )


def test_comparisons_as_bool_leaves_matchers_alone() -> None:
    assert (
        _comparisons_as_bool('up{job="a",x!="b"} == 0 and y >= scalar(z) < 1')
        == 'up{job="a",x!="b"} == bool 0 and y >= bool scalar(z) < bool 1'
    )
    assert _comparisons_as_bool("a > bool 1") == "a > bool 1"


def test_prometheus_has_what_the_worker_did_with_the_stream(
    processed: str, worker: WorkerRun
) -> None:
    job = '{job="streamgnn"}'
    assert _value(processed, f"streamgnn_events_consumed_total{job}") == worker.consumed
    assert _value(processed, f"streamgnn_events_applied_total{job}") == worker.applied
    assert _value(processed, f"streamgnn_freshness_seconds_count{job}") == worker.reflected
    rejected = {
        s["metric"]["reason"]: float(s["value"][1])
        for s in _query(processed, f"streamgnn_events_rejected_total{job} > 0")
    }
    assert rejected == worker.rejected
    assert _value(processed, f"streamgnn_train_steps_total{job}") > 0
    assert _value(processed, f"streamgnn_model_version{job}") > 0
    assert _value(processed, f"streamgnn_graph_edges{job}") > 0
    published = {
        s["metric"]["kind"]: float(s["value"][1])
        for s in _query(processed, f"streamgnn_vectors_published_total{job}")
    }
    assert set(published) == {"user", "item"}
    assert all(count > 0 for count in published.values())


def test_every_dashboard_and_alert_expression_returns_data(processed: str) -> None:
    # Rates need two samples of each series in their window: wait for three scrapes.
    assert _wait_for(processed, 'count_over_time(up{job="streamgnn"}[1m]) >= 3')
    queries = [
        (f"dashboard: {e}", e.replace("$__rate_interval", RATE_WINDOW)) for e in dashboard_exprs()
    ]
    queries += [(f"rule {name}", _comparisons_as_bool(expr)) for name, expr in rule_exprs()]
    assert all("$" not in q for _, q in queries), "unhandled Grafana variable"
    empty = [label for label, query in queries if not _wait_for(processed, query)]
    assert empty == []


def test_the_rules_load_and_evaluate_without_errors(processed: str) -> None:
    expected = {name for name, _ in rule_exprs()}
    deadline = time.monotonic() + DATA_TIMEOUT_S
    while True:
        groups = _api(processed, "/api/v1/rules")["data"]["groups"]
        rules = {r["name"]: r for g in groups for r in g["rules"]}
        evaluated = all(r.get("lastEvaluation", "").startswith("20") for r in rules.values())
        if (set(rules) == expected and evaluated) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert set(rules) == expected
    assert {name: r["health"] for name, r in rules.items()} == dict.fromkeys(expected, "ok")
    assert [g["file"] for g in groups] == [str(ALERTS.resolve())] * len(groups)


def test_the_down_target_would_page_and_the_live_one_is_up(processed: str) -> None:
    assert _wait_for(processed, 'count(up{job="streamgnn"}) == 2')
    up = _wait_for(processed, 'up{job="streamgnn"}')
    values = sorted(float(sample["value"][1]) for sample in up)
    assert values == [0.0, 1.0]


def test_the_worker_stops_cleanly_on_sigterm(processed: str, worker: WorkerRun) -> None:
    """Last: the worker has been scraped throughout the tests above."""
    assert worker.process.poll() is None, f"the worker died:\n{worker.tail()}"
    worker.process.send_signal(signal.SIGTERM)
    try:
        status = worker.process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker ignored SIGTERM for {STOP_TIMEOUT_S}s:\n{worker.tail()}")
    assert status == 0, worker.tail()
    assert "stopped:" in worker.log_path.read_text(errors="replace")
