"""How streamgnn's Kafka clients connect: ``kafka.security``, one section for every client.

``security.protocol`` (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL), the SASL mechanism
(PLAIN, SCRAM-SHA-256/512) and login, the CA / client certificate / key files. Passwords
come from the environment (:class:`~stream.settings.secret.Secret`, never a flag) or from
a file the settings name, read when a client is built, so a rotated secret file is
picked up by the next client. Each library's dialect of this section is in
:mod:`stream.kafka.security`.

>>> SecuritySettings("SASL_SSL", "SCRAM-SHA-512", "alice", Secret("pw"))
SecuritySettings(security_protocol='SASL_SSL', sasl_mechanism='SCRAM-SHA-512', \
sasl_username='alice', sasl_password_file=None, ssl_cafile=None, ssl_certfile=None, \
ssl_keyfile=None, ssl_key_password_file=None)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from stream.errors import ConfigError
from stream.settings.secret import Secret, read_secret_file

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class SecuritySettings:
    """The security settings every Kafka client of one process shares.

    Args:
        security_protocol: ``PLAINTEXT`` (default), ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``.
        sasl_mechanism: ``PLAIN``, ``SCRAM-SHA-256`` or ``SCRAM-SHA-512`` (SASL only).
        sasl_username: the SASL login (SASL only).
        sasl_password: its password, from the environment only.
        sasl_password_file: ... or a file holding it (one of the two).
        ssl_cafile: PEM file of the CAs that sign the brokers' certificates (TLS only;
            the system's CAs when ``None``).
        ssl_certfile: PEM client certificate, for brokers that require one (mTLS).
        ssl_keyfile: PEM private key of ``ssl_certfile``.
        ssl_key_password: password of an encrypted ``ssl_keyfile``, from the environment.
        ssl_key_password_file: ... or a file holding it.
    """

    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = field(default=None, repr=False)
    sasl_password_file: Path | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_key_password: Secret | None = field(default=None, repr=False)
    ssl_key_password_file: Path | None = None

    def __post_init__(self) -> None:
        protocol = self.security_protocol.strip().upper()
        if protocol not in PROTOCOLS:
            raise ConfigError(
                f"security_protocol must be one of {PROTOCOLS}, got {self.security_protocol!r}"
            )
        object.__setattr__(self, "security_protocol", protocol)
        if self.sasl_mechanism is not None:
            object.__setattr__(self, "sasl_mechanism", self.sasl_mechanism.strip().upper())
        for name in ("sasl_password", "ssl_key_password"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Secret):
                raise ConfigError(f"{name} must be a Secret (so it never prints)")
            if value is not None and getattr(self, f"{name}_file") is not None:
                raise ConfigError(f"give {name} or {name}_file, not both")
        self._check_sasl()
        self._check_tls()
        # A password file that cannot be read is a configuration error now, not later.
        self.sasl_secret()
        self.ssl_key_secret()

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol.endswith("SSL")

    def sasl_secret(self) -> Secret | None:
        """The SASL password (read from its file now, when it comes from one)."""
        if self.sasl_password_file is not None:
            return read_secret_file(self.sasl_password_file, "sasl_password_file")
        return self.sasl_password

    def ssl_key_secret(self) -> Secret | None:
        """The client key's password (read from its file now, when it comes from one)."""
        if self.ssl_key_password_file is not None:
            return read_secret_file(self.ssl_key_password_file, "ssl_key_password_file")
        return self.ssl_key_password

    def describe(self) -> str:
        """How clients connect, for logs and errors: never a password.

        >>> SecuritySettings("SASL_SSL", "PLAIN", "bob", Secret("pw")).describe()
        "SASL_SSL, PLAIN as 'bob'"
        """
        text = self.security_protocol
        if self.uses_sasl:
            text += f", {self.sasl_mechanism} as {self.sasl_username!r}"
        if self.ssl_certfile is not None:
            text += f", client certificate {self.ssl_certfile}"
        return text

    def _check_sasl(self) -> None:
        names = ("sasl_mechanism", "sasl_username", "sasl_password", "sasl_password_file")
        given = [name for name in names if getattr(self, name) is not None]
        protocol = self.security_protocol
        if not self.uses_sasl:
            if given:
                raise ConfigError(
                    f"{', '.join(given)} given but security_protocol {protocol} has no SASL; "
                    "use SASL_SSL (or SASL_PLAINTEXT)"
                )
            return
        if self.sasl_mechanism is None:
            raise ConfigError(
                f"security_protocol {protocol} needs a sasl_mechanism, one of {SASL_MECHANISMS}"
            )
        if self.sasl_mechanism not in SASL_MECHANISMS:
            raise ConfigError(
                f"sasl_mechanism must be one of {SASL_MECHANISMS}, got {self.sasl_mechanism!r}"
            )
        if not self.sasl_username:
            raise ConfigError(f"security_protocol {protocol} needs a sasl_username")
        if self.sasl_password is None and self.sasl_password_file is None:
            raise ConfigError(
                f"security_protocol {protocol} needs a SASL password: sasl_password (from the "
                "environment) or sasl_password_file"
            )

    def _check_tls(self) -> None:
        files = {
            "ssl_cafile": self.ssl_cafile,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
        }
        given = [name for name, path in files.items() if path is not None]
        if self.ssl_key_password is not None or self.ssl_key_password_file is not None:
            given.append("ssl_key_password")
        if not self.uses_tls:
            if given:
                raise ConfigError(
                    f"{', '.join(given)} given but security_protocol {self.security_protocol} "
                    "has no TLS; use SSL or SASL_SSL"
                )
            return
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ConfigError("ssl_certfile and ssl_keyfile go together (a client certificate)")
        if "ssl_key_password" in given and self.ssl_keyfile is None:
            raise ConfigError("ssl_key_password given without ssl_keyfile")
        for name, path in files.items():
            if path is not None and not (path.is_file() and os.access(path, os.R_OK)):
                reason = "is not readable" if path.is_file() else "does not exist"
                raise ConfigError(f"{name} {path} {reason}")
