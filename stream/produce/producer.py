"""Send interaction events to a topic at a target rate, or as fast as possible.

:func:`produce` is the library entry point (``streamgnn produce`` and the benchmarks call
it); :class:`InteractionProducer` is the Kafka side: librdkafka's producer (confluent-kafka),
idempotent with ``acks=all`` so a retried batch is never written twice, lingering a few
milliseconds so that events travel in batches. Each event is encoded once (compact JSON,
key = the user id) and handed over without a flush; one flush at the end waits for every
acknowledgement. librdkafka, not kafka-python: kafka-python's ``send`` is pure Python under
the GIL, so it could not offer 10,000 events/s on a small machine without taking the CPU the
worker it loads needs (a scratch run on the 2-core development machine, loaded: 6,600 vs
64,000 events/s sent as fast as possible to one local broker).

Pacing follows an absolute schedule: event ``k`` (from 0) is due ``k / rate`` seconds after
the start, and is never sent before. A sleep that oversleeps, or a slow send, does not
shift the later events: they are already due and go out back to back until the schedule
is met again, so the achieved rate does not drift below the target.

>>> class Recorder:
...     def __init__(self): self.sent = []
...     def send(self, key, value): self.sent.append((key, value))
...     def flush(self): pass
>>> sink = Recorder()
>>> events = [{"user_id": "u1", "item_id": "i9", "event_type": "view", "ts": 5}]
>>> produce(events, sink).sent, sink.sent
(1, [(b'u1', b'{"user_id":"u1","item_id":"i9","event_type":"view","ts":5}')])
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Message

from stream.errors import ConfigError, StreamGNNError
from stream.kafka.access import not_authorized
from stream.kafka.clients import confluent_producer
from stream.kafka.failure import kafka_error
from stream.kafka.topics import topic_absent
from stream.progress import progress_bar
from stream.settings import KafkaSettings

SendHook = Callable[[Mapping[str, object], int], None]
"""Called after each send with the event and the wall-clock send time in epoch ms."""

_MAX_SLEEP_S = 0.1  # sleep in slices so that a stop request is seen promptly
_BAR_EVERY = 256  # progress-bar updates are batched: tqdm per event would cost more than a send
_DELIVERY_TIMEOUT_MS = 120_000  # kafka-python's delivery timeout, which this producer had before
_QUEUE_FULL_WAIT_S = 0.05
_CLOSE_WAIT_S = 5.0
_TOPIC_CHECK_S = 10.0
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)  # built once, not per event


class EventSink(Protocol):
    """Where encoded events go: :class:`InteractionProducer`, or a recorder in tests."""

    def send(self, key: bytes, value: bytes) -> None: ...

    def flush(self) -> None: ...


@dataclass(frozen=True)
class ProduceReport:
    """What :func:`produce` did: events sent (and acknowledged), and over how long."""

    sent: int
    seconds: float

    @property
    def rate(self) -> float:
        """Achieved events per second, including the final flush."""
        return self.sent / self.seconds if self.seconds > 0 else 0.0


class InteractionProducer:
    """An idempotent, ``acks=all`` Kafka producer of encoded events to one topic.

    Delivery failures are counted by a callback instead of waiting on each send;
    :meth:`flush` raises :class:`~stream.errors.StreamGNNError` if any event was not
    acknowledged, so a lost event is never silent. A send that finds librdkafka's local
    queue full serves acknowledgements until there is room (backpressure, never a drop).
    """

    def __init__(self, kafka: KafkaSettings, topic: str, *, linger_ms: int = 5) -> None:
        if not topic:
            raise ConfigError("topic must not be empty")
        if linger_ms < 0:
            raise ConfigError(f"linger_ms must be >= 0, got {linger_ms!r}")
        self.topic = topic
        self._kafka = kafka
        self.failed = 0
        self._first_error: KafkaError | None = None
        options: dict[str, Any] = {
            "client.id": "streamgnn-produce",
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": linger_ms,
            "batch.size": 256 * 1024,
            "message.timeout.ms": _DELIVERY_TIMEOUT_MS,
        }
        try:
            self._producer = confluent_producer(kafka, options)
        except KafkaException as exc:  # a setting librdkafka refuses (e.g. an unreadable CA)
            raise StreamGNNError(f"cannot create a producer for Kafka: {exc}") from exc
        self._refuse_a_missing_topic(kafka.bootstrap_servers)

    def _refuse_a_missing_topic(self, where: str) -> None:
        """Raise :class:`ConfigError` when the broker answers that the topic does not exist
        (and will not create it): librdkafka would queue the first seconds of events and
        then fail every send. A broker that does not answer is left to the delivery
        timeout, as before."""
        if topic_absent(self._producer, self.topic, _TOPIC_CHECK_S):
            raise ConfigError(
                f"topic {self.topic!r} does not exist at {where}, and the broker does not "
                "create topics on demand: create it first"
            )

    def send(self, key: bytes, value: bytes) -> None:
        while True:
            try:
                self._producer.produce(self.topic, value, key, on_delivery=self._on_delivery)
                break
            except BufferError:  # the local queue is full: let acknowledgements drain it
                self._producer.poll(_QUEUE_FULL_WAIT_S)
            except KafkaException as exc:  # e.g. the topic was deleted meanwhile
                error = kafka_error(exc)
                if error.code() == KafkaError._FATAL:
                    self.flush(0)  # raises with the fatal error itself, not "Fatal error"
                refused = not_authorized(error, self._kafka, f"write to {self.topic!r}")
                if refused is not None:
                    raise refused from None
                raise StreamGNNError(f"cannot send to {self.topic!r}: {error.str()}") from None
        self._producer.poll(0)  # serve delivery callbacks as they arrive

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until every event sent so far is acknowledged (or failed)."""
        try:
            left = self._producer.flush() if timeout_s is None else self._producer.flush(timeout_s)
        except (KafkaException, SystemError) as exc:  # fatal: nothing more can be sent
            # confluent-kafka raises a fatal error while it runs a delivery callback as a
            # SystemError caused by the KafkaException
            fatal = exc if isinstance(exc, KafkaException) else exc.__cause__
            if not isinstance(fatal, KafkaException):
                raise
            self._first_error = fatal.args[0]  # the cause; the purged records followed it
            left = 0
            self.failed = self.failed or 1
        refused = not_authorized(self._first_error, self._kafka, f"write to {self.topic!r}")
        if refused is not None:
            raise refused
        if self.failed or left:
            raise StreamGNNError(
                f"{self.failed + left} events to {self.topic!r} were not acknowledged "
                f"({left} still waiting); first error: {self._first_error}"
            )

    def close(self) -> None:
        """Give what is still queued a moment to go; :meth:`flush` is what waits for it
        (and says why a producer that failed for good sent nothing more)."""
        with contextlib.suppress(KafkaException, SystemError):  # as in flush
            self._producer.flush(_CLOSE_WAIT_S)

    def __enter__(self) -> InteractionProducer:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _on_delivery(self, error: KafkaError | None, _message: Message) -> None:
        if error is None:
            return
        self.failed += 1
        if self._first_error is None:
            self._first_error = error


