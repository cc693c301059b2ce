"""The ``kafka.security`` settings in each client library's dialect.

Three libraries, three spellings of one configuration (:mod:`stream.kafka.clients` applies
them to every client it builds):

- :func:`aiokafka_options`: TLS only as an ``ssl.SSLContext`` (:func:`ssl_context`);
- :func:`kafka_python_options`: file names (``ssl_cafile``, ``ssl_certfile``, ...);
- :func:`confluent_options`: librdkafka's dotted names.

>>> from stream.settings.secret import Secret
>>> security = SecuritySettings("SASL_SSL", "SCRAM-SHA-512", "alice", Secret("pw"))
>>> sorted(confluent_options(security))
['sasl.mechanisms', 'sasl.password', 'sasl.username', 'security.protocol']
"""

from __future__ import annotations

import ssl
from typing import Any

from stream.errors import ConfigError
from stream.settings.secret import Secret
from stream.settings.security import SecuritySettings


def ssl_context(security: SecuritySettings) -> ssl.SSLContext | None:
    """A TLS context that verifies the brokers (and presents the client certificate).

    ``None`` when the protocol has no TLS. A CA, certificate or key file that does not
    parse, or a wrong key password, is a :class:`ConfigError` naming the files.
    """
    if not security.uses_tls:
        return None
    cafile = str(security.ssl_cafile) if security.ssl_cafile is not None else None
    try:
        context = ssl.create_default_context(cafile=cafile)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"ssl_cafile {cafile}: not a usable PEM CA file ({exc})") from None
    if security.ssl_certfile is not None:
        password = security.ssl_key_secret()
        try:
            context.load_cert_chain(
                str(security.ssl_certfile),
                str(security.ssl_keyfile),
                password=password.reveal() if password is not None else None,
            )
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"ssl_certfile {security.ssl_certfile} / ssl_keyfile {security.ssl_keyfile}: "
                f"cannot load the client certificate and key ({type(exc).__name__}; a wrong "
                "or missing ssl_key_password?)"
            ) from None
    return context


def aiokafka_options(security: SecuritySettings) -> dict[str, Any]:
    """``AIOKafkaConsumer`` / ``AIOKafkaProducer`` keyword arguments."""
    options: dict[str, Any] = {"security_protocol": security.security_protocol}
    context = ssl_context(security)
    if context is not None:
        options["ssl_context"] = context
    if security.uses_sasl:
        options["sasl_mechanism"] = security.sasl_mechanism
        options["sasl_plain_username"] = security.sasl_username
        options["sasl_plain_password"] = _reveal(security.sasl_secret())
    return options


def kafka_python_options(security: SecuritySettings) -> dict[str, Any]:
    """``KafkaProducer`` / ``KafkaConsumer`` / ``KafkaAdminClient`` keyword arguments."""
    options: dict[str, Any] = {"security_protocol": security.security_protocol}
    if security.uses_tls:
        options["ssl_check_hostname"] = True
        if security.ssl_cafile is not None:
            options["ssl_cafile"] = str(security.ssl_cafile)
        if security.ssl_certfile is not None:
            options["ssl_certfile"] = str(security.ssl_certfile)
            options["ssl_keyfile"] = str(security.ssl_keyfile)
        key_password = security.ssl_key_secret()
        if key_password is not None:
            options["ssl_password"] = key_password.reveal()
    if security.uses_sasl:
        options["sasl_mechanism"] = security.sasl_mechanism
        options["sasl_plain_username"] = security.sasl_username
        options["sasl_plain_password"] = _reveal(security.sasl_secret())
    return options


def confluent_options(security: SecuritySettings) -> dict[str, str]:
    """confluent-kafka (librdkafka) configuration entries."""
    options = {"security.protocol": security.security_protocol}
    if security.uses_tls:
        if security.ssl_cafile is not None:
            options["ssl.ca.location"] = str(security.ssl_cafile)
        if security.ssl_certfile is not None:
            options["ssl.certificate.location"] = str(security.ssl_certfile)
            options["ssl.key.location"] = str(security.ssl_keyfile)
        key_password = security.ssl_key_secret()
        if key_password is not None:
            options["ssl.key.password"] = key_password.reveal()
    if security.uses_sasl:
        options["sasl.mechanisms"] = str(security.sasl_mechanism)
        options["sasl.username"] = str(security.sasl_username)
        options["sasl.password"] = _reveal(security.sasl_secret())
    return options


def _reveal(secret: Secret | None) -> str:
    if secret is None:  # validation makes this unreachable for SASL protocols
        raise ConfigError("a SASL password is required")
    return secret.reveal()
