"""promtool accepts the alert rules and the Prometheus config, and the rule unit tests
(tests/deploy/alerts_test.yml: the freshness SLO fires above its bound after 5 minutes,
never below it) pass. promtool comes from Debian's `prometheus` package
(.ci/ensure_prometheus.sh); without it these tests fail, they never skip."""

from __future__ import annotations

import subprocess
from pathlib import Path

from deploy_files import ALERTS, PROMETHEUS_CONFIG, ROOT, load_yaml, require_tool

RULE_TESTS = Path(__file__).resolve().parent / "alerts_test.yml"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("promtool"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )


def test_promtool_check_rules_passes() -> None:
    result = _promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_config_passes() -> None:
    result = _promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rule_unit_tests_pass() -> None:
    result = _promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rule_unit_tests_cover_the_freshness_slo_both_ways() -> None:
    cases = load_yaml(RULE_TESTS)["tests"]
    checks = [
        check
        for case in cases
        for check in case.get("alert_rule_test", [])
        if check["alertname"] == "StreamgnnFreshnessSLOBreached"
    ]
    assert any(check["exp_alerts"] for check in checks)  # fires
    assert any(not check["exp_alerts"] for check in checks)  # and stays quiet


def test_alert_rules_have_a_duration_severity_and_summary() -> None:
    alerts = [r for g in load_yaml(ALERTS)["groups"] for r in g["rules"] if "alert" in r]
    names = {a["alert"] for a in alerts}
    assert len(names) == len(alerts)
    for alert in alerts:
        assert alert.get("for"), alert["alert"]
        assert alert["labels"]["severity"] in {"page", "critical", "warning"}
        assert alert["annotations"]["summary"]
    slo = next(a for a in alerts if a["alert"] == "StreamgnnFreshnessSLOBreached")
    assert slo["for"] == "5m"
    assert "histogram_quantile(0.99" in slo["expr"]
    assert "rate(streamgnn_freshness_seconds_bucket[" in slo["expr"]
