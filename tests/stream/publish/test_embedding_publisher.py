"""EmbeddingPublisher against the real broker: topics, acks, versions, metrics, restarts."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from stream.errors import (
    EmbeddingRecordsRefused,
    EmbeddingRecordTooLarge,
    PublishError,
    SchemaError,
    VersionRegressionError,
)
from stream.kafka.topics import RECORD_OVERHEAD
from stream.local_broker.broker import LocalKafkaBroker
from stream.metrics import PipelineMetrics
from stream.publish.publisher import EmbeddingPublisher, NodeVectors
from stream.publish.schema import decode_record, encode_records
from stream.settings import KafkaSettings
from tests.harness.embedding_topics import end_offsets, read_topic, unique_settings

pytestmark = pytest.mark.integration

NOW_S = 1_700_000_100.0  # a fixed wall clock: metrics become exactly derivable


def _vectors(n: int, dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def _sample(metrics: PipelineMetrics, name: str, labels: dict[str, str] | None = None) -> float:
    value = metrics.registry.get_sample_value(name, labels or {})
    assert value is not None, name
    return value


def test_publish_creates_compacted_topics_and_returns_only_when_all_records_are_readable(
    kafka_broker: LocalKafkaBroker, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    settings = unique_settings(tmp_path, topic_partitions=3)
    users, items = _vectors(40, 8, 1), _vectors(25, 8, 2)
    user_ids = [f"u{i}" for i in range(40)]
    item_ids = [f"item-{i}" for i in range(25)]
    with EmbeddingPublisher(KafkaSettings(bootstrap), settings) as publisher:
        result = publisher.publish(
            [
                NodeVectors("user", user_ids, users, event_time_ms=list(range(40))),
                NodeVectors("item", item_ids, torch.tensor(items, requires_grad=True), 99),
            ],
            model_version=0,
        )
        assert result.published == {"user": 40, "item": 25}
        # Acked means readable: a reader starting now finds every record.
        user_records = read_topic(bootstrap, settings.user_topic)
        item_records = read_topic(bootstrap, settings.item_topic)

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        for topic in (settings.user_topic, settings.item_topic):
            described = admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic, {"cleanup.policy": None})],
                config_filter="all",
            )
            assert described["topic"][topic]["cleanup.policy"]["value"] == "compact"
            assert len(admin.describe_topics([topic])[0]["partitions"]) == 3
    finally:
        admin.close()

    for records, ids, vectors, kind in (
        (user_records, user_ids, users, "user"),
        (item_records, item_ids, items, "item"),
    ):
        assert sorted(r.key.decode() for r in records) == sorted(ids)
        for r in records:
            decoded = decode_record(r.value, kind=kind)  # type: ignore[arg-type]
            assert r.key == decoded.key
            assert r.timestamp == decoded.publish_time_ms == result.publish_time_ms
            assert decoded.vector.tobytes() == vectors[ids.index(decoded.id)].tobytes()
    event_times = {
        decode_record(r.value).id: decode_record(r.value).event_time_ms for r in user_records
    }
    assert event_times == {f"u{i}": i for i in range(40)}


def test_metrics_follow_from_what_was_published(
    kafka_broker: LocalKafkaBroker, tmp_path: Path
) -> None:
    metrics = PipelineMetrics()
    settings = unique_settings(tmp_path, vector_encoding="f32le-base64")
    appended = [int(NOW_S * 1000) - d for d in (50, 400, 2_000, 70_000, 0)]
    newest_event_ms = int(NOW_S * 1000) - 30_000
    with EmbeddingPublisher(
        KafkaSettings(kafka_broker.bootstrap_servers), settings, metrics, clock=lambda: NOW_S
    ) as publisher:
        assert np.isnan(_sample(metrics, "streamgnn_staleness_seconds"))
        publisher.publish(
            [
                NodeVectors("user", ["a", "b", "c"], _vectors(3, 4, 0), newest_event_ms - 5),
                NodeVectors("item", ["x"], _vectors(1, 4, 1), newest_event_ms),
            ],
            model_version=12,
            append_times_ms=appended,
        )
    assert _sample(metrics, "streamgnn_vectors_published_total", {"kind": "user"}) == 3
    assert _sample(metrics, "streamgnn_vectors_published_total", {"kind": "item"}) == 1
    assert _sample(metrics, "streamgnn_model_version") == 12
    assert _sample(metrics, "streamgnn_freshness_seconds_count") == len(appended)
    expected_sum = sum(NOW_S * 1000 - a for a in appended) / 1000
    assert _sample(metrics, "streamgnn_freshness_seconds_sum") == pytest.approx(expected_sum)
    assert _sample(metrics, "streamgnn_staleness_seconds") == pytest.approx(
        NOW_S - newest_event_ms / 1000
    )
    # Each event lands in the histogram's buckets where its age says.
    for bound in (0.1, 1.0, 60.0):
        within = sum((NOW_S * 1000 - a) / 1000 <= bound for a in appended)
        assert _sample(metrics, "streamgnn_freshness_seconds_bucket", {"le": str(bound)}) == within


def test_versions_never_go_back_within_a_run_or_across_a_restart(
    kafka_broker: LocalKafkaBroker, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    settings = unique_settings(tmp_path)
    one = [NodeVectors("user", ["u1"], _vectors(1, 4, 0), 1)]
    with EmbeddingPublisher(KafkaSettings(bootstrap), settings) as publisher:
        assert publisher.min_version == 0
        publisher.publish(one, model_version=5)
        publisher.publish(one, model_version=5)  # same version again: allowed (a retry)
        before = end_offsets(bootstrap, settings.user_topic)
        with pytest.raises(VersionRegressionError):
            publisher.publish(one, model_version=4)
        assert end_offsets(bootstrap, settings.user_topic) == before  # nothing was sent
        assert publisher.min_version == 5
    with EmbeddingPublisher(KafkaSettings(bootstrap), settings) as restarted:
        # Version 5 may be half-published: a restart continues strictly above it.
        assert restarted.min_version == 6
        with pytest.raises(VersionRegressionError):
            restarted.publish(one, model_version=5)
        restarted.publish(one, model_version=6)


def test_a_lost_ledger_is_recovered_from_the_topics(
    kafka_broker: LocalKafkaBroker, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    settings = unique_settings(tmp_path)
    with EmbeddingPublisher(KafkaSettings(bootstrap), settings) as publisher:
        publisher.publish([NodeVectors("item", ["i1"], _vectors(1, 4, 0), 1)], model_version=3)
        publisher.publish([NodeVectors("user", ["u1"], _vectors(1, 4, 0), 1)], model_version=8)
    settings.ledger_path.unlink()
    with EmbeddingPublisher(KafkaSettings(bootstrap), settings) as publisher:
        assert publisher.min_version == 9
    assert settings.ledger_path.exists()


def test_an_unpublishable_batch_sends_nothing_and_reserves_nothing(
    kafka_broker: LocalKafkaBroker, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    settings = unique_settings(tmp_path)
    bad = _vectors(3, 4, 0)
    bad[2, 1] = np.nan
    with EmbeddingPublisher(KafkaSettings(bootstrap), settings) as publisher:
        for batch in (
            NodeVectors("user", ["a", "b", "c"], bad, 0),
            NodeVectors("user", ["a", "b"], _vectors(3, 4, 0), 0),  # 2 ids, 3 rows
            NodeVectors("user", ["a", ""], _vectors(2, 4, 0), 0),
            NodeVectors("user", ["a", "b"], _vectors(2, 4, 0), [1, 2, 3]),  # 3 event times
            NodeVectors("user", ["a"], _vectors(1, 4, 0), -1),  # a negative event time
            NodeVectors("shop", ["a"], _vectors(1, 4, 0), 0),  # type: ignore[arg-type]
        ):
            with pytest.raises(SchemaError):
                publisher.publish([batch], model_version=7)
        assert publisher.min_version == 0
    assert not settings.ledger_path.exists()
    assert sum(end_offsets(bootstrap, settings.user_topic).values()) == 0


def test_an_existing_topic_that_is_not_compacted_is_refused(
    kafka_broker: LocalKafkaBroker, tmp_path: Path
) -> None:
    settings = unique_settings(tmp_path)
    kafka_broker.create_topics({settings.item_topic: 1}, {"cleanup.policy": "delete"})
    with pytest.raises(PublishError, match="compact"):
        EmbeddingPublisher(KafkaSettings(kafka_broker.bootstrap_servers), settings)


def test_a_topic_that_also_deletes_by_age_is_published_to_with_a_warning(
    kafka_broker: LocalKafkaBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """compact,delete drops an idle id's only vector after retention.ms: allowed (an
    operator's choice), said once at the start."""
    settings = unique_settings(tmp_path)
    both = {"cleanup.policy": "compact,delete", "retention.ms": "3600000"}
    kafka_broker.create_topics({settings.user_topic: 1}, both)
    with (
        caplog.at_level(logging.WARNING),
        EmbeddingPublisher(KafkaSettings(kafka_broker.bootstrap_servers), settings),
    ):
        pass
    said = [r.getMessage() for r in caplog.records if "deletes records older" in r.message]
    assert said == [
        f"embedding topic {settings.user_topic!r} is cleanup.policy=compact,delete: it also "
        "deletes records older than retention.ms (3600000), so the vector of an id idle that "
        "long disappears from it (cleanup.policy=compact keeps every id's newest vector)"
    ]


