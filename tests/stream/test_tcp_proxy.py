"""The loopback TCP proxy the network-fault tests put between the worker and the broker,
tested against a plain echo server (no broker needed)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.local_broker.broker import LocalKafkaBroker
from tests.harness.proxy import TcpProxy


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A server on 127.0.0.1 that sends back whatever each connection sends it."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield int(server.getsockname()[1])
    server.close()


def _round_trip(address: str, payload: bytes) -> bytes:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(payload)
        received = b""
        while len(received) < len(payload):
            chunk = conn.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


def _refused(address: str) -> bool:
    """A cut proxy resets a new connection: at connect, on send, or as an empty reply."""
    try:
        return _round_trip(address, b"refused") == b""
    except OSError:
        return True


def test_forwards_both_directions(echo_port: int) -> None:
    payload = bytes(range(256)) * 1024
    with TcpProxy(echo_port) as proxy:
        assert _round_trip(proxy.address, payload) == payload


def test_cut_resets_live_connections_and_refuses_new_ones_until_restored(
    echo_port: int,
) -> None:
    with TcpProxy(echo_port) as proxy:
        host, port = proxy.address.rsplit(":", 1)
        live = socket.create_connection((host, int(port)), timeout=5)
        live.sendall(b"ping")
        assert live.recv(4) == b"ping"

        proxy.cut()

        with live, pytest.raises(OSError):
            live.sendall(b"after the cut")
            if not live.recv(4):  # an orderly end instead of a reset is a cut too
                raise ConnectionResetError
        assert _refused(proxy.address)
        assert proxy.refused >= 1

        proxy.restore()

        assert _round_trip(proxy.address, b"back") == b"back"


def test_the_broker_can_advertise_a_proxy_port(tmp_path: Path) -> None:
    broker = LocalKafkaBroker(tmp_path, port=29092, advertised_port=39092)

    properties = broker.server_properties()

    assert properties["listeners"].startswith("PLAINTEXT://127.0.0.1:29092,")
    assert properties["advertised.listeners"] == "PLAINTEXT://127.0.0.1:39092"
    assert broker.advertised_servers == "127.0.0.1:39092"
    assert broker.bootstrap_servers == "127.0.0.1:29092"
    default = LocalKafkaBroker(tmp_path, port=29092).server_properties()
    assert default["advertised.listeners"] == "PLAINTEXT://127.0.0.1:29092"


@pytest.mark.parametrize("bad", [0, 65536])
def test_bad_advertised_ports_are_rejected(tmp_path: Path, bad: int) -> None:
    with pytest.raises(ValueError, match="advertised_port"):
        LocalKafkaBroker(tmp_path, advertised_port=bad)
