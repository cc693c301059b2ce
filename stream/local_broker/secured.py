"""An optional TLS listener of the local node, with SCRAM logins: a secured cluster on loopback.

The node keeps its PLAINTEXT listener for the controller, inter-broker traffic and its own
readiness check, and adds a third one, ``SASL_SSL://127.0.0.1:<port>`` (or ``SSL://``):
what a managed cluster offers its clients. SCRAM users are created with Kafka's own
tooling, by the storage tool's ``format --add-scram`` (KIP-900), so they exist before the
node first starts; their passwords reach that JVM through an ``@argfile`` (mode 0600,
removed after), never its argv.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
LISTENER_NAMES = ("SASL_SSL", "SSL")
CLIENT_AUTH = ("none", "requested", "required")
# The storage tool's --add-scram syntax has no escaping we rely on: keep names and
# passwords to characters it cannot misread.
_SCRAM_TEXT = re.compile(r"[A-Za-z0-9._~+/-]+")


@dataclass(frozen=True)
class SecuredListener:
    """The secured listener's TLS material, client-certificate policy and SCRAM users.

    Args:
        keystore: the node's key and certificate chain (``ssl.keystore.location``).
        store_password: password of the keystore (and of the truststore).
        truststore: CAs whose client certificates the node accepts; needed when
            ``client_auth`` is not ``none`` (mTLS).
        client_auth: ``none``, ``requested`` or ``required`` (``ssl.client.auth``).
        sasl: ``SASL_SSL`` with SCRAM-SHA-256/512 logins when true, plain ``SSL`` when false.
        scram_users: user name to password, created for both SCRAM mechanisms when the
            node's log dir is formatted (a reused log dir keeps the users it has).
        store_type: ``PKCS12``, ``JKS`` or ``PEM``.
        port: the listener's port; a free ephemeral port when ``None``.
    """

    keystore: Path
    store_password: str = field(repr=False)
    truststore: Path | None = None
    client_auth: str = "none"
    sasl: bool = True
    scram_users: Mapping[str, str] = field(default_factory=dict, repr=False)
    store_type: str = "PKCS12"
    port: int | None = None

    def __post_init__(self) -> None:
        if self.client_auth not in CLIENT_AUTH:
            raise ValueError(f"client_auth must be one of {CLIENT_AUTH}, got {self.client_auth!r}")
        if self.client_auth != "none" and self.truststore is None:
            raise ValueError(f"client_auth={self.client_auth!r} needs a truststore")
        if self.port is not None and not 0 < self.port < 65536:
            raise ValueError(f"port must be in 1..65535, got {self.port!r}")
        if self.scram_users and not self.sasl:
            raise ValueError("scram_users need sasl=True (an SSL listener has no SASL logins)")
        for name, password in self.scram_users.items():
            if not _SCRAM_TEXT.fullmatch(name):
                raise ValueError(f"SCRAM user name {name!r}: use letters, digits and ._~+/-")
            if not _SCRAM_TEXT.fullmatch(password):
                raise ValueError(
                    f"the password of SCRAM user {name!r}: use letters, digits, ._~+/-"
                )
        object.__setattr__(self, "scram_users", MappingProxyType(dict(self.scram_users)))

    @property
    def listener_name(self) -> str:
        return "SASL_SSL" if self.sasl else "SSL"

    def server_properties(self, node: Mapping[str, str], address: str) -> dict[str, str]:
        """The ``server.properties`` entries this listener adds to or changes in ``node``'s.

        ``address``: the listener's host:port. It joins ``listeners``,
        ``advertised.listeners`` and ``listener.security.protocol.map``; the rest are its
        own ``listener.name.*`` settings.
        """
        name = self.listener_name
        properties = {
            "listeners": f"{node['listeners']},{name}://{address}",
            "advertised.listeners": f"{node['advertised.listeners']},{name}://{address}",
            "listener.security.protocol.map": (
                f"{node['listener.security.protocol.map']},{name}:{name}"
            ),
        }
        prefix = f"listener.name.{name.lower()}."
        properties |= {
            f"{prefix}ssl.keystore.location": str(self.keystore),
            f"{prefix}ssl.keystore.password": self.store_password,
            f"{prefix}ssl.keystore.type": self.store_type,
            f"{prefix}ssl.client.auth": self.client_auth,
        }
        if self.truststore is not None:
            properties[f"{prefix}ssl.truststore.location"] = str(self.truststore)
            properties[f"{prefix}ssl.truststore.password"] = self.store_password
            properties[f"{prefix}ssl.truststore.type"] = self.store_type
        if self.sasl:
            properties[f"{prefix}sasl.enabled.mechanisms"] = ",".join(SCRAM_MECHANISMS)
            # The server side of SCRAM needs a login module entry per mechanism; its
            # credentials come from the metadata log, not from this line.
            module = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            for mechanism in SCRAM_MECHANISMS:
                properties[f"{prefix}{mechanism.lower()}.sasl.jaas.config"] = module
        return properties

    def format_arguments(self) -> list[str]:
        """``--add-scram`` arguments of the storage tool's ``format`` (secret: see below)."""
        return [
            argument
            for name, password in self.scram_users.items()
            for mechanism in SCRAM_MECHANISMS
            for argument in ("--add-scram", f"{mechanism}=[name={name},password={password}]")
        ]


@contextmanager
def argument_file(arguments: list[str], directory: Path) -> Iterator[Path]:
    """A JVM ``@argfile`` holding ``arguments``, readable by its owner only, removed after.

    The java launcher expands ``@file`` itself, so secrets in it never show in ``ps``.
    """
    fd, name = tempfile.mkstemp(prefix=".format-", suffix=".args", dir=directory)
    path = Path(name)
    try:
        with os.fdopen(fd, "w") as handle:  # mkstemp creates it 0600
            handle.write("\n".join(_quoted(a) for a in arguments) + "\n")
        yield path
    finally:
        path.unlink(missing_ok=True)


def _quoted(argument: str) -> str:
    # In an argfile, whitespace separates arguments unless quoted; backslashes escape.
    return '"' + argument.replace("\\", "\\\\").replace('"', '\\"') + '"'
