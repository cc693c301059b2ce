"""A local Kafka node with a SASL_SSL listener, its SCRAM login and its CA: a secured cluster.

:func:`start_secured_broker` makes the TLS files (:mod:`tests.harness.tls`), creates one
SCRAM user with the storage tool at format time and starts the node;
:class:`SecuredCluster` then says how a client connects (:meth:`SecuredCluster.security`)
and how a ``streamgnn`` command is configured to (:meth:`SecuredCluster.env`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from stream.kafka.secret import Secret
from stream.kafka.security import KafkaSecurity
from stream.local_broker.broker import LocalKafkaBroker
from stream.local_broker.secured import SecuredListener
from tests.harness.tls import TlsFiles, make_pki

USERNAME = "streamgnn-app"


@dataclass(frozen=True)
class SecuredCluster:
    """A started node with a secured listener, and the login its clients use."""

    broker: LocalKafkaBroker
    tls: TlsFiles
    username: str
    password: str = field(repr=False)

    @property
    def bootstrap_servers(self) -> str:
        """The SASL_SSL listener (the node's PLAINTEXT one stays for set-up and checks)."""
        return self.broker.secured_servers

    def security(
        self,
        mechanism: str = "SCRAM-SHA-256",
        password: str | None = None,
        client_certificate: bool = False,
    ) -> KafkaSecurity:
        """How a client logs in (``password`` overrides the right one)."""
        key_password = self.tls.client_key_password if client_certificate else None
        return KafkaSecurity(
            "SASL_SSL",
            mechanism,
            self.username,
            Secret(password if password is not None else self.password),
            ssl_cafile=self.tls.ca_file,
            ssl_certfile=self.tls.client_cert if client_certificate else None,
            ssl_keyfile=self.tls.client_key if client_certificate else None,
            ssl_key_password=Secret(key_password) if key_password is not None else None,
        )


def start_secured_broker(
    directory: Path, client_auth: str = "none", client_key_password: str | None = None
) -> SecuredCluster:
    """Start a node in ``directory`` with a SASL_SSL listener and one SCRAM user.

    The caller stops ``cluster.broker``. ``client_auth="required"`` makes it mTLS too.
    """
    tls = make_pki(directory / "pki", client_key_password=client_key_password)
    password = secrets.token_urlsafe(18)
    listener = SecuredListener(
        tls.keystore,
        tls.store_password,
        truststore=tls.truststore,
        client_auth=client_auth,
        scram_users={USERNAME: password},
    )
    broker = LocalKafkaBroker(directory / "kafka", secured=listener)
    broker.start()
    return SecuredCluster(broker, tls, USERNAME, password)
