"""Prometheus metrics of one streamgnn process (prefix ``streamgnn_``).

All metrics live in a :class:`PipelineMetrics` built on an explicit registry, so tests
and several workers in one process never share global state. No label ever carries a
user or item id: labels are bounded sets (rejection reason, partition, entity kind).
"""

from __future__ import annotations

import math
import urllib.request
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from stream.errors import ConfigError
from stream.events import IGNORED_REASONS, REJECTION_REASONS

# Freshness spans a fast path (tens of ms) to a stalled trainer (minutes).
FRESHNESS_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
)
STEP_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class PipelineMetrics:
    """Every metric the worker exports, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.events_consumed = Counter(
            "streamgnn_events_consumed", "Records read from the interactions topic", registry=r
        )
        self.events_applied = Counter(
            "streamgnn_events_applied", "Events applied to the graph store", registry=r
        )
        self.events_duplicate = Counter(
            "streamgnn_events_duplicate",
            "Events skipped as repeats of an event_id within the dedup window",
            registry=r,
        )
        self.events_rejected = Counter(
            "streamgnn_events_rejected",
            "Records dead-lettered, by rejection reason",
            ["reason"],
            registry=r,
        )
        self.events_ignored = Counter(
            "streamgnn_events_ignored",
            "Accepted events that changed no edge (weight 0, or decayed away before they "
            "arrived), by reason; never counted as applied",
            ["reason"],
            registry=r,
        )
        self.offsets_skipped = Counter(
            "streamgnn_offsets_skipped",
            "Records never read because the stored offset had fallen out of the topic's "
            "retention (the partition resumed at its earliest offset)",
            registry=r,
        )
        self.records_ahead_of_clock = Counter(
            "streamgnn_records_ahead_of_clock",
            "Records whose producer-set Kafka timestamp (CreateTime) ran more than "
            "--max-future-skew-ms ahead of this worker's clock: its clock is slow or their "
            "producers' are fast; their events are checked against this worker's clock "
            "(dead-lettered as ts_in_future if ahead)",
            registry=r,
        )
        self.dead_letters_shrunk = Counter(
            "streamgnn_dead_letters_shrunk",
            "Dead letters whose key, headers or value were cut to fit the DLQ's size limit",
            registry=r,
        )
        self.dlq_unwritable = Gauge(
            "streamgnn_dlq_unwritable",
            "1 while dead letters wait over 5 s for the broker's ack or cannot be written "
            "(ingestion is held up, and stops after the dlq timeout), else 0",
            registry=r,
        )
        self.dlq_topic_lost = Counter(
            "streamgnn_dlq_topic_lost",
            "Times the dead-letter topic was found deleted under the worker and created again "
            "(the letters it held are gone with it)",
            registry=r,
        )
        self.consumer_lag = Gauge(
            "streamgnn_consumer_lag",
            "Records between the store position and the partition end",
            ["partition"],
            registry=r,
        )
        self.restore_records = Counter(
            "streamgnn_restore_records",
            "Changelog records read while restoring a partition's state into the store",
            ["partition"],
            registry=r,
        )
        self.changelog_lag = Gauge(
            "streamgnn_changelog_lag",
            "Graph changelog records not yet folded into the trainer's graph, all partitions "
            "(streamgnn train)",
            registry=r,
        )
        self.changelog_folded = Counter(
            "streamgnn_changelog_records_folded",
            "Graph changelog records folded into the trainer's graph (streamgnn train; a "
            "restart folds the changelog from its beginning again)",
            registry=r,
        )
        self.assigned_partitions = Gauge(
            "streamgnn_assigned_partitions",
            "Interactions partitions this worker owns now (0 until it joined its group)",
            registry=r,
        )
        self.graph_nodes = Gauge(
            "streamgnn_graph_nodes", "Live nodes in this worker's graph store", registry=r
        )
        self.graph_edges = Gauge(
            "streamgnn_graph_edges", "Live edges of the partitions this worker owns", registry=r
        )
        self.edges_pruned = Counter(
            "streamgnn_edges_pruned", "Edges pruned below epsilon", registry=r
        )
        self.train_steps = Counter("streamgnn_train_steps", "Optimiser steps taken", registry=r)
        self.train_step_seconds = Histogram(
            "streamgnn_train_step_seconds",
            "Wall time of one training micro-batch",
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.train_loss = Gauge("streamgnn_train_loss", "Loss of the latest step", registry=r)
        self.checkpoint_failures = Counter(
            "streamgnn_checkpoint_failures",
            "Checkpoints the disk refused (full, failing, gone); training went on and the "
            "next was tried one checkpoint interval later",
            registry=r,
        )
        self.train_backlog = Gauge(
            "streamgnn_train_backlog_events",
            "Applied events waiting for the trainer (coalesced)",
            registry=r,
        )
        self.ids_evicted = Counter(
            "streamgnn_ids_evicted", "Node ids evicted from the id registry", ["kind"], registry=r
        )
        self.ids_refused = Counter(
            "streamgnn_ids_refused",
            "Node ids refused because the id registry is full",
            ["kind"],
            registry=r,
        )
        self.ids_live = Gauge(
            "streamgnn_ids_live",
            "Node ids the id registry holds (each keeps its rows until evicted; capped by "
            "--max-users / --max-items)",
            ["kind"],
            registry=r,
        )
        self.vectors_published = Counter(
            "streamgnn_vectors_published", "Embedding records published", ["kind"], registry=r
        )
        self.embedding_topics_lost = Counter(
            "streamgnn_embedding_topics_lost",
            "Embedding topics found deleted, or not the topic published to (another Kafka "
            "topic id); each was given every vector reported so far again",
            ["kind"],
            registry=r,
        )
        self.model_version = Gauge(
            "streamgnn_model_version", "Version of the model last published", registry=r
        )
        self.freshness = Histogram(
            "streamgnn_freshness_seconds",
            "Publish time minus append time, for every event a published vector reflects",
            buckets=FRESHNESS_BUCKETS,
            registry=r,
        )
        self.staleness = Gauge(
            "streamgnn_staleness_seconds",
            "Now minus the newest event time reflected in published vectors",
            registry=r,
        )
        # Every bounded label value exists from the start at 0, so rate() sees the first
        # increment and panels show 0 rather than no data.
        for reason in REJECTION_REASONS:
            self.events_rejected.labels(reason=reason)
        for reason in IGNORED_REASONS:
            self.events_ignored.labels(reason=reason)
        for kind in ("user", "item"):
            for counter in (
                self.ids_evicted,
                self.ids_refused,
                self.vectors_published,
                self.embedding_topics_lost,
            ):
                counter.labels(kind=kind)
            self.ids_live.labels(kind=kind)


def serve_metrics(metrics: PipelineMetrics, address: str) -> None:
    """Serve ``/metrics`` for ``metrics`` on ``host:port`` (port 0 is refused: unscrapeable)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) == 0:
        raise ConfigError(f"metrics address must be host:port, got {address!r}")
    try:
        start_http_server(int(port), addr=host, registry=metrics.registry)
    except OSError as exc:  # in use, or not an address of this host: one line, not a trace
        raise ConfigError(f"cannot serve metrics on {address}: {exc.strerror or exc}") from None


