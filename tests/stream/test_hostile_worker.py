"""A live worker process against hostile records through the real broker (hypothesis).

Each example sends one batch of 260 records drawn from every class of
``tests.harness.hostile.CLASSES`` (bad JSON, wrong types, times in the future, in seconds,
in microseconds or ancient, negative and far-future record timestamps, header keys that are
not UTF-8, arbitrary bytes, weight 0, duplicated event ids, oversize keys and values, every
compression codec, good events between them), plus now and then one multi-megabyte record
(shrunk into its dead letter, or refused by the broker past its limit). Some examples
SIGTERM the worker before or right after sending and start it again.

Invariants, per example: the worker never exits unasked; SIGTERM ends it within 10 s with
status 0; the batch reaches the store (no stall); every good event is applied exactly once
(its own edge holds its weight once), duplicates and weight-0 events change nothing, every
bad record has exactly one dead letter with the validator's reason. 40 examples: over
10,000 records (asserted at the end).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from stream.local_broker.broker import LocalKafkaBroker
from tests.harness.hostile import (
    CLASSES,
    CLEAN_EXITS,
    MB,
    SIGTERM_LIMIT_S,
    HostileRun,
    build,
)

pytestmark = pytest.mark.integration

RECORDS_PER_EXAMPLE = 260
EXAMPLES = 40
EVERYDAY = tuple(c for c in CLASSES if c != "past_broker_limit")
CODECS = ("none", "none", "gzip", "snappy", "lz4", "zstd")

specs = st.tuples(
    st.sampled_from(EVERYDAY),
    st.sampled_from([300, 2_000, 70_000, 120_000]),  # sizes of oversize keys and values
    st.sampled_from(CODECS),
    st.binary(min_size=1, max_size=12),  # header keys, arbitrary keys and values
    st.integers(2, 50),  # copies of a duplicated event
)
huge = st.sampled_from(
    [None, None, ("oversize_key", 7 * MB), ("oversize_value", 7 * MB), ("past_broker_limit", MB)]
)
SEQ = itertools.count()
TRIED: list[int] = []


@pytest.fixture(scope="module")
def hostile(
    kafka_broker: LocalKafkaBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HostileRun]:
    run = HostileRun(kafka_broker, tmp_path_factory.mktemp("hostile"))
    run.start()
    try:
        yield run
    finally:
        run.close()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    phases=[Phase.generate],  # a stateful worker: shrinking would replay against it
    suppress_health_check=list(HealthCheck),
)
@given(
    batch=st.lists(specs, min_size=RECORDS_PER_EXAMPLE, max_size=RECORDS_PER_EXAMPLE),
    big=huge,
    sigterm=st.sampled_from(["no"] * 6 + ["before sending", "after sending"]),
)
def test_hostile_records_never_stop_stall_or_slip_past_the_worker(
    hostile: HostileRun,
    batch: list[tuple[str, int, str, bytes, int]],
    big: tuple[str, int] | None,
    sigterm: str,
) -> None:
    now = int(time.time() * 1000)
    records = [
        record
        for cls, size, codec, raw, copies in batch
        for record in build(cls, next(SEQ), now, size=size, codec=codec, raw=raw, copies=copies)
    ]
    if big is not None:
        records += build(big[0], next(SEQ), now, size=big[1])
    assert hostile.alive(), "the worker exited unasked"
    if sigterm == "before sending":
        assert hostile.sigterm() <= SIGTERM_LIMIT_S
    sent = hostile.send(records)
    if sigterm == "after sending":
        assert hostile.sigterm() <= SIGTERM_LIMIT_S
    assert set(hostile.exit_codes) <= CLEAN_EXITS, hostile.exit_codes
    assert hostile.wait(sent), "stalled: the batch did not reach the store"
    assert hostile.alive(), "the worker exited unasked"
    outcome = hostile.check(records, sent)
    assert not outcome.problems, outcome.problems[:20]
    TRIED.append(len(records))


def test_over_ten_thousand_hostile_records_were_tried(hostile: HostileRun) -> None:
    """Runs after the hypothesis test (same module, in order)."""
    assert sum(TRIED) >= 10_000
    assert not hostile.crashes, "\n\n".join(hostile.crashes)
    assert hostile.sigterm_s and max(hostile.sigterm_s) <= SIGTERM_LIMIT_S


def test_hostile_classes_build_what_they_promise(tmp_path: Path) -> None:
    """The oracle itself: each class lands where its name says (no broker needed)."""
    now = int(time.time() * 1000)
    expect = {cls: {r.expect for r in build(cls, 1, now, size=200_000)} for cls in CLASSES}
    assert expect["good"] == expect["compressed"] == {"applied"}
    assert expect["duplicate"] == {"applied", "duplicate"}
    assert expect["zero_weight"] == {"ignored"}
    assert expect["ts_future"] == {"dlq:ts_in_future"}
    assert expect["ts_seconds"] == expect["ts_micros"] == {"dlq:ts_unit"}
    assert expect["ts_ancient"] == {"dlq:ts_too_old"}
    assert expect["record_ts_negative"] == expect["record_ts_future"] == {"applied"}
    assert expect["header_key_not_utf8"] == {"dlq:undecodable"}
    assert expect["oversize_key"] == {"dlq:key_mismatch"}
    assert expect["oversize_value"] == {"dlq:too_large"}
    assert expect["past_broker_limit"] == {"refused"}
