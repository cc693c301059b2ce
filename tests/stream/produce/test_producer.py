"""``produce``: the absolute send schedule, the limits, the hook and the final flush.

The schedule is checked against a fake clock (exact, no timing at all) and once against
the real clock with one-sided bounds only: an event is never sent before it is due, and
the whole run is not absurdly slow. Nothing here flakes on a loaded machine.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator

import pytest

from stream.errors import ConfigError
from stream.produce import ProduceReport, encode_event, produce


class FakeTime:
    """A clock that moves only when slept on (or when a test moves it)."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class RecordingSink:
    def __init__(self, clock: FakeTime | None = None, send_cost_s: float = 0.0) -> None:
        self.records: list[tuple[bytes, bytes]] = []
        self.sent_at: list[float] = []
        self.flushes = 0
        self._time = clock
        self._cost = send_cost_s

    def send(self, key: bytes, value: bytes) -> None:
        self.sent_at.append(self._time.now if self._time else time.monotonic())
        self.records.append((key, value))
        if self._time is not None and len(self.records) % 10 == 0:
            self._time.now += self._cost  # every tenth send is slow

    def flush(self) -> None:
        self.flushes += 1


def _events() -> Iterator[dict[str, object]]:
    for k in itertools.count():
        yield {"user_id": f"u{k % 7}", "item_id": f"i{k}", "event_type": "view", "ts": k}


def test_event_k_is_sent_at_k_over_rate_and_slow_sends_do_not_shift_the_schedule() -> None:
    fake = FakeTime()
    rate, n = 1000.0, 500
    sink = RecordingSink(fake, send_cost_s=5 / rate)  # a stall of five intervals every 10
    report = produce(_events(), sink, rate=rate, count=n, clock=fake.clock, sleep=fake.sleep)
    assert report.sent == n == len(sink.records)
    assert all(t >= k / rate - 1e-12 for k, t in enumerate(sink.sent_at))
    # Stalls are caught up, not accumulated: the run ends within one stall of n / rate.
    assert report.seconds <= n / rate + 5 / rate + 1e-9
    assert sink.flushes == 1


def test_the_real_clock_never_sends_early_and_is_not_absurdly_slow() -> None:
    rate, n = 2000.0, 300
    sink = RecordingSink()
    before = time.monotonic()
    report = produce(_events(), sink, rate=rate, count=n)
    assert report.sent == n
    assert all(t >= before + k / rate for k, t in enumerate(sink.sent_at))
    assert report.seconds < 10 * n / rate + 2.0


def test_rate_zero_sends_without_sleeping() -> None:
    fake = FakeTime()
    slept: list[float] = []
    report = produce(
        _events(), RecordingSink(fake), count=1000, clock=fake.clock, sleep=slept.append
    )
    assert report.sent == 1000 and slept == []


def test_duration_limit_stops_at_the_deadline() -> None:
    fake = FakeTime()
    sink = RecordingSink(fake)
    report = produce(
        _events(), sink, rate=100.0, duration_s=2.0, clock=fake.clock, sleep=fake.sleep
    )
    assert report.sent == 200  # events due at 0, 0.01, ..., 1.99 s
    assert report.seconds <= 2.0  # it does not wait for an event that is never sent


def test_a_finite_source_ends_the_run_and_is_flushed() -> None:
    sink = RecordingSink()
    events = list(itertools.islice(_events(), 42))
    report = produce(events, sink, count=1000)
    assert report.sent == 42 and sink.flushes == 1
    assert sink.records == [encode_event(e) for e in events]


def test_a_stop_request_ends_the_run_without_waiting_for_the_next_slot() -> None:
    fake = FakeTime()
    stop = threading.Event()
    sink = RecordingSink(fake)

    def on_send(event: object, sent_ms: int) -> None:
        if len(sink.records) == 10:
            stop.set()

    report = produce(
        _events(), sink, rate=5.0, stop=stop, on_send=on_send, clock=fake.clock, sleep=fake.sleep
    )
    assert report.sent == 10 and sink.flushes == 1
    assert report.seconds == pytest.approx(9 / 5.0)  # the 10th send; the 11th was due at 2 s


def test_a_stop_from_another_thread_interrupts_a_long_wait() -> None:
    stop = threading.Event()
    timer = threading.Timer(0.2, stop.set)
    timer.start()
    try:
        report = produce(_events(), RecordingSink(), rate=0.05, stop=stop)  # 2nd event at 20 s
    finally:
        timer.cancel()
    assert report.sent == 1
    assert report.seconds < 10.0


def test_the_hook_sees_each_event_with_its_wall_clock_send_time() -> None:
    seen: list[tuple[object, int]] = []
    before = time.time_ns() // 1_000_000
    produce(_events(), RecordingSink(), count=5, on_send=lambda e, ms: seen.append((e["ts"], ms)))
    after = time.time_ns() // 1_000_000
    assert [ts for ts, _ in seen] == [0, 1, 2, 3, 4]
    assert all(before <= ms <= after for _, ms in seen)


def test_progress_bar_counts_every_event(capsys: pytest.CaptureFixture[str]) -> None:
    produce(_events(), RecordingSink(), count=600, progress=True)
    assert "600/600" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("options", "named"),
    [({"rate": -1.0}, "rate"), ({"rate": float("inf")}, "rate"), ({"count": -1}, "count"),
     ({"duration_s": float("nan")}, "duration_s")],
)  # fmt: skip
def test_bad_limits_are_refused_naming_the_value(options: dict[str, float], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        produce(_events(), RecordingSink(), **options)  # type: ignore[arg-type]


def test_report_rate_of_an_empty_run_is_zero() -> None:
    assert ProduceReport(0, 0.0).rate == 0.0
