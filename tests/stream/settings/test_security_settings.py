"""``kafka.security`` in the settings tree: environment twins, no password flags, no echoes."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.cli import build_parser
from stream.errors import ConfigError
from stream.settings import OPTIONS, Secret, load_settings, select, settings_from_args

PASSWORD = "Tr0ub4dor-and-3-must-not-leak"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    ca = tmp_path / "ca.pem"
    ca.write_text("-")  # existence is checked here; parsing when a client is built
    return {
        "STREAMGNN_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "STREAMGNN_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "STREAMGNN_KAFKA_SASL_USERNAME": "alice",
        "STREAMGNN_KAFKA_SASL_PASSWORD": PASSWORD,
        "STREAMGNN_KAFKA_SSL_CAFILE": str(ca),
        **extra,
    }


def test_the_environment_configures_every_client_of_the_kafka_section(tmp_path: Path) -> None:
    security = load_settings({}, _env(tmp_path)).kafka.security
    assert security.security_protocol == "SASL_SSL"
    assert (security.sasl_mechanism, security.sasl_username) == ("SCRAM-SHA-512", "alice")
    assert security.sasl_secret() == Secret(PASSWORD)
    assert security.ssl_cafile == tmp_path / "ca.pem"


def test_a_password_file_named_by_its_twin(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text(PASSWORD + "\n")
    env = _env(tmp_path, STREAMGNN_KAFKA_SASL_PASSWORD_FILE=str(secret))
    del env["STREAMGNN_KAFKA_SASL_PASSWORD"]
    assert load_settings({}, env).kafka.security.sasl_secret() == Secret(PASSWORD)
    with pytest.raises(ConfigError, match="not both") as caught:
        load_settings({}, {**env, "STREAMGNN_KAFKA_SASL_PASSWORD": PASSWORD})
    assert PASSWORD not in str(caught.value)


def test_passwords_have_twins_and_no_flags() -> None:
    secrets = [o for o in OPTIONS if o.kind == "secret"]
    assert {o.name for o in secrets} == {"sasl_password", "ssl_key_password"}
    assert all(o.flag == "" and o.section == "kafka.security" for o in secrets)
    assert {o.env for o in secrets} == {
        "STREAMGNN_KAFKA_SASL_PASSWORD",
        "STREAMGNN_KAFKA_SSL_KEY_PASSWORD",
    }


@pytest.mark.parametrize("command", ["worker", "produce", "consume"])
def test_every_kafka_command_takes_the_security_section(command: str) -> None:
    parser = build_parser()
    args = parser.parse_args([command])
    wanted = {o.key for o in select("kafka.security")}
    assert wanted <= {o.key for o in args.settings_options}


@pytest.mark.parametrize("argv", [["--sasl-password", PASSWORD], [f"--sasl-password={PASSWORD}"]])
def test_a_password_flag_is_refused_without_repeating_it(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["worker", *argv])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "STREAMGNN_KAFKA_SASL_PASSWORD" in err
    assert PASSWORD not in err


def test_help_shows_the_twins_never_a_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMGNN_KAFKA_SASL_PASSWORD", PASSWORD)
    monkeypatch.setenv("STREAMGNN_KAFKA_SSL_KEY_PASSWORD", PASSWORD)
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name in ("worker", "produce", "consume"):
        text = commands[name].format_help()
        assert "[STREAMGNN_KAFKA_SASL_PASSWORD]" in text
        assert "--sasl-password-file" in text
        assert PASSWORD not in text


def test_settings_and_their_errors_never_show_a_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for option in OPTIONS:
        monkeypatch.delenv(option.env, raising=False)
    for key, value in _env(tmp_path).items():
        monkeypatch.setenv(key, value)
    settings = settings_from_args(build_parser().parse_args(["worker"]))
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings)
    monkeypatch.setenv("STREAMGNN_KAFKA_SASL_MECHANISM", "GSSAPI")
    with pytest.raises(ConfigError) as caught:
        settings_from_args(build_parser().parse_args(["worker"]))
    assert PASSWORD not in str(caught.value)
    monkeypatch.setenv("STREAMGNN_KAFKA_SASL_PASSWORD", "")
    with pytest.raises(ConfigError, match="STREAMGNN_KAFKA_SASL_PASSWORD"):
        settings_from_args(build_parser().parse_args(["worker"]))
