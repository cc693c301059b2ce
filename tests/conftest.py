"""Suite-wide fixtures: one real Kafka node for the whole session.

The suite starts its own broker and fails, never skips, when it cannot.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from stream.errors import BrokerError
from stream.local_broker.broker import LocalKafkaBroker
from tests.harness.secured_cluster import SecuredCluster, start_secured_broker


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafkaBroker]:
    """A started local Kafka node shared by the session; stopped at the end."""
    broker = LocalKafkaBroker(tmp_path_factory.mktemp("kafka"))
    failure = ""
    try:
        broker.start()
    except BrokerError as exc:
        failure = f"the local Kafka broker did not start: {exc}"
        tail = broker.log_tail()
        if tail and tail not in failure:
            failure += f"\ntail of {broker.log_path}:\n{tail}"
    if failure:  # failed outside the except block, so the report shows no exception chain
        pytest.fail(failure, pytrace=False)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def secured_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredCluster]:
    """A second node, started on first use, with a SASL_SSL listener and a SCRAM user."""
    directory = tmp_path_factory.mktemp("secured-kafka")
    try:
        cluster = start_secured_broker(directory)
    except BrokerError as exc:
        failure = f"the secured Kafka broker did not start: {exc}"
    else:
        failure = ""
    if failure:
        pytest.fail(failure, pytrace=False)
    try:
        yield cluster
    finally:
        cluster.broker.stop()


TopicFactory = Callable[..., str]


@pytest.fixture
def topic_factory(kafka_broker: LocalKafkaBroker) -> TopicFactory:
    """``make(prefix, partitions=1, configs=None)`` creates a fresh uniquely named topic."""

    def make(prefix: str, partitions: int = 1, configs: dict[str, str] | None = None) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        kafka_broker.create_topics({name: partitions}, configs)
        return name

    return make
