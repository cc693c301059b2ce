"""Topic creation shared by the local broker and the embedding publisher; a topic's
configuration read right after a worker created it; whether the broker says a topic does
not exist; a topic's incarnation (Kafka's id)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported, untyped
    ConfigResource,
    ResourceType,
)
from kafka.errors import KafkaError as KafkaPythonError
from kafka.errors import TopicAlreadyExistsError, for_code

from stream.kafka.failure import kafka_error

if TYPE_CHECKING:  # built by stream.kafka.clients only
    from confluent_kafka.admin import AdminClient
    from kafka import KafkaAdminClient


def create_missing_topics(
    admin: KafkaAdminClient, request: Mapping[str, Mapping[str, object]], timeout_ms: int
) -> dict[str, KafkaPythonError]:
    """Create the topics in ``request`` (name -> create-topic fields) that do not exist yet.

    Returns the failures by topic name (kafka-python's error for each code, with the
    broker's message); when there are none, waits until every partition
    of every topic has a leader. Topics that already exist are left as they are, and no
    creation is asked for them: a principal without the CREATE right is refused one even
    for a topic that exists (Kafka checks the right first), where topics are made by the
    operator.
    """
    existing = set(admin.list_topics())
    missing = {name: fields for name, fields in request.items() if name not in existing}
    failed: dict[str, KafkaPythonError] = {}
    if missing:
        response = admin.create_topics(missing, raise_errors=False)
        failed = {
            topic["name"]: for_code(topic["error_code"])(topic["error_message"] or "")
            for topic in response["topics"]
            if topic["error_code"] not in (0, TopicAlreadyExistsError.errno)
        }
    if not failed:
        admin.wait_for_topics(list(request), timeout_ms=timeout_ms)
    return failed


def topic_configs(admin: AdminClient, topic: str, timeout_s: float) -> dict[str, Any]:
    """``topic``'s configuration entries by name. A topic created a moment ago can still be
    unknown to the broker that answers (its metadata not propagated yet): asked again for
    up to ``timeout_s``; any other error, or still unknown then, is raised."""
    resource = ConfigResource(ResourceType.TOPIC, topic)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            configs: dict[str, Any] = admin.describe_configs([resource])[resource].result(timeout_s)
            return configs
        except KafkaException as exc:
            unknown = kafka_error(exc).code() == KafkaError.UNKNOWN_TOPIC_OR_PART
            if not unknown or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def cleanup_policies(configs: dict[str, Any]) -> frozenset[str]:
    """A topic's ``cleanup.policy`` (of :func:`topic_configs`) as its set of policies:
    ``delete``, ``compact`` or both."""
    entry = configs.get("cleanup.policy")
    value = None if entry is None else entry.value
    return frozenset() if value is None else frozenset(str(value).split(","))


# Bytes a record costs beyond its key, value and headers: the batch header (61) and the
# record's own varints and attributes. The broker compares a whole batch with the topic's
# max.message.bytes, so a record alone in its batch fits when it is this much smaller.
RECORD_OVERHEAD = 61 + 40
# librdkafka's codes for a batch or record the broker refused as too large
TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})
# ... and for a record the broker will refuse again however often it is sent: against the
# topic's rules (its timestamp bounds, a create policy), or a request it does not support
INVALID_RECORDS = frozenset(
    {
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_TIMESTAMP,
        KafkaError.POLICY_VIOLATION,
        KafkaError.INVALID_REQUIRED_ACKS,
        KafkaError.UNSUPPORTED_FOR_MESSAGE_FORMAT,
        KafkaError.UNSUPPORTED_COMPRESSION_TYPE,
    }
)

# librdkafka's codes for a topic that does not exist: a record queued for one its metadata
# does not know, and a delivery to one deleted since
NO_TOPIC = frozenset(
    {KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION, KafkaError.UNKNOWN_TOPIC_OR_PART}
)


def topic_absent(client: Any, topic: str, timeout_s: float) -> bool:
    """Whether the broker answers that ``topic`` does not exist (a librdkafka producer's or
    admin client's metadata request); False when it exists or no answer came in time."""
    try:
        metadata = client.list_topics(topic, timeout=timeout_s)
    except KafkaException:
        return False
    found = metadata.topics.get(topic)
    error = None if found is None else found.error
    return error is not None and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART


NO_TOPIC_ID = "AAAAAAAAAAAAAAAAAAAAAA"  # a broker without topic ids (before Kafka 2.8)


def topic_incarnation(admin: AdminClient, topic: str, timeout_s: float) -> str | None:
    """Kafka's id of ``topic`` (None from a broker that keeps none): a topic deleted and
    created again under the same name has another, and its offsets start again at 0."""
    return topic_incarnations(admin, [topic], timeout_s)[topic]


def topic_incarnations(
    admin: AdminClient, topics: list[str], timeout_s: float
) -> dict[str, str | None]:
    """:func:`topic_incarnation` of each of ``topics``, asked in one request."""
    futures = admin.describe_topics(TopicCollection(topics), request_timeout=timeout_s)
    deadline = time.monotonic() + timeout_s
    ids = {
        topic: str(future.result(max(deadline - time.monotonic(), 0.0)).topic_id)
        for topic, future in futures.items()
    }
    return {topic: None if found == NO_TOPIC_ID else found for topic, found in ids.items()}
