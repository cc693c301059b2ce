"""A local Kafka node with a SASL_SSL listener, its SCRAM login and its CA: a secured cluster.

:func:`start_secured_broker` makes the TLS files (:mod:`tests.harness.tls`), creates one
SCRAM user with the storage tool at format time and starts the node;
:class:`SecuredCluster` then says how a client connects (:meth:`SecuredCluster.security`,
:meth:`SecuredCluster.kafka`) and how a ``streamgnn`` command is configured to, through
its environment twins only (:meth:`SecuredCluster.env`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from stream.local_broker.broker import LocalKafkaBroker
from stream.local_broker.secured import SecuredListener
from stream.settings import KafkaSettings, Secret, SecuritySettings
from tests.harness.tls import TlsFiles, make_pki

USERNAME = "streamgnn-app"
STANDARD_AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"


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
    ) -> SecuritySettings:
        """How a client logs in (``password`` overrides the right one)."""
        key_password = self.tls.client_key_password if client_certificate else None
        return SecuritySettings(
            "SASL_SSL",
            mechanism,
            self.username,
            Secret(password if password is not None else self.password),
            ssl_cafile=self.tls.ca_file,
            ssl_certfile=self.tls.client_cert if client_certificate else None,
            ssl_keyfile=self.tls.client_key if client_certificate else None,
            ssl_key_password=Secret(key_password) if key_password is not None else None,
        )

    def kafka(
        self,
        mechanism: str = "SCRAM-SHA-256",
        password: str | None = None,
        client_certificate: bool = False,
    ) -> KafkaSettings:
        """Kafka settings for the secured listener (see :meth:`security`)."""
        security = self.security(mechanism, password, client_certificate)
        return KafkaSettings(self.bootstrap_servers, security=security)

    def env(self, mechanism: str = "SCRAM-SHA-512", password: str | None = None) -> dict[str, str]:
        """The environment twins that point a ``streamgnn`` command at the secured listener."""
        return {
            "STREAMGNN_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "STREAMGNN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "STREAMGNN_KAFKA_SASL_MECHANISM": mechanism,
            "STREAMGNN_KAFKA_SASL_USERNAME": self.username,
            "STREAMGNN_KAFKA_SASL_PASSWORD": password if password is not None else self.password,
            "STREAMGNN_KAFKA_SSL_CAFILE": str(self.tls.ca_file),
        }


def start_secured_broker(
    directory: Path,
    client_auth: str = "none",
    client_key_password: str | None = None,
    authorizer: bool = False,
) -> SecuredCluster:
    """Start a node in ``directory`` with a SASL_SSL listener and one SCRAM user.

    The caller stops ``cluster.broker``. ``client_auth="required"`` makes it mTLS too.
    ``authorizer``: ACLs are enforced (KRaft's ``StandardAuthorizer``); the PLAINTEXT
    listener's anonymous principal (the controller, set-up and checks) is a super user,
    the SCRAM user may do only what ACLs grant it.
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
    acls = {"authorizer.class.name": STANDARD_AUTHORIZER, "super.users": "User:ANONYMOUS"}
    broker = LocalKafkaBroker(
        directory / "kafka", secured=listener, extra_properties=acls if authorizer else None
    )
    broker.start()
    return SecuredCluster(broker, tls, USERNAME, password)
