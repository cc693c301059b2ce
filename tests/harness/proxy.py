"""A TCP proxy on 127.0.0.1 whose link to the broker a fault test can cut and restore.

A network partition is hard to make on loopback without root, so the fault tests put
this proxy between every client and the broker instead: the broker advertises the
proxy's port (``LocalKafkaBroker(advertised_port=...)``), so bootstrap *and* every
connection the metadata points to run through it. :meth:`TcpProxy.cut` closes every live
connection and, until :meth:`TcpProxy.restore`, refuses new ones (accepted, then reset at
once), which is what a client sees from a broker that went away mid-stream.

Plain threads, two per connection (one per direction): Kafka clients open a handful of
connections, and blocking copies are the simplest thing that cannot reorder bytes.

>>> with TcpProxy(target_port=9) as proxy:
...     proxy.address.startswith("127.0.0.1:")
True
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Self

from stream.local_broker.broker import LocalKafkaBroker

_HOST = "127.0.0.1"
_CHUNK = 65_536
_ACCEPT_POLL_S = 0.1
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST, not FIN


class TcpProxy:
    """Forwards connections on ``127.0.0.1:port`` to ``127.0.0.1:target_port``.

    Args:
        target_port: where accepted connections are forwarded (the broker's real port);
            :attr:`target_port` may be set later, before the first client connects.
        port: the port to listen on; a free ephemeral port when ``None`` or 0.

    Listening starts at construction (so the port is known, fixed and held); use it as a
    context manager or call :meth:`close`.
    """

    def __init__(self, target_port: int, port: int | None = None) -> None:
        for name, value in (("target_port", target_port), ("port", port)):
            if value is not None and not 0 <= value < 65536:
                raise ValueError(f"{name} must be in 0..65535, got {value!r}")
        self.target_port = target_port
        self._listener = socket.create_server((_HOST, port or 0))
        self._listener.settimeout(_ACCEPT_POLL_S)
        self._lock = threading.Lock()
        self._links: set[socket.socket] = set()
        self._cut = False
        self._closed = threading.Event()
        self.refused = 0  # connections turned away while cut
        self._acceptor = threading.Thread(target=self._accept, name="tcp-proxy", daemon=True)
        self._acceptor.start()

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    @property
    def address(self) -> str:
        return f"{_HOST}:{self.port}"

    @property
    def is_cut(self) -> bool:
        return self._cut

    def live_connections(self) -> int:
        """Client connections being forwarded now."""
        with self._lock:
            return len(self._links) // 2

    def cut(self) -> None:
        """Reset every live connection and refuse new ones until :meth:`restore`."""
        with self._lock:
            self._cut = True
            links, self._links = self._links, set()
        for sock in links:
            _reset(sock)

    def restore(self) -> None:
        """Forward new connections again (the clients reconnect on their own)."""
        with self._lock:
            self._cut = False

    def close(self) -> None:
        self._closed.set()
        self._acceptor.join()
        self._listener.close()
        self.cut()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._cut:
                self.refused += 1
                _reset(client)
                continue
            try:
                upstream = socket.create_connection((_HOST, self.target_port), timeout=5.0)
            except OSError:
                _reset(client)  # broker down: the client sees what it would see without us
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._cut:  # cut while connecting upstream
                    _reset(client)
                    _reset(upstream)
                    continue
                self._links.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pump, args=(source, sink), name="tcp-proxy-pump", daemon=True
                ).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        """Copy one direction until either side ends; then end both."""
        try:
            while chunk := source.recv(_CHUNK):
                sink.sendall(chunk)
        except OSError:
            pass  # reset by cut() or by a peer
        with self._lock:
            self._links.difference_update((source, sink))
        _reset(source)
        _reset(sink)


def _reset(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed or never connected
    sock.close()


@contextmanager
def proxied_broker(data_dir: Path) -> Iterator[tuple[LocalKafkaBroker, TcpProxy]]:
    """A started :class:`LocalKafkaBroker` that advertises a :class:`TcpProxy` in front of it.

    The proxy binds first, so its port is held while the broker picks its own; clients
    that bootstrap at ``proxy.address`` never reach the broker except through the proxy.
    Stopped (broker, then proxy) on exit.
    """
    with TcpProxy(target_port=0) as proxy:
        broker = LocalKafkaBroker(data_dir, advertised_port=proxy.port)
        proxy.target_port = broker.port
        with broker:
            yield broker, proxy
