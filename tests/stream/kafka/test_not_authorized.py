"""Which librdkafka errors end a command as a missing ACL
(:func:`stream.kafka.access.not_authorized`)."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from stream.kafka.access import NOT_AUTHORIZED, not_authorized
from stream.settings import KafkaSettings, Secret, SecuritySettings

SASL = KafkaSettings(
    "broker:9094",
    security=SecuritySettings("SASL_SSL", "SCRAM-SHA-512", "ingest-app", Secret("hunter2")),
)


@pytest.mark.parametrize("code", sorted(NOT_AUTHORIZED))
def test_each_authorization_refusal_names_the_user_and_what_it_may_not_do(code: int) -> None:
    refused = not_authorized(KafkaError(code), SASL, "consume 'events'")
    assert refused is not None
    message = str(refused)
    assert message.startswith("user 'ingest-app' is not authorized to consume 'events' (")
    assert KafkaError(code).str() in message and "hunter2" not in message


def test_other_errors_and_none_are_not_refusals() -> None:
    for error in (None, KafkaError(KafkaError._TRANSPORT), KafkaError(KafkaError._TIMED_OUT)):
        assert not_authorized(error, SASL, "x") is None


def test_a_group_refusal_does_not_matter_to_a_consumer_that_only_assigns() -> None:
    group = KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED)
    topic = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    assert not_authorized(group, SASL, "read", groups=False) is None
    assert not_authorized(topic, SASL, "read", groups=False) is not None


def test_without_a_login_the_principal_is_not_named() -> None:
    refused = not_authorized(
        KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED), KafkaSettings(), "x"
    )
    assert str(refused).startswith("this client's principal is not authorized to x")
