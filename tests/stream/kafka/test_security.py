"""Security settings: validation, the three libraries' options, and passwords that never print."""

from __future__ import annotations

import dataclasses
import pickle
import ssl
from pathlib import Path

import pytest

from stream.errors import ConfigError
from stream.kafka.security import (
    aiokafka_options,
    confluent_options,
    kafka_python_options,
    ssl_context,
)
from stream.settings.secret import Secret, read_secret_file
from stream.settings.security import PROTOCOLS, SecuritySettings
from tests.harness.tls import TlsFiles, make_pki

PASSWORD = "pa55-Word_that-must-not-leak"
KEY_PASSWORD = "key-pa55-that-must-not-leak"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_pki(tmp_path_factory.mktemp("pki"), client_key_password=KEY_PASSWORD)


def _full(tls: TlsFiles) -> SecuritySettings:
    return SecuritySettings(
        "SASL_SSL",
        "SCRAM-SHA-256",
        "alice",
        Secret(PASSWORD),
        ssl_cafile=tls.ca_file,
        ssl_certfile=tls.client_cert,
        ssl_keyfile=tls.client_key,
        ssl_key_password=Secret(KEY_PASSWORD),
    )


def test_default_is_plaintext_and_every_library_gets_only_the_protocol() -> None:
    security = SecuritySettings()
    assert aiokafka_options(security) == {"security_protocol": "PLAINTEXT"}
    assert kafka_python_options(security) == {"security_protocol": "PLAINTEXT"}
    assert confluent_options(security) == {"security.protocol": "PLAINTEXT"}
    assert ssl_context(security) is None


def test_sasl_ssl_with_client_certificate_maps_to_each_library(tls: TlsFiles) -> None:
    security = _full(tls)
    aio = aiokafka_options(security)
    assert aio["security_protocol"] == "SASL_SSL"
    assert (aio["sasl_mechanism"], aio["sasl_plain_username"]) == ("SCRAM-SHA-256", "alice")
    assert aio["sasl_plain_password"] == PASSWORD
    context = aio["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert kafka_python_options(security) == {
        "security_protocol": "SASL_SSL",
        "ssl_check_hostname": True,
        "ssl_cafile": str(tls.ca_file),
        "ssl_certfile": str(tls.client_cert),
        "ssl_keyfile": str(tls.client_key),
        "ssl_password": KEY_PASSWORD,
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "alice",
        "sasl_plain_password": PASSWORD,
    }
    assert confluent_options(security) == {
        "security.protocol": "SASL_SSL",
        "ssl.ca.location": str(tls.ca_file),
        "ssl.certificate.location": str(tls.client_cert),
        "ssl.key.location": str(tls.client_key),
        "ssl.key.password": KEY_PASSWORD,
        "sasl.mechanisms": "SCRAM-SHA-256",
        "sasl.username": "alice",
        "sasl.password": PASSWORD,
    }


