"""A real Prometheus, configured from deploy/prometheus, scrapes a PipelineMetrics endpoint;
every PromQL expression of the dashboard and of the alert rules then returns data.

The endpoint describes a pipeline in trouble (lag, rejections, slow publishing, a stalled
trainer, a full id registry) and a second scrape target is down, so that even each alert's
full expression, threshold included, has a result. Prometheus comes from Debian's
`prometheus` package (.ci/ensure_prometheus.sh); without it the test fails, never skips.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_files import (
    ALERTS,
    PROMETHEUS_CONFIG,
    dashboard_exprs,
    load_yaml,
    require_tool,
    rule_exprs,
)

from stream.kafka_broker import free_ports
from stream.metrics import PipelineMetrics, serve_metrics

SCRAPE_S = 1
RATE_WINDOW = "30s"  # stands in for Grafana's $__rate_interval
READY_TIMEOUT_S = 30
DATA_TIMEOUT_S = 60


def _feed(metrics: PipelineMetrics, stop: threading.Event) -> None:
    """Plausible values of a struggling pipeline, updated a few times a second."""
    m = metrics
    m.train_steps.inc(3)  # and never again: the trainer is stalled
    m.model_version.set(7)
    m.graph_nodes.set(1_200)
    m.graph_edges.set(25_000)
    m.train_loss.set(0.69)
    m.train_backlog.set(5_000)
    m.staleness.set(3_600)
    for partition in range(3):
        m.consumer_lag.labels(partition=str(partition)).set(400_000)
    while not stop.is_set():
        m.events_consumed.inc(100)
        m.events_applied.inc(40)
        m.events_duplicate.inc(5)
        m.events_rejected.labels(reason="invalid_json").inc(30)
        m.events_rejected.labels(reason="missing_field").inc(25)
        m.edges_pruned.inc(7)
        m.train_step_seconds.observe(0.08)
        m.ids_evicted.labels(kind="user").inc(2)
        m.ids_refused.labels(kind="item").inc(1)
        m.vectors_published.labels(kind="user").inc(20)
        m.vectors_published.labels(kind="item").inc(12)
        for seconds in (45.0, 90.0, 200.0):
            m.freshness.observe(seconds)
        stop.wait(0.2)


@pytest.fixture(scope="module")
def metrics_address() -> Iterator[str]:
    metrics = PipelineMetrics()
    (port,) = free_ports(1)
    address = f"127.0.0.1:{port}"
    serve_metrics(metrics, address)  # a daemon thread for the rest of the session
    stop = threading.Event()
    feeder = threading.Thread(target=_feed, args=(metrics, stop), daemon=True)
    feeder.start()
    yield address
    stop.set()
    feeder.join(timeout=5)


def _api(base: str, path: str, **params: str) -> dict[str, Any]:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else f"{base}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            data: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as exc:  # 400 for a bad query: report its error text
        data = json.loads(exc.read())
    return data


@pytest.fixture(scope="module")
def prometheus(metrics_address: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
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
    job["static_configs"] = [{"targets": [metrics_address, f"127.0.0.1:{dead_port}"]}]
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


def _wait_for(base: str, query: str) -> list[Any]:
    deadline = time.monotonic() + DATA_TIMEOUT_S
    while True:
        answer = _api(base, "/api/v1/query", query=query)
        assert answer["status"] == "success", f"{query}: {answer.get('error')}"
        result: list[Any] = answer["data"]["result"]
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


def test_every_dashboard_and_alert_expression_returns_data(prometheus: str) -> None:
    # Rates need two samples of each series in their window: wait for three scrapes.
    assert _wait_for(prometheus, 'count_over_time(up{job="streamgnn"}[1m]) >= 3')
    queries = [
        (f"dashboard: {e}", e.replace("$__rate_interval", RATE_WINDOW)) for e in dashboard_exprs()
    ]
    queries += [(f"rule {name}", expr) for name, expr in rule_exprs()]
    assert all("$" not in q for _, q in queries), "unhandled Grafana variable"
    empty = [label for label, query in queries if not _wait_for(prometheus, query)]
    assert empty == []


def test_the_rules_load_and_evaluate_without_errors(prometheus: str) -> None:
    expected = {name for name, _ in rule_exprs()}
    deadline = time.monotonic() + DATA_TIMEOUT_S
    while True:
        groups = _api(prometheus, "/api/v1/rules")["data"]["groups"]
        rules = {r["name"]: r for g in groups for r in g["rules"]}
        evaluated = all(r.get("lastEvaluation", "").startswith("20") for r in rules.values())
        if (set(rules) == expected and evaluated) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert set(rules) == expected
    assert {name: r["health"] for name, r in rules.items()} == dict.fromkeys(expected, "ok")
    assert [g["file"] for g in groups] == [str(ALERTS.resolve())] * len(groups)


def test_the_down_target_would_page_and_the_live_one_is_up(prometheus: str) -> None:
    assert _wait_for(prometheus, 'count(up{job="streamgnn"}) == 2')
    up = _wait_for(prometheus, 'up{job="streamgnn"}')
    values = sorted(float(sample["value"][1]) for sample in up)
    assert values == [0.0, 1.0]
