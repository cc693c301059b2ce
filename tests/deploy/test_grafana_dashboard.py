"""The provisioned Grafana dashboard: well-formed, on the provisioned datasource, and it
charts every metric the worker exports."""

from __future__ import annotations

import re

from deploy_files import GRAFANA_DIR, dashboard, dashboard_exprs, load_yaml, metric_names_in
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from stream.metrics import PipelineMetrics


def _exported_series() -> set[str]:
    """The series name a chart would use for each metric family PipelineMetrics defines."""
    names = set()
    for family in PipelineMetrics().registry.collect():
        if family.type == CounterMetricFamily("x", "").type:
            names.add(f"{family.name}_total")
        elif family.type == HistogramMetricFamily("x", "").type:
            names.add(f"{family.name}_bucket")
        else:
            names.add(family.name)
    return names


def test_every_exported_metric_is_charted() -> None:
    charted = set().union(*(metric_names_in(e) for e in dashboard_exprs()))
    missing = _exported_series() - charted
    assert not missing


def test_every_charted_metric_exists_or_is_recorded_by_the_rules() -> None:
    recorded = {
        r["record"]
        for g in load_yaml(GRAFANA_DIR.parent / "prometheus" / "alerts.yml")["groups"]
        for r in g["rules"]
        if "record" in r
    }
    charted = set().union(*(metric_names_in(e) for e in dashboard_exprs()))
    assert charted <= _exported_series() | recorded


def test_panels_use_the_provisioned_datasource_and_fit_the_grid() -> None:
    uids = {
        s["uid"]
        for f in (GRAFANA_DIR / "provisioning" / "datasources").glob("*.yml")
        for s in load_yaml(f)["datasources"]
    }
    board = dashboard()
    assert board["uid"] and board["title"]
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert len({p["title"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        assert panel["datasource"]["uid"] in uids, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in uids
        refs = [t["refId"] for t in panel["targets"]]
        assert len(set(refs)) == len(refs)
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        mine = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not (mine & cells), f"{panel['title']} overlaps another panel"
        cells |= mine


def test_the_design_panels_are_there() -> None:
    exprs = "\n".join(dashboard_exprs())
    for quantile in ("0.5", "0.9", "0.99"):
        assert re.search(
            rf"histogram_quantile\({quantile}, [^\n]*streamgnn_freshness_seconds", exprs
        )
    assert "sum by (reason)" in exprs  # rejections by reason
    assert "sum by (partition)" in exprs  # lag per partition
    assert "sum by (kind)" in exprs  # vectors published by kind