def encode_event(event: Mapping[str, object]) -> tuple[bytes, bytes]:
    """``(key, value)``: the user id in UTF-8, and the event as compact JSON.

    >>> encode_event({"user_id": 7, "item_id": "x", "event_type": "click", "ts": 1})
    (b'7', b'{"user_id":7,"item_id":"x","event_type":"click","ts":1}')
    """
    key = str(event["user_id"]).encode()
    return key, _JSON.encode(event).encode()


def produce(
    events: Iterable[Mapping[str, object]],
    sink: EventSink,
    *,
    rate: float = 0.0,
    count: int | None = None,
    duration_s: float | None = None,
    stop: threading.Event | None = None,
    progress: bool = False,
    total: int | None = None,
    on_send: SendHook | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ProduceReport:
    """Send ``events`` to ``sink`` until they run out or a limit is reached, then flush.

    Args:
        events: event dicts; the next one is taken only when it is due, so an event whose
            ``ts`` is read from the wall clock as it is taken carries its send time.
        sink: where encoded events go (:class:`InteractionProducer`).
        rate: events per second on an absolute schedule; 0 sends as fast as possible.
        count: send at most this many events (None: no limit).
        duration_s: stop once this many seconds have passed (None: no limit).
        stop: stop early once this is set (e.g. by a SIGTERM handler).
        progress: show a progress bar on stderr (when tqdm is installed).
        total: the bar's total when known (defaults to ``count``).
        on_send: called after each send with the event and its send time (epoch ms).
        clock, sleep: monotonic seconds and a sleep; replaced in tests of the schedule.
    """
    if not (math.isfinite(rate) and rate >= 0):
        raise ConfigError(f"rate must be finite and >= 0 events/s, got {rate!r}")
    if count is not None and count < 0:
        raise ConfigError(f"count must be >= 0, got {count!r}")
    if duration_s is not None and not (math.isfinite(duration_s) and duration_s >= 0):
        raise ConfigError(f"duration_s must be finite and >= 0, got {duration_s!r}")
    bar = progress_bar(progress, total if total is not None else count, "ev", mininterval=0.5)
    source = iter(events)
    start = clock()
    deadline = math.inf if duration_s is None else start + duration_s
    limit = math.inf if count is None else count
    interval = 1.0 / rate if rate else 0.0
    sent = 0
    try:
        while sent < limit and not (stop is not None and stop.is_set()):
            due = start + sent * interval
            if due >= deadline or not _wait_until(due, deadline, stop, clock, sleep):
                break
            try:
                event = next(source)
            except StopIteration:
                break
            sink.send(*encode_event(event))
            if on_send is not None:
                on_send(event, time.time_ns() // 1_000_000)
            sent += 1
            if bar is not None and sent % _BAR_EVERY == 0:
                bar.update(_BAR_EVERY)
        sink.flush()
    finally:
        if bar is not None:
            bar.update(sent - bar.n)
            bar.close()
    return ProduceReport(sent, clock() - start)


def _wait_until(
    due: float,
    deadline: float,
    stop: threading.Event | None,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> bool:
    """Sleep until ``due``; False when the deadline passed or a stop came first."""
    while True:
        now = clock()
        if now >= deadline:
            return False
        if now >= due:
            return True
        if stop is not None and stop.is_set():
            return False
        sleep(min(due - now, _MAX_SLEEP_S))