def test_records_the_broker_refuses_fail_the_publish_and_the_rest_still_arrive(
    kafka_broker: LocalKafkaBroker, tmp_path: Path
) -> None:
    """Only failed deliveries are reported back (successes cost no Python call each): a
    record the broker refuses, here one over the user topic's ``max.message.bytes``
    lowered after the start, still fails the publish, for good (never retried: the
    start reads the limits again); its small neighbours on the other topic are acked."""
    bootstrap = kafka_broker.bootstrap_servers
    settings = unique_settings(tmp_path)
    refused = pytest.raises(EmbeddingRecordTooLarge, match=r"refused 1 records as larger")
    with EmbeddingPublisher(KafkaSettings(bootstrap), settings) as publisher, refused:
        _set_limit(bootstrap, settings.user_topic, 600)
        publisher.publish(
            [
                NodeVectors("user", ["big"], _vectors(1, 64, 0), 0),  # ~1.2 KB of JSON
                NodeVectors("item", ["a", "b"], _vectors(2, 2, 1), 0),
            ],
            model_version=0,
        )
    assert sorted(record.key for record in read_topic(bootstrap, settings.item_topic)) == [
        b"a",
        b"b",
    ]
    assert sum(end_offsets(bootstrap, settings.user_topic).values()) == 0


