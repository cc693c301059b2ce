"""A freshly started broker's JVM warmed up before a benchmark offers its load.

A broker just started runs Kafka's request paths in the interpreter until the JIT has
compiled them, which takes it tens of seconds of traffic: measured on this 2-core machine
(scratch, 2026-12-06, 2,000 events/s produced idempotently and consumed by one group), its
CPU was 0.87 of a core in the first 5 s, 0.75 in the next, 0.43 at 20 s and 0.18-0.22 from
40 s on. A benchmark that starts its load on such a broker measures that warm-up in its
first seconds, on cores the worker shares: a deployed broker has long been warm. So the
freshness benchmark first sends synthetic events at its first load's rate to a topic of
their own, read by a consumer group, for ``seconds`` (the worker under test starts after
and never sees them), and reports the broker's CPU every 5 s of it, to show it settled.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psutil

from bench.rss import Series, cpu_seconds
from stream.kafka.clients import confluent_consumer
from stream.local_broker.broker import LocalKafkaBroker
from stream.produce.producer import InteractionProducer, produce
from stream.produce.synthetic import SyntheticConfig, SyntheticStream, wall_clock_ms
from stream.settings import KafkaSettings

TOPIC = "broker-warmup"
INTERVAL_S = 5.0
READ_WAIT_S = 10.0  # for the consumer to read what was sent, once sending is done


def warm_broker(broker: LocalKafkaBroker, rate: int, seconds: float) -> dict[str, Any]:
    """Produce at ``rate`` events/s for ``seconds`` to :data:`TOPIC` while a consumer group
    reads it; the broker's CPU (cores) every :data:`INTERVAL_S` meanwhile."""
    if seconds <= 0:
        return {"broker_warmup_s": 0.0, "broker_cpu_cores_every_5s": []}
    if broker.pid is None:
        raise RuntimeError("the broker is not running")
    kafka = KafkaSettings(broker.bootstrap_servers)
    broker.create_topics({TOPIC: 2})
    cpu = cpu_seconds([broker.pid], INTERVAL_S)
    done = threading.Event()
    read = [0]
    reader = threading.Thread(target=_read_until, args=(kafka, done, read), daemon=True)
    reader.start()
    before = sum(psutil.Process(broker.pid).cpu_times()[:2])
    cpu.start()
    events = SyntheticStream(SyntheticConfig(late_share=0.0, seed=rate + 7)).events(wall_clock_ms)
    try:
        with InteractionProducer(kafka, TOPIC) as producer:
            report = produce(events, producer, rate=rate, duration_s=seconds)
        deadline = time.monotonic() + READ_WAIT_S
        while read[0] < report.sent and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        done.set()
        reader.join(30)
        cpu.stop()
    return {
        "broker_warmup_s": seconds,
        "broker_warmup_sent": report.sent,
        "broker_warmup_read": read[0],
        "broker_cpu_cores_every_5s": _rates(cpu, before),
    }


def _read_until(kafka: KafkaSettings, done: threading.Event, read: list[int]) -> None:
    """Read :data:`TOPIC` in a consumer group until ``done``, counting into ``read[0]``."""
    consumer = confluent_consumer(
        kafka, {"group.id": "broker-warmup", "auto.offset.reset": "earliest"}
    )
    try:
        consumer.subscribe([TOPIC])
        while not done.is_set():
            read[0] += sum(1 for m in consumer.consume(500, 0.1) if m.error() is None)
    finally:
        consumer.close()


def _rates(series: Series, before: float) -> list[list[float]]:
    """``[seconds since start, cores]`` per interval of a CPU-seconds series that read
    ``before`` as it started."""
    out, (last_at, last_used) = [], (0.0, before)
    for at, used in series.samples:
        out.append([round(at, 1), round((used - last_used) / (at - last_at), 3)])
        last_at, last_used = at, used
    return out
