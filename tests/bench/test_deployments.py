"""bench/deployments.py: the processes a load is offered to, and the freshness bench run
against the split deployment (one ``streamgnn ingest`` plus one ``streamgnn train``) on
the real broker."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest

from bench.deployments import Deployment, merged
from bench.freshness import LoadPlan, run_load
from bench.rss import RssSeries
from stream.local_broker.broker import LocalKafkaBroker


def test_a_scrape_of_several_processes_sums_each_sample() -> None:
    ingest = {"streamgnn_graph_edges": 40.0, 'streamgnn_consumer_lag{partition="1"}': 3.0}
    train = {"streamgnn_graph_edges": 0.0, "streamgnn_train_backlog_events": 7.0}
    both = merged([ingest, train])
    assert both == {
        "streamgnn_graph_edges": 40.0,
        'streamgnn_consumer_lag{partition="1"}': 3.0,
        "streamgnn_train_backlog_events": 7.0,
    }
    assert merged([ingest, ingest])["streamgnn_graph_edges"] == 80.0
    assert merged([]) == {}


def test_the_rss_of_several_processes_is_their_sum() -> None:
    one = psutil.Process(os.getpid()).memory_info().rss
    rss = RssSeries([os.getpid(), os.getpid()], interval_s=0.01)
    rss.start()
    while not rss.samples:
        time.sleep(0.005)
    rss.stop()
    # this process read twice: twice its RSS, give or take what it allocated meanwhile
    assert rss.samples[0][1] == pytest.approx(2 * one, rel=0.05)


def test_an_unknown_deployment_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown deployment 'cluster'"):
        Deployment("cluster", {"STREAMGNN_METRICS_ADDRESS": "127.0.0.1:1"}, tmp_path, "t")


@pytest.mark.integration
def test_the_split_deployment_reflects_every_event(
    kafka_broker: LocalKafkaBroker, tmp_path: Path
) -> None:
    """A short load through ingest -> changelog -> trainer -> topic: every measured event
    is reflected by a user vector, both processes stop cleanly, and the figures come from
    the right process (events applied by ingest, steps by the trainer)."""
    plan = LoadPlan(offered=500, duration_s=4.0, drain_s=60.0, deployment="split")
    entry = run_load(kafka_broker, plan, tmp_path)
    assert entry["deployment"] == "split"
    assert entry["exit_status"] == {"ingest": 0, "train": 0}
    assert entry["measured"] > 0 and entry["not_reflected_after_drain"] == 0
    assert entry["reflected"] == entry["measured"]
    assert 0 < entry["p50"] <= entry["p99"] <= entry["max"]
    assert entry["sustained_per_s"] > 0  # ingest's counter
    assert entry["train_steps"] > 0 and entry["model_version_end"] > 0  # the trainer's
    assert entry["graph_edges_end"] > 0
    # the trainer's freshness histogram is not fed from the changelog: no worker figure
    assert entry["worker_p99_append_to_ack"] is None
