"""The ``KafkaError`` inside a confluent-kafka exception, whatever it carries.

librdkafka's ``KafkaException`` carries a ``KafkaError`` as its first argument, but one
can carry text instead (raised by the Python client itself, or another library), and a
site reading ``exc.args[0].code()`` would then die of ``AttributeError`` in the middle of
its error handling. Every site reads the error through :func:`kafka_error`.

>>> from confluent_kafka import KafkaException
>>> kafka_error(KafkaException(KafkaError(KafkaError._TIMED_OUT))).code() == KafkaError._TIMED_OUT
True
>>> error = kafka_error(KafkaException("no such thing"))
>>> error.code() == KafkaError._FAIL, error.str()
(True, 'no such thing')
"""

from __future__ import annotations

from confluent_kafka import KafkaError


def kafka_error(exc: BaseException) -> KafkaError:
    """``exc``'s ``KafkaError``, or one of code ``_FAIL`` holding its text."""
    first = exc.args[0] if exc.args else None
    if isinstance(first, KafkaError):
        return first
    return KafkaError(KafkaError._FAIL, str(exc) or type(exc).__name__)
