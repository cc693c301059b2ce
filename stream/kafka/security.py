"""How every Kafka client streamgnn creates connects: TLS, SASL and their files.

:class:`KafkaSecurity` is one validated value (``security.protocol``, the SASL mechanism
and login, the CA / client certificate / key files); the three translators turn it into
the keyword arguments of the three client libraries the project uses, so a consumer, a
producer and an admin client of one process always connect the same way:

- :func:`aiokafka_options` (the ingest consumer, the dead-letter producer): TLS only as
  an ``ssl.SSLContext``;
- :func:`confluent_options` (the embedding publisher): librdkafka's dotted names;
- :func:`kafka_python_options` (admin clients, ``produce``, ``consume``, the ledger scan).

>>> security = KafkaSecurity("SASL_SSL", "SCRAM-SHA-512", "alice", Secret("pw"))
>>> security
KafkaSecurity(protocol='SASL_SSL', sasl_mechanism='SCRAM-SHA-512', sasl_username='alice', \
ssl_cafile=None, ssl_certfile=None, ssl_keyfile=None)
>>> sorted(confluent_options(security))
['sasl.mechanisms', 'sasl.password', 'sasl.username', 'security.protocol']
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stream.errors import ConfigError
from stream.kafka.secret import Secret

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class KafkaSecurity:
    """The security settings every Kafka client of one process shares.

    Args:
        protocol: ``PLAINTEXT`` (default), ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``.
        sasl_mechanism: ``PLAIN``, ``SCRAM-SHA-256`` or ``SCRAM-SHA-512`` (SASL only).
        sasl_username: the SASL login (SASL only).
        sasl_password: its password (SASL only), from the environment or a file.
        ssl_cafile: PEM file of the CAs that sign the brokers' certificates (TLS only;
            the system's CAs when ``None``).
        ssl_certfile: PEM client certificate, for brokers that require one (mTLS).
        ssl_keyfile: PEM private key of ``ssl_certfile``.
        ssl_key_password: password of ``ssl_keyfile`` when it is encrypted.

    Passwords are :class:`Secret` s: not in ``repr``, so not in logs or errors.
    """

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = field(default=None, repr=False)
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_key_password: Secret | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        protocol = self.protocol.strip().upper()
        if protocol not in PROTOCOLS:
            raise ConfigError(
                f"security protocol must be one of {PROTOCOLS}, got {self.protocol!r}"
            )
        object.__setattr__(self, "protocol", protocol)
        if self.sasl_mechanism is not None:
            object.__setattr__(self, "sasl_mechanism", self.sasl_mechanism.strip().upper())
        for name in ("sasl_password", "ssl_key_password"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Secret):
                raise ConfigError(f"{name} must be a Secret (so it never prints)")
        self._check_sasl()
        self._check_tls()

    @property
    def uses_sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.protocol.endswith("SSL")

    def describe(self) -> str:
        """How clients connect, for logs and errors: never a password.

        >>> KafkaSecurity("SASL_SSL", "PLAIN", "bob", Secret("pw")).describe()
        "SASL_SSL, PLAIN as 'bob'"
        """
        text = self.protocol
        if self.uses_sasl:
            text += f", {self.sasl_mechanism} as {self.sasl_username!r}"
        if self.ssl_certfile is not None:
            text += f", client certificate {self.ssl_certfile}"
        return text

    def _check_sasl(self) -> None:
        given = [
            name
            for name in ("sasl_mechanism", "sasl_username", "sasl_password")
            if getattr(self, name) is not None
        ]
        if not self.uses_sasl:
            if given:
                raise ConfigError(
                    f"{', '.join(given)} given but security protocol {self.protocol} has no "
                    "SASL; use SASL_SSL (or SASL_PLAINTEXT)"
                )
            return
        if self.sasl_mechanism is None:
            raise ConfigError(
                f"security protocol {self.protocol} needs a SASL mechanism, one of "
                f"{SASL_MECHANISMS}"
            )
        if self.sasl_mechanism not in SASL_MECHANISMS:
            raise ConfigError(
                f"SASL mechanism must be one of {SASL_MECHANISMS}, got {self.sasl_mechanism!r}"
            )
        if not self.sasl_username:
            raise ConfigError(f"security protocol {self.protocol} needs a SASL username")
        if self.sasl_password is None:
            raise ConfigError(
                f"security protocol {self.protocol} needs a SASL password (from the environment "
                "or a password file)"
            )

    def _check_tls(self) -> None:
        files = {
            "ssl_cafile": self.ssl_cafile,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
        }
        given = [name for name, path in files.items() if path is not None]
        if self.ssl_key_password is not None:
            given.append("ssl_key_password")
        if not self.uses_tls:
            if given:
                raise ConfigError(
                    f"{', '.join(given)} given but security protocol {self.protocol} has no TLS; "
                    "use SSL or SASL_SSL"
                )
            return
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ConfigError("ssl_certfile and ssl_keyfile go together (a client certificate)")
        if self.ssl_key_password is not None and self.ssl_keyfile is None:
            raise ConfigError("ssl_key_password given without ssl_keyfile")
        for name, path in files.items():
            if path is not None and not (path.is_file() and os.access(path, os.R_OK)):
                reason = "is not readable" if path.is_file() else "does not exist"
                raise ConfigError(f"{name} {path} {reason}")


def ssl_context(security: KafkaSecurity) -> ssl.SSLContext | None:
    """A TLS context that verifies the brokers (and presents the client certificate).

    ``None`` when the protocol has no TLS. A CA, certificate or key file that does not
    parse, or a wrong key password, is a :class:`ConfigError` naming the file.
    """
    if not security.uses_tls:
        return None
    cafile = str(security.ssl_cafile) if security.ssl_cafile is not None else None
    try:
        context = ssl.create_default_context(cafile=cafile)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"ssl_cafile {cafile}: not a usable PEM CA file ({exc})") from None
    if security.ssl_certfile is not None:
        password = security.ssl_key_password
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


def aiokafka_options(security: KafkaSecurity) -> dict[str, Any]:
    """``AIOKafkaConsumer`` / ``AIOKafkaProducer`` keyword arguments."""
    options: dict[str, Any] = {"security_protocol": security.protocol}
    context = ssl_context(security)
    if context is not None:
        options["ssl_context"] = context
    if security.uses_sasl:
        options["sasl_mechanism"] = security.sasl_mechanism
        options["sasl_plain_username"] = security.sasl_username
        options["sasl_plain_password"] = _reveal(security.sasl_password)
    return options


def kafka_python_options(security: KafkaSecurity) -> dict[str, Any]:
    """``KafkaProducer`` / ``KafkaConsumer`` / ``KafkaAdminClient`` keyword arguments."""
    options: dict[str, Any] = {"security_protocol": security.protocol}
    if security.uses_tls:
        options["ssl_check_hostname"] = True
        if security.ssl_cafile is not None:
            options["ssl_cafile"] = str(security.ssl_cafile)
        if security.ssl_certfile is not None:
            options["ssl_certfile"] = str(security.ssl_certfile)
            options["ssl_keyfile"] = str(security.ssl_keyfile)
        if security.ssl_key_password is not None:
            options["ssl_password"] = security.ssl_key_password.reveal()
    if security.uses_sasl:
        options["sasl_mechanism"] = security.sasl_mechanism
        options["sasl_plain_username"] = security.sasl_username
        options["sasl_plain_password"] = _reveal(security.sasl_password)
    return options


def confluent_options(security: KafkaSecurity) -> dict[str, str]:
    """confluent-kafka (librdkafka) configuration entries."""
    options = {"security.protocol": security.protocol}
    if security.uses_tls:
        if security.ssl_cafile is not None:
            options["ssl.ca.location"] = str(security.ssl_cafile)
        if security.ssl_certfile is not None:
            options["ssl.certificate.location"] = str(security.ssl_certfile)
            options["ssl.key.location"] = str(security.ssl_keyfile)
        if security.ssl_key_password is not None:
            options["ssl.key.password"] = security.ssl_key_password.reveal()
    if security.uses_sasl:
        options["sasl.mechanisms"] = str(security.sasl_mechanism)
        options["sasl.username"] = str(security.sasl_username)
        options["sasl.password"] = _reveal(security.sasl_password)
    return options


def _reveal(secret: Secret | None) -> str:
    if secret is None:  # validation makes this unreachable for SASL protocols
        raise ConfigError("a SASL password is required")
    return secret.reveal()
