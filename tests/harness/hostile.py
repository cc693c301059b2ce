"""Hostile records against a live worker process: what each must become, and the check.

Shared by tests/stream/test_hostile_worker.py (hypothesis draws the records) and
bench/hostile.py (a seeded random stream, more records). Every record belongs to one of
:data:`CLASSES`, and :func:`build` says what the worker must make of it
(:attr:`HostileRecord.expect`):

- ``applied``: the store holds its own edge with exactly its weight (applied once);
- ``duplicate``: a repeat of an applied ``event_id``: its edge still holds the weight once;
- ``ignored``: an event that changes no edge (weight 0): no edge;
- ``dlq:<reason>``: exactly one dead letter names its partition and offset, with that reason;
- ``refused``: the broker refused it (past its size limit); it never reached the topic.

Anything else is a *silent drop* (nothing happened) or a *double* (applied or
dead-lettered twice); a worker that exits unasked is a *crash*; a batch not fully in the
store within the deadline is a *stall*.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from stream.errors import StoreError
from stream.events import EventValidator, Rejection
from stream.local_broker.broker import LocalKafkaBroker
from stream.settings import EventSettings
from stream.state.graph_store import DecayedGraphStore
from tests.harness.raw_records import RawRecord, RecordSender, Sent
from tests.harness.worker_process import WorkerProcess, worker_env

MB = 1024 * 1024
HOUR_MS = 3_600_000
MIN_EVENT_TS_MS = 946_684_800_000  # 2000-01-01: the oldest time the worker under test accepts
YEAR_2999_MS = 32_472_144_000_000
BROKER_LIMIT = 8 * MB  # the local broker's message.max.bytes (stream/local_broker/broker.py)
CLASSES = (
    "good",
    "compressed",
    "header_values",
    "duplicate",
    "zero_weight",
    "bad_json",
    "wrong_type",
    "null_key",
    "arbitrary_bytes",
    "ts_future",
    "ts_seconds",
    "ts_micros",
    "ts_ancient",
    "record_ts_negative",
    "record_ts_future",
    "header_key_not_utf8",
    "oversize_key",
    "oversize_value",
    "past_broker_limit",
)
SIGTERM_LIMIT_S = 10.0
# A worker stops with status 0 on SIGTERM; one signalled while Python still imports its
# modules (before it opened anything) dies of the signal's default action instead.
CLEAN_EXITS = frozenset({0, -signal.SIGTERM})
EVENTS = EventSettings(min_ts_ms=MIN_EVENT_TS_MS)


@dataclass(frozen=True)
class HostileRecord:
    cls: str
    record: RawRecord
    expect: str
    edge: tuple[str, str, str] | None = None  # (user, item, event type) if it has an edge
    ts: int = 0  # its event time
    weight: float = 0.0  # the weight its edge must hold at ``ts`` (beta * weight)


def _event(seq: int, ts: int, **extra: object) -> tuple[bytes, bytes]:
    user = f"h{seq}"
    body = {"user_id": user, "item_id": f"x{seq}", "event_type": "click", "ts": ts, **extra}
    return user.encode(), json.dumps(body).encode()


def build(
    cls: str,
    seq: int,
    now_ms: int,
    *,
    size: int = 0,
    codec: str = "none",
    raw: bytes = b"\xff",
    copies: int = 2,
) -> list[HostileRecord]:
    """The record(s) of class ``cls`` (``seq`` makes its ids unique), and their fate.

    ``size`` sizes the oversize classes, ``raw`` is arbitrary bytes (a header key, or the
    key and value of ``arbitrary_bytes``), ``copies`` the number of duplicates.
    """
    ts = now_ms - HOUR_MS + seq % 1_000  # recent, and in the past whatever the clocks say
    key, value = _event(seq, ts)

    def one(record: RawRecord, expect: str) -> list[HostileRecord]:
        return [HostileRecord(cls, record, expect)]

    def oracle(record: RawRecord, expect: str | None = None) -> list[HostileRecord]:
        """The validator's verdict (property-tested in tests/stream/test_events.py)."""
        parsed = EventValidator(EVENTS).parse(record.key, record.value, now_ms)
        if isinstance(parsed, Rejection):
            return one(record, f"dlq:{parsed.reason}")
        beta = EVENTS.behaviours[parsed.event_type].beta
        return [
            HostileRecord(
                cls,
                record,
                expect or ("ignored" if parsed.weight == 0 else "applied"),
                (parsed.user_id, parsed.item_id, parsed.event_type),
                parsed.ts,
                beta * parsed.weight,
            )
        ]

    stamped = RawRecord(key, value, timestamp_ms=now_ms, codec=codec)
    if cls in ("good", "compressed"):
        return oracle(stamped)
    if cls == "header_values":  # valid UTF-8 keys, any value bytes: harmless
        headers = [(raw.decode("utf-8", "replace").encode(), raw), (b"none", None)]
        return oracle(RawRecord(key, value, headers, now_ms, codec))
    if cls == "duplicate":
        k, v = _event(seq, ts, event_id=f"e{seq}")
        copy = RawRecord(k, v, timestamp_ms=now_ms, codec=codec)
        return [*oracle(copy), *(oracle(copy, "duplicate")[0] for _ in range(copies - 1))]
    if cls == "zero_weight":
        return oracle(RawRecord(*_event(seq, ts, weight=0), timestamp_ms=now_ms, codec=codec))
    if cls == "bad_json":
        return oracle(RawRecord(key, value[: len(value) // 2], timestamp_ms=now_ms, codec=codec))
    if cls == "wrong_type":
        return oracle(RawRecord(*_event(seq, ts, weight=True), timestamp_ms=now_ms, codec=codec))
    if cls == "null_key":
        return oracle(RawRecord(None, value, timestamp_ms=now_ms, codec=codec))
    if cls == "arbitrary_bytes":
        return oracle(RawRecord(raw[: len(raw) // 2], raw, timestamp_ms=now_ms, codec=codec))
    if cls in ("ts_future", "ts_seconds", "ts_micros", "ts_ancient"):
        when = {
            "ts_future": now_ms + 24 * HOUR_MS,
            "ts_seconds": ts // 1000,
            "ts_micros": ts * 1000,
            "ts_ancient": MIN_EVENT_TS_MS - 365 * 24 * HOUR_MS,
        }[cls]
        return oracle(RawRecord(*_event(seq, when), timestamp_ms=now_ms, codec=codec))
    if cls == "record_ts_negative":  # no usable record clock: the worker's own is used
        return oracle(RawRecord(key, value, timestamp_ms=-max(size, 1), codec=codec))
    if cls == "record_ts_future":
        return oracle(RawRecord(key, value, timestamp_ms=YEAR_2999_MS, codec=codec))
    if cls == "header_key_not_utf8":
        header_key = raw + b"\xff" if _utf8(raw) else raw
        plain = "none" if codec == "none" else "gzip"
        record = RawRecord(key, value, [(header_key, b"v")], now_ms, plain)
        # librdkafka hands header keys over as C strings: a key is read up to its first NUL
        # byte, so only invalid UTF-8 before it makes the record undecodable.
        if _utf8(header_key.split(b"\0")[0]):
            return oracle(record)
        return one(record, "dlq:undecodable")
    if cls == "oversize_key":
        return oracle(RawRecord(b"k" * max(size, 300), value, timestamp_ms=now_ms, codec=codec))
    if cls == "oversize_value":
        big = max(size, EVENTS.max_event_bytes + 1)
        return oracle(RawRecord(key, b"v" * big, timestamp_ms=now_ms, codec=codec))
    if cls == "past_broker_limit":
        record = RawRecord(key, b"v" * (BROKER_LIMIT + max(size, 1)), timestamp_ms=now_ms)
        return one(record, "refused")
    raise ValueError(f"unknown class {cls!r}; valid: {', '.join(CLASSES)}")


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@dataclass
class Outcome:
    """What one batch (or a whole run) came to."""

    tried: Counter[str] = field(default_factory=Counter)  # records per class
    silent_drops: list[str] = field(default_factory=list)
    doubles: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)  # handled, but not as expected
    stalls: int = 0

    @property
    def problems(self) -> list[str]:
        return self.silent_drops + self.doubles + self.wrong


class HostileRun:
    """A worker process consuming a fresh topic, and the means to judge what it did.

    Args:
        broker: a started local broker.
        workdir: where the store, logs and the worker's files go.
        partitions: of the interactions topic.
        dlq_configs: configs of the DLQ; by default a ``max.message.bytes`` of 1 MiB,
            smaller than the topic's, so big records must be shrunk into letters.
        env: more worker environment (e.g. :func:`tests.harness.worker_process.training_env`).
    """

    def __init__(
        self,
        broker: LocalKafkaBroker,
        workdir: Path,
        partitions: int = 3,
        dlq_configs: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.bootstrap = broker.bootstrap_servers
        self.topic = f"hostile-{time.time_ns() % 10**12}"
        self.dlq = f"{self.topic}.dlq"
        broker.create_topics({self.topic: partitions})
        broker.create_topics({self.dlq: 1}, dlq_configs or {"max.message.bytes": str(MB)})
        workdir.mkdir(parents=True, exist_ok=True)
        self.store_path = workdir / "store"
        self.log_path = workdir / "worker.log"
        self.env = worker_env(self.bootstrap, self.topic, f"g-{self.topic}", self.store_path, 500)
        self.env["STREAMGNN_MIN_TS_MS"] = str(MIN_EVENT_TS_MS)
        self.env.update(env or {})
        self.metrics_address = self.env["STREAMGNN_METRICS_ADDRESS"]
        self.worker = WorkerProcess(self.env, self.log_path)
        self.sigterm_s: list[float] = []
        self.exit_codes: list[int] = []
        self.crashes: list[str] = []  # each unasked exit: its status and the log's tail
        self._letters = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            fetch_max_bytes=64 * MB,
            max_partition_fetch_bytes=16 * MB,
        )
        self._dlq_partition = TopicPartition(self.dlq, 0)
        self._letters.assign([self._dlq_partition])
        self._letters.seek_to_beginning(self._dlq_partition)
        self._sender = RecordSender(self.bootstrap)
        self._seen: Counter[tuple[int, int]] = Counter()
        self._reasons: dict[tuple[int, int], set[str]] = {}

    def start(self) -> None:
        self.worker.start()

    def alive(self) -> bool:
        """False (and a crash counted) if the worker exited without being told to."""
        status = self.worker.exit_status()
        if status is None:
            return True
        tail = self.log_path.read_text(errors="replace")[-3_000:]
        self.crashes.append(f"exit status {status}; the log ends:\n{tail}")
        self.worker.start()
        return False

    def sigterm(self, timeout_s: float = 60.0) -> float:
        """SIGTERM the worker, wait for it to exit, record the time and status, restart it."""
        start = time.monotonic()
        self.exit_codes.append(self.worker.terminate(timeout_s))
        elapsed = time.monotonic() - start
        self.sigterm_s.append(elapsed)
        self.worker.start()
        return elapsed

    def send(self, records: Sequence[HostileRecord]) -> list[Sent]:
        return self._sender.send(self.topic, [r.record for r in records])

    def wait(self, sent: Sequence[Sent], timeout_s: float = 120.0) -> bool:
        """Wait until the store holds every partition up to what was sent; False: a stall."""
        ends: dict[int, int] = {}
        for s in sent:
            if s.refused is None:
                ends[s.partition] = max(ends.get(s.partition, 0), s.offset + 1)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.alive()
            positions = self.positions()
            if all(positions.get(p, 0) >= end for p, end in ends.items()):
                return True
            time.sleep(0.2)
        return False

    def check(self, records: Sequence[HostileRecord], sent: Sequence[Sent]) -> Outcome:
        """Judge each record of a batch the store has fully taken in (see module doc)."""
        outcome = Outcome(tried=Counter(r.cls for r in records))
        self._read_letters()
        applied: Counter[tuple[str, str, str]] = Counter()
        with DecayedGraphStore(self.store_path, EVENTS.behaviours, read_only=True) as store:
            for record, where in zip(records, sent, strict=True):
                name = f"{record.cls}@{where.partition}:{where.offset} expected {record.expect}"
                if record.expect == "refused":
                    if where.refused is None:
                        outcome.wrong.append(f"{name}: the broker took it")
                    continue
                if where.refused is not None:
                    outcome.wrong.append(f"{name}: the broker refused it ({where.refused})")
                    continue
                place = (where.partition, where.offset)
                letters = self._seen[place]
                if record.expect.startswith("dlq:"):
                    reason = record.expect[4:]
                    if letters == 0:
                        outcome.silent_drops.append(name)
                    elif letters > 1:
                        outcome.doubles.append(f"{name}: {letters} letters")
                    elif self._reasons[place] != {reason}:
                        outcome.wrong.append(f"{name}: letter says {self._reasons[place]}")
                    continue
                if letters:
                    outcome.wrong.append(f"{name}: dead-lettered as {self._reasons[place]}")
                    continue
                assert record.edge is not None
                weight = store.edge_weight(*record.edge, record.ts)
                if record.expect == "ignored":
                    if weight != 0.0:
                        outcome.wrong.append(f"{name}: left an edge of weight {weight}")
                    continue
                applied[record.edge] += record.expect == "applied"
                if abs(weight - record.weight) > 1e-9 * max(record.weight, 1.0):
                    target = outcome.silent_drops if weight == 0.0 else outcome.doubles
                    target.append(f"{name}: edge weight {weight}, not {record.weight}")
        outcome.doubles += [f"edge {e} applied by {n} records" for e, n in applied.items() if n > 1]
        return outcome

    def close(self) -> None:
        if self.worker.exit_status() is None:
            self.exit_codes.append(self.worker.terminate())
        self._letters.close()
        self._sender.close()

    def positions(self) -> dict[int, int]:
        """The store's next offset per partition (empty before the worker created it)."""
        try:
            with DecayedGraphStore(self.store_path, EVENTS.behaviours, read_only=True) as store:
                return {p: o for (t, p), (o, _) in store.positions().items() if t == self.topic}
        except StoreError:  # not created yet
            return {}

    def _read_letters(self) -> None:
        end = self._letters.end_offsets([self._dlq_partition])[self._dlq_partition]
        while self._letters.position(self._dlq_partition) < end:
            for batch in self._letters.poll(timeout_ms=1_000).values():
                for letter in batch:
                    headers = dict(letter.headers)
                    place = (
                        int(headers["dlq.source.partition"]),
                        int(headers["dlq.source.offset"]),
                    )
                    self._seen[place] += 1
                    self._reasons.setdefault(place, set()).add(headers["dlq.reason"].decode())