def test_a_vector_larger_than_its_topic_accepts_is_refused_before_any_is_sent(
    kafka_broker: LocalKafkaBroker, tmp_path: Path
) -> None:
    """By hand, a worker whose embedding topics accepted 300 bytes retried every second
    for ever; the limit read at the start refuses the publish, naming both sizes."""
    bootstrap = kafka_broker.bootstrap_servers
    settings = unique_settings(tmp_path)
    compacted = {"cleanup.policy": "compact"}
    kafka_broker.create_topics({settings.user_topic: 1}, {**compacted, "max.message.bytes": "600"})
    kafka_broker.create_topics({settings.item_topic: 1}, compacted)
    with EmbeddingPublisher(KafkaSettings(bootstrap), settings, clock=lambda: NOW_S) as publisher:
        vectors = _vectors(2, 64, 0)
        values = encode_records("user", ["a", "big"], 0, vectors, [0, 0], int(NOW_S * 1000))
        with pytest.raises(EmbeddingRecordTooLarge) as raised:
            publisher.publish([NodeVectors("user", ["a", "big"], vectors, 0)], model_version=0)
        first = len(values[0]) + 1 + RECORD_OVERHEAD  # the first too large: "a"'s
        assert f"of 'a' takes {first} bytes as a record" in str(raised.value)
        assert "accepts 600 (max.message.bytes)" in str(raised.value)
        assert publisher.min_version == 0  # nothing reserved
        publisher.publish([NodeVectors("item", ["a"], _vectors(1, 64, 0), 0)], model_version=0)
    assert sum(end_offsets(bootstrap, settings.user_topic).values()) == 0
    assert sum(end_offsets(bootstrap, settings.item_topic).values()) == 1


def test_batches_fit_topics_that_accept_less_than_a_batch(
    kafka_broker: LocalKafkaBroker, tmp_path: Path
) -> None:
    """Each record fits a 16 KiB topic, a step's batch of them does not: librdkafka does
    not split a batch the broker refuses (by hand at 64 KiB: every publish refused)."""
    bootstrap = kafka_broker.bootstrap_servers
    settings = unique_settings(tmp_path)
    limit = {"cleanup.policy": "compact", "max.message.bytes": "16384"}
    kafka_broker.create_topics({settings.user_topic: 1, settings.item_topic: 1}, limit)
    ids = [f"u{n}" for n in range(300)]  # ~1.2 KB of JSON each
    with EmbeddingPublisher(KafkaSettings(bootstrap), settings) as publisher:
        publisher.publish([NodeVectors("user", ids, _vectors(300, 64, 0), 0)], model_version=0)
    assert sorted(r.key.decode() for r in read_topic(bootstrap, settings.user_topic)) == sorted(ids)


def test_records_the_broker_refuses_for_good_end_the_publish_saying_why(
    kafka_broker: LocalKafkaBroker, tmp_path: Path
) -> None:
    """A record's timestamp is the publisher's clock; topics that bound timestamps refuse
    records from a clock an hour fast (by hand: INVALID_RECORD retried every second for
    ever). Not retried: the same records would be refused again."""
    bootstrap = kafka_broker.bootstrap_servers
    settings = unique_settings(tmp_path)
    bounded = {"cleanup.policy": "compact", "message.timestamp.after.max.ms": "600000"}
    kafka_broker.create_topics({settings.user_topic: 1, settings.item_topic: 1}, bounded)
    refused = pytest.raises(EmbeddingRecordsRefused, match="refused 2 of 2 embedding records")
    vectors = [NodeVectors("user", ["a", "b"], _vectors(2, 8, 0), 0)]
    fast = EmbeddingPublisher(KafkaSettings(bootstrap), settings, clock=lambda: time.time() + 3600)
    with fast as publisher, refused:
        publisher.publish(vectors, model_version=0)
    with EmbeddingPublisher(KafkaSettings(bootstrap), settings) as publisher:  # in time
        publisher.publish(vectors, model_version=1)
    assert sum(end_offsets(bootstrap, settings.user_topic).values()) == 2


def _set_limit(bootstrap: str, topic: str, max_message_bytes: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        resource = ConfigResource(
            ConfigResourceType.TOPIC,
            topic,
            {"cleanup.policy": "compact", "max.message.bytes": str(max_message_bytes)},
        )
        admin.alter_configs([resource])
    finally:
        admin.close()
