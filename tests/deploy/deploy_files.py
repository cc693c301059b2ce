"""Paths and loaders shared by the deployment tests."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "streamgnn.json"
ENSURE_PROMETHEUS = ".ci/ensure_prometheus.sh"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def rule_exprs() -> list[tuple[str, str]]:
    """(rule name, expr) of every recording and alerting rule in alerts.yml."""
    groups = load_yaml(ALERTS)["groups"]
    return [
        (rule.get("alert") or rule["record"], rule["expr"]) for g in groups for rule in g["rules"]
    ]


def metric_names_in(expr: str) -> set[str]:
    return set(re.findall(r"\b(streamgnn_[a-z_]+|streamgnn:[a-z0-9_:]+)", expr))


def require_tool(name: str) -> str:
    """The tool's path; fails (never skips) with the install command when it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: run `bash {ENSURE_PROMETHEUS}` (Debian package "
            "`prometheus`)",
            pytrace=False,
        )
    return path
