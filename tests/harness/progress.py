"""How far a worker under test has got, read three ways for the fault scenarios.

- :class:`GroupProgress`: the worker's informational group commits (through Kafka);
- :class:`MetricsProgress`: its Prometheus counter of applied events (no Kafka needed, so
  it keeps reading while the network to the broker is cut);
- :class:`StoreCompletion`: whether its store holds the whole stream (the store itself).
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Protocol

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from stream.behaviours import DEFAULT_BEHAVIOURS
from stream.errors import StoreError
from stream.state.graph_store import DecayedGraphStore


class Progress(Protocol):
    """How far the worker has got: a count that grows as events reach the store."""

    def committed(self) -> int:
        """The count now, or -1 while it cannot be read."""
        ...

    def close(self) -> None: ...


class GroupProgress:
    """Events the worker has stored, read from its informational group commits."""

    def __init__(self, bootstrap: str, group_id: str, topic: str) -> None:
        # A consumer that never subscribes only reads the group's commits; it never joins.
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False
        )
        partitions = self._consumer.partitions_for_topic(topic) or set()
        self._partitions = [TopicPartition(topic, p) for p in sorted(partitions)]

    def committed(self) -> int:
        try:
            offsets = [self._consumer.committed(tp) for tp in self._partitions]
        except KafkaError:  # broker restarting: no progress to report yet
            return -1
        return sum(offset or 0 for offset in offsets)

    def reached(self, events: float) -> bool:
        """Whether the group has committed at least ``events`` offsets (a wait condition)."""
        return self.committed() >= events

    def close(self) -> None:
        self._consumer.close()


class StoreCompletion:
    """Whether the worker's store holds the whole stream, read beside the live worker.

    Group commits are informational: a SIGKILL between a partition's last store write and
    its commit leaves that commit behind for good (the restarted worker has nothing left to
    read there, so it never commits again). So the end of the stream is read from the
    store itself, opened read-only, at most every ``every_s`` seconds. Never latched: a
    restarted worker with a changelog may rewind a partition to its committed position
    before it applies the rest again.
    """

    def __init__(self, store_path: Path, topic: str, events: int, every_s: float = 0.5) -> None:
        self._path, self._topic, self._events, self._every_s = store_path, topic, events, every_s
        self._checked_at = -every_s
        self._complete = False

    def __call__(self) -> bool:
        if time.monotonic() - self._checked_at < self._every_s:
            return self._complete
        self._checked_at = time.monotonic()
        self._complete = False
        if not self._path.is_dir():
            return False
        try:
            with DecayedGraphStore(self._path, DEFAULT_BEHAVIOURS, read_only=True) as store:
                positions = store.positions()
        except StoreError:  # not created yet
            return False
        stored = sum(o for (topic, _), (o, _) in positions.items() if topic == self._topic)
        self._complete = stored >= self._events
        return self._complete


def metric_value(address: str, name: str) -> float:
    """The sum of a metric's samples on a process's ``/metrics`` (-1 while it serves none:
    not started yet, or the metric not exported yet)."""
    try:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=2.0) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError):  # not serving yet
        return -1.0
    found = re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)
    return sum(float(v) for v in found) if found else -1.0


class MetricsProgress:
    """Events the running worker has applied, read from its Prometheus endpoint.

    Needs no Kafka connection, so it keeps reading while the network to the broker is
    cut; it counts from zero again after a worker restart.
    """

    def __init__(self, metrics_address: str) -> None:
        self._address = metrics_address

    def committed(self) -> int:
        return int(metric_value(self._address, "streamgnn_events_applied_total"))

    def close(self) -> None:
        pass