def scrape_metrics(address: str, timeout_s: float = 5.0) -> dict[str, float]:
    """One scrape of a ``/metrics`` endpoint: ``{'name{label="v",...}': value}``.

    Label sets are sorted by name; a sample without labels is keyed by its name alone.
    """
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=timeout_s) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def serves_metrics(address: str) -> bool:
    """Whether ``address`` answers a scrape now (e.g. a worker that finished starting)."""
    try:
        scrape_metrics(address)
    except OSError:
        return False
    return True


def owns_partitions(address: str) -> bool:
    """Whether the worker at ``address`` has joined its group and owns partitions: it then
    consumes what is produced (its publisher and trainer start before its consumer)."""
    try:
        return total(scrape_metrics(address), "streamgnn_assigned_partitions") > 0
    except OSError:
        return False


def total(samples: Mapping[str, float], name: str) -> float:
    """The sum of ``name`` over all its label sets (0 when absent).

    >>> total({'lag{partition="0"}': 3.0, 'lag{partition="1"}': 4.0, "lagging": 9.0}, "lag")
    7.0
    """
    return sum(v for key, v in samples.items() if key == name or key.startswith(name + "{"))


def histogram_quantile(q: float, samples: Mapping[str, float], name: str) -> float | None:
    """Prometheus' ``histogram_quantile`` over one scrape of histogram ``name``.

    Linear interpolation inside the bucket that holds the quantile, as Prometheus does;
    None before the first observation. A quantile in the ``+Inf`` bucket is reported as
    the largest finite bound.

    >>> s = {'h_bucket{le="1.0"}': 50.0, 'h_bucket{le="2.0"}': 100.0, 'h_bucket{le="+Inf"}': 100.0}
    >>> histogram_quantile(0.5, s, "h"), histogram_quantile(0.75, s, "h")
    (1.0, 1.5)
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {q!r}")
    prefix = f'{name}_bucket{{le="'
    buckets = sorted(
        (float(key[len(prefix) : key.index('"', len(prefix))]), count)
        for key, count in samples.items()
        if key.startswith(prefix)
    )
    if not buckets or buckets[-1][1] == 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 1.0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound
