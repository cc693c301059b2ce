"""A throw-away certificate authority for the secured-listener tests, made with openssl and keytool.

:func:`make_pki` writes, into a test's temp dir, a CA (PEM, what clients trust), a broker
key pair for ``127.0.0.1``/``localhost`` signed by it (a PKCS12 keystore, what Kafka's
``ssl.keystore.*`` takes), a PKCS12 truststore holding the CA (made with the JDK's
``keytool``, for ``ssl.client.auth=required``) and a client certificate with its key
(PEM, the key encrypted when a key password is given): everything a SASL_SSL or mTLS
listener and its clients need. Passwords reach openssl and keytool through their
environment (``env:``/``:env``), never their argv.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

_DAYS = "2"
_BROKER_EXTENSIONS = (
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
    "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
)
_CLIENT_EXTENSIONS = (
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
    "extendedKeyUsage=clientAuth\n"
)


@dataclass(frozen=True)
class TlsFiles:
    """The files :func:`make_pki` wrote and the passwords that open them."""

    ca_file: Path  # PEM: what clients (and the broker, for mTLS) trust
    keystore: Path  # PKCS12: the broker's key and certificate chain
    truststore: Path  # PKCS12: the CA, for the broker to check client certificates
    store_password: str = field(repr=False)  # both stores
    client_cert: Path  # PEM, CN=streamgnn-client
    client_key: Path  # PEM; encrypted (PKCS8) when client_key_password is set
    client_key_password: str | None = field(repr=False)


def make_pki(directory: Path, client_key_password: str | None = None) -> TlsFiles:
    """Make a CA, a broker keystore and truststore and a client certificate in ``directory``.

    Raises ``RuntimeError`` with the tool's output when openssl or keytool fails.
    """
    directory.mkdir(parents=True, exist_ok=True)
    d = directory
    store_password = secrets.token_urlsafe(12)
    env = {**os.environ, "PKI_STORE_PASSWORD": store_password}
    if client_key_password is not None:
        env["PKI_KEY_PASSWORD"] = client_key_password
    (d / "broker.ext").write_text(_BROKER_EXTENSIONS)
    (d / "client.ext").write_text(_CLIENT_EXTENSIONS)
    run = _runner(env, d)
    days = f"-days {_DAYS}"
    run(
        f"openssl req -x509 -newkey rsa:2048 -noenc -keyout ca.key -out ca.pem {days}"
        " -subj /CN=streamgnn-test-ca"
    )
    for name in ("broker", "client"):
        subject = "/CN=localhost" if name == "broker" else "/CN=streamgnn-client"
        key_pair = f"-newkey rsa:2048 -noenc -keyout {name}.key"
        run(f"openssl req {key_pair} -out {name}.csr -subj {subject}")
        run(
            f"openssl x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial {days}"
            f" -extfile {name}.ext -out {name}.pem"
        )
    run(
        "openssl pkcs12 -export -in broker.pem -inkey broker.key -certfile ca.pem -name broker"
        " -out broker.p12 -passout env:PKI_STORE_PASSWORD"
    )
    run(
        "keytool -importcert -noprompt -alias streamgnn-test-ca -file ca.pem"
        " -keystore truststore.p12 -storetype PKCS12 -storepass:env PKI_STORE_PASSWORD"
    )
    client_key = d / "client.key"
    if client_key_password is not None:
        run("openssl pkey -in client.key -aes256 -passout env:PKI_KEY_PASSWORD -out client.enc.key")
        client_key = d / "client.enc.key"
    return TlsFiles(
        ca_file=d / "ca.pem",
        keystore=d / "broker.p12",
        truststore=d / "truststore.p12",
        store_password=store_password,
        client_cert=d / "client.pem",
        client_key=client_key,
        client_key_password=client_key_password,
    )


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found on PATH (needed to make test certificates)")
    return path


def _runner(env: dict[str, str], cwd: Path) -> Callable[[str], None]:
    def run(command: str) -> None:
        """Run ``command`` (its words split on spaces; the first a tool on PATH)."""
        tool, *arguments = command.split()
        result = subprocess.run(
            [_tool(tool), *arguments],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{tool} {arguments[0]} failed (exit {result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )

    return run