def test_ssl_without_ca_file_trusts_the_system_cas() -> None:
    security = SecuritySettings("ssl")
    assert security.security_protocol == "SSL"
    assert "ssl_cafile" not in kafka_python_options(security)
    assert "ssl.ca.location" not in confluent_options(security)
    context = aiokafka_options(security)["ssl_context"]
    assert (
        context.cert_store_stats()["x509_ca"]
        == ssl.create_default_context().cert_store_stats()["x509_ca"]
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"security_protocol": "TLS"}, "security_protocol must be one of"),
        ({"security_protocol": "SASL_SSL"}, "needs a sasl_mechanism"),
        (
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI"},
            "sasl_mechanism must be one of",
        ),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"}, "needs a sasl_username"),
        (
            {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "PLAIN",
                "sasl_username": "a",
            },
            "needs a SASL password",
        ),
        ({"security_protocol": "SSL", "sasl_username": "alice"}, "has no SASL"),
        ({"security_protocol": "PLAINTEXT", "sasl_password": Secret("x")}, "has no SASL"),
        ({"security_protocol": "PLAINTEXT", "ssl_cafile": Path("/x")}, "has no TLS"),
        ({"security_protocol": "SSL", "ssl_cafile": Path("/no/such/ca.pem")}, "does not exist"),
        ({"security_protocol": "SSL", "ssl_certfile": Path("/no/cert.pem")}, "go together"),
        ({"security_protocol": "SSL", "ssl_key_password": Secret("x")}, "without ssl_keyfile"),
        ({"security_protocol": "SSL", "ssl_key_password": "plain str"}, "must be a Secret"),
    ],
)
def test_invalid_combinations_are_config_errors(arguments: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SecuritySettings(**arguments)


def test_a_wrong_key_password_is_a_config_error_naming_the_files_not_the_password(
    tls: TlsFiles,
) -> None:
    security = SecuritySettings(
        "SSL",
        ssl_cafile=tls.ca_file,
        ssl_certfile=tls.client_cert,
        ssl_keyfile=tls.client_key,
        ssl_key_password=Secret("wrong-" + KEY_PASSWORD),
    )
    with pytest.raises(ConfigError, match="cannot load the client certificate") as caught:
        ssl_context(security)
    assert str(tls.client_key) in str(caught.value)
    assert KEY_PASSWORD not in str(caught.value)


def test_a_ca_file_that_is_not_pem_is_a_config_error(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate")
    with pytest.raises(ConfigError, match="not a usable PEM CA file"):
        ssl_context(SecuritySettings("SSL", ssl_cafile=bogus))


def test_passwords_never_print(tls: TlsFiles) -> None:
    security = _full(tls)
    shown = [repr(security), str(security), security.describe(), f"{security.sasl_password}"]
    shown += [repr(security.sasl_password), str(security.ssl_key_password), f"{security!r:>10}"]
    for text in shown:
        assert PASSWORD not in text and KEY_PASSWORD not in text
    assert "alice" in security.describe()
    with pytest.raises(TypeError, match="not pickled"):
        pickle.dumps(security)
    assert dataclasses.asdict(security)["sasl_password"] is security.sasl_password


def test_secrets_compare_by_value_and_refuse_empty() -> None:
    assert Secret("a") == Secret("a") and Secret("a") != Secret("b")
    with pytest.raises(ConfigError, match="must not be empty"):
        Secret("")


def test_password_file_drops_one_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text(PASSWORD + "\n")
    assert read_secret_file(path, "sasl password").reveal() == PASSWORD
    path.write_text(PASSWORD + "\r\n")
    assert read_secret_file(path, "sasl password").reveal() == PASSWORD
    path.write_text(" spaced \n\n")
    assert read_secret_file(path, "sasl password").reveal() == " spaced \n"


def test_password_file_errors_name_the_file_never_its_contents(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read the password file .*missing"):
        read_secret_file(tmp_path / "missing", "sasl password")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        read_secret_file(empty, "sasl password")
    binary = tmp_path / "binary"
    binary.write_bytes(PASSWORD.encode() + b"\xff\xfe")
    with pytest.raises(ConfigError) as caught:
        read_secret_file(binary, "sasl password")
    assert PASSWORD not in str(caught.value)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_protocol_has_options_for_every_library(protocol: str, tls: TlsFiles) -> None:
    sasl = {"sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password": Secret("p")}
    tls_files = {"ssl_cafile": tls.ca_file}
    security = SecuritySettings(
        protocol,
        **(sasl if protocol.startswith("SASL") else {}),
        **(tls_files if protocol.endswith("SSL") else {}),
    )
    for options in (aiokafka_options(security), kafka_python_options(security)):
        assert options["security_protocol"] == protocol
        assert ("sasl_plain_password" in options) == security.uses_sasl
    assert confluent_options(security)["security.protocol"] == protocol
    assert ("ssl_context" in aiokafka_options(security)) == security.uses_tls


def test_a_password_file_is_read_when_a_client_is_built(tmp_path: Path) -> None:
    path = tmp_path / "sasl-password"
    path.write_text("first\n")
    security = SecuritySettings("SASL_PLAINTEXT", "PLAIN", "u", sasl_password_file=path)
    assert "first" not in repr(security)
    assert kafka_python_options(security)["sasl_plain_password"] == "first"
    path.write_text("rotated\n")
    assert confluent_options(security)["sasl.password"] == "rotated"


def test_a_password_and_its_file_exclude_each_other(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("x")
    with pytest.raises(ConfigError, match="not both"):
        SecuritySettings("SASL_SSL", "PLAIN", "u", Secret("y"), sasl_password_file=path)
    with pytest.raises(ConfigError, match="cannot read the password file"):
        SecuritySettings("SASL_SSL", "PLAIN", "u", sasl_password_file=tmp_path / "missing")
