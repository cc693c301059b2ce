"""A local Apache Kafka node (KRaft, broker + controller in one JVM) on 127.0.0.1.

``LocalKafkaBroker`` formats its log dir once, starts ``kafka.Kafka`` from the jars
:func:`stream.local_broker.jars.ensure_kafka_jars` provides, waits until a client metadata
call succeeds and stops the JVM by PID. ``streamgnn demo`` runs on it, and so does the test
suite; ``docker-compose.yml`` describes the same node for container hosts.
"""

from __future__ import annotations

import base64
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
import weakref
from collections.abc import Mapping
from contextlib import ExitStack, suppress
from pathlib import Path
from types import TracebackType
from typing import Self

from kafka.errors import KafkaError

from stream.errors import BrokerError
from stream.kafka.clients import kafka_admin
from stream.kafka.topics import create_missing_topics
from stream.local_broker.jars import LOG4J, TAIL_LINES, ensure_kafka_jars, java_executable, tail
from stream.local_broker.secured import SecuredListener, argument_file
from stream.settings import KafkaSettings

_HOST = "127.0.0.1"


class LocalKafkaBroker:
    """One Kafka node, broker and controller, listening on 127.0.0.1 only.

    Args:
        data_dir: folder for ``server.properties``, the broker log and the Kafka log dir.
            Reusing it after ``kill()`` or ``stop()`` keeps topics, records and cluster id.
        port: client (PLAINTEXT) port; a free ephemeral port when ``None``.
        controller_port: KRaft controller port; a free ephemeral port when ``None``.
        extra_properties: ``server.properties`` entries that override the defaults.
        advertised_port: the client port the node tells clients to connect to; ``port``
            when ``None``. Point it at a loopback TCP proxy (``tests/harness/proxy.py``) and
            every connection after bootstrap goes through the proxy, so a fault test can
            cut the network between a client and the node.
        jars_dir: folder of Kafka's jars (:func:`ensure_kafka_jars`' default when ``None``).
        secured: a third, TLS listener (SASL_SSL with SCRAM users, or SSL) for clients
            that must connect as to a secured cluster (:attr:`secured_servers`).

    Ports are fixed at construction, so a restarted node has the same bootstrap address.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        controller_port: int | None = None,
        extra_properties: Mapping[str, str] | None = None,
        advertised_port: int | None = None,
        jars_dir: Path | None = None,
        secured: SecuredListener | None = None,
    ) -> None:
        ports = (("port", port), ("controller_port", controller_port))
        for name, value in (*ports, ("advertised_port", advertised_port)):
            if value is not None and not 0 < value < 65536:
                raise ValueError(f"{name} must be in 1..65535, got {value!r}")
        if port is not None and port == controller_port:
            raise ValueError(f"port and controller_port must differ, both are {port}")
        secured_port = secured.port if secured is not None else 0
        explicit = (port, controller_port, secured_port)
        spare = [p for p in free_ports(3) if p not in explicit] if None in explicit else []
        self._port = port if port is not None else spare.pop(0)
        self._controller_port = controller_port if controller_port is not None else spare.pop(0)
        self._secured_port = secured_port if secured_port is not None else spare.pop(0)
        self._secured = secured
        if secured is not None and self._secured_port in (self._port, self._controller_port):
            raise ValueError(f"the secured listener's port {secured_port} is already taken")
        self._advertised_port = advertised_port if advertised_port is not None else self._port
        if self._advertised_port == self._controller_port:
            raise ValueError(
                f"advertised_port must differ from controller_port ({advertised_port})"
            )
        self._data_dir = Path(data_dir).resolve()
        self._extra_properties = dict(extra_properties or {})
        self._jars_dir = jars_dir
        self._process: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[..., LocalKafkaBroker] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{_HOST}:{self._port}"

    @property
    def advertised_servers(self) -> str:
        """The address the node advertises to clients (the proxy's, when one is set)."""
        return f"{_HOST}:{self._advertised_port}"

    @property
    def secured_servers(self) -> str:
        """The secured listener's address; ``BrokerError`` when the node has none."""
        if self._secured is None:
            raise BrokerError("this node has no secured listener (pass secured=...)")
        return f"{_HOST}:{self._secured_port}"

    @property
    def port(self) -> int:
        return self._port

    @property
    def controller_port(self) -> int:
        return self._controller_port

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    @property
    def log_path(self) -> Path:
        """The broker JVM's stdout/stderr, appended to across restarts."""
        return self._data_dir / "broker.log"

    @property
    def pid(self) -> int | None:
        """PID of the running JVM, ``None`` when the node is not running."""
        return self._process.pid if self._process is not None and self.is_running() else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def server_properties(self) -> dict[str, str]:
        """The ``server.properties`` this node starts with (defaults, then overrides)."""
        client, controller = self.bootstrap_servers, f"{_HOST}:{self._controller_port}"
        properties = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{controller}",
            "listeners": f"PLAINTEXT://{client},CONTROLLER://{controller}",
            "advertised.listeners": f"PLAINTEXT://{self.advertised_servers}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self._data_dir / "logs"),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            # Tests send multi-megabyte payloads.
            "message.max.bytes": "8388608",
            "replica.fetch.max.bytes": "8388608",
            # One node: internal topics cannot have more replicas; few partitions load fast.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Tests use consumer session timeouts well below the 6 s default minimum.
            "group.min.session.timeout.ms": "1000",
            # A killed node's old registration blocks its restart until the broker session
            # expires (9 s by default); heartbeats are local, so a shorter session is safe.
            "broker.session.timeout.ms": "4000",
            "broker.heartbeat.interval.ms": "500",
            # log.flush.* stay at their defaults: acked records sit in the page cache, which
            # survives a killed JVM (not a machine crash).
        }
        if self._secured is not None:
            properties.update(self._secured.server_properties(properties, self.secured_servers))
        properties.update(self._extra_properties)
        return properties

    def start(self, timeout_s: float = 120.0) -> None:
        """Format the log dir if new, start the JVM and wait until clients get metadata.

        A no-op when already running. Raises ``BrokerError`` with the broker log's tail
        when the JVM exits early or is not ready within ``timeout_s`` (it is killed then).
        """
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        if self.is_running():
            return
        self._detach()  # forget a JVM that exited on its own
        jars = ensure_kafka_jars(self._jars_dir)
        java = java_executable()
        if not LOG4J.is_file():
            raise BrokerError(f"Kafka log4j config not found at {LOG4J}")
        deadline = time.monotonic() + timeout_s
        self._data_dir.mkdir(parents=True, exist_ok=True)
        config = self._data_dir / "server.properties"
        # Owner-only: it holds the secured listener's store passwords.
        config.touch(mode=0o600)
        config.chmod(0o600)
        config.write_text("".join(f"{k}={v}\n" for k, v in self.server_properties().items()))
        classpath = ["-cp", str(jars / "*"), f"-Dlog4j.configuration={LOG4J.as_uri()}"]
        if not (self._data_dir / "logs" / "meta.properties").is_file():
            self._format_storage([java, *classpath], config, timeout_s)
        heap = ["-Xms256m", "-Xmx512m"]
        command = [*_parent_death_prefix(), java, *heap, *classpath, "kafka.Kafka", str(config)]
        with self.log_path.open("ab") as log:
            log.write(f"--- starting kafka.Kafka at {time.strftime('%F %T')} ---\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._data_dir,  # hs_err crash files land here, not in the caller's cwd
                start_new_session=True,  # its own process group: signalled as one, not by ^C
            )
        # Stops the JVM when this object is collected or the interpreter exits normally.
        self._finalizer = weakref.finalize(self, _terminate, self._process)
        self._wait_until_ready(deadline, timeout_s)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Controlled shutdown (SIGTERM); SIGKILL if still alive after ``timeout_s``."""
        if timeout_s < 0:
            raise ValueError(f"timeout_s must not be negative, got {timeout_s!r}")
        if self._process is not None:
            _terminate(self._process, timeout_s)
        self._detach()

    def kill(self) -> None:
        """SIGKILL the JVM now (a crash, for fault tests) and wait until it is gone."""
        if self._process is not None:
            _signal_group(self._process, signal.SIGKILL)
            self._process.wait()
        self._detach()

    def create_topics(
        self, names_partitions: Mapping[str, int], configs: Mapping[str, str] | None = None
    ) -> None:
        """Create topics (replication factor 1) and wait until every partition has a leader.

        Topics that already exist are left as they are.
        """
        for name, partitions in names_partitions.items():
            if not name:
                raise ValueError("topic names must be non-empty")
            if partitions < 1:
                raise ValueError(f"topic {name!r} needs at least 1 partition, got {partitions!r}")
        if not names_partitions:
            return
        if not self.is_running():
            raise BrokerError(
                f"cannot create topics: the broker at {self.bootstrap_servers} is down"
            )
        request = {
            name: {"num_partitions": n, "replication_factor": 1, "configs": dict(configs or {})}
            for name, n in names_partitions.items()
        }
        admin = kafka_admin(KafkaSettings(self.bootstrap_servers), client_id="streamgnn-admin")
        try:
            failed = create_missing_topics(admin, request, timeout_ms=30_000)
            if failed:
                raise BrokerError(f"could not create topics: {failed}")
        finally:
            admin.close()

    def log_tail(self, lines: int = TAIL_LINES) -> str:
        """The last ``lines`` lines of the broker log ('' when there is none yet)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return tail(text, lines)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LocalKafkaBroker({self.bootstrap_servers}, pid={self.pid}, {self._data_dir})"

    def _format_storage(self, jvm: list[str], config: Path, timeout_s: float) -> None:
        # StorageTool calls System.exit, hence its own JVM. With static
        # controller.quorum.voters it must be formatted without --standalone. Its
        # arguments (SCRAM passwords among them) go in an @argfile, out of ps's sight.
        arguments = ["kafka.tools.StorageTool", "format", "--cluster-id", _new_cluster_id()]
        arguments += ["--config", str(config)]
        if self._secured is not None:
            arguments += self._secured.format_arguments()
        try:
            with argument_file(arguments, self._data_dir) as argfile:
                result = subprocess.run(
                    [*jvm, f"@{argfile}"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    cwd=self._data_dir,
                    timeout=timeout_s,
                    check=False,
                )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(f"StorageTool format did not finish within {timeout_s}s") from exc
        with self.log_path.open("ab") as log:
            log.write(result.stdout)
        if result.returncode != 0:
            raise BrokerError(
                f"StorageTool format failed (exit {result.returncode}):\n"
                + tail(result.stdout.decode(errors="replace"))
            )

    def _wait_until_ready(self, deadline: float, timeout_s: float) -> None:
        process = self._process
        if process is None:
            raise BrokerError("the broker process was not started")
        while True:
            returncode = process.poll()
            if returncode is not None:
                self._detach()
                raise BrokerError(
                    f"Kafka exited with {returncode} before it was ready; "
                    f"tail of {self.log_path}:\n{self.log_tail()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise BrokerError(
                    f"Kafka was not ready at {self.bootstrap_servers} within {timeout_s}s; "
                    f"tail of {self.log_path}:\n{self.log_tail()}"
                )
            if self._serves_metadata(min(remaining, 5.0)):
                return
            time.sleep(0.2)

    def _serves_metadata(self, timeout_s: float) -> bool:
        timeout_ms = max(int(timeout_s * 1000), 100)
        try:
            admin = kafka_admin(
                KafkaSettings(self.bootstrap_servers),
                client_id="streamgnn-readiness",
                bootstrap_timeout_ms=timeout_ms,
                request_timeout_ms=timeout_ms,
                reconnect_backoff_max_ms=500,
            )
        except (KafkaError, OSError):
            return False
        try:
            return bool(admin.describe_cluster().get("brokers"))
        except (KafkaError, OSError):
            return False
        finally:
            admin.close()

    def _detach(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
        self._finalizer = None
        self._process = None


def _terminate(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    if process.poll() is None:
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout_s)
            return
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
    process.wait()


def _signal_group(process: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    # The JVM leads its own process group (start_new_session), so the group id is its PID.
    # Only signal while it is unreaped: a reaped PID may already belong to someone else.
    if process.poll() is not None:
        return
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


def _parent_death_prefix() -> list[str]:
    """``setpriv --pdeathsig TERM`` so the JVM stops when this Python process dies hard.

    The death signal fires when the *thread* that spawned the child exits, so it is only
    used from the main thread. Without setpriv the finalizer is the only safety net.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None or threading.current_thread() is not threading.main_thread():
        return []
    return [setpriv, "--pdeathsig", "TERM", "--"]


# Listening ports are drawn below the kernel's ephemeral range: a port from inside it can be
# taken, while its listener restarts (a broker restarted on its fixed port, a restarted
# worker's metrics), as the local end of any outgoing connection on the machine.
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LISTEN_PORTS = range(20_000, 32_768)  # below Linux's default ephemeral 32768-60999


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 now, outside the ephemeral range when it
    is known (else any the kernel gives)."""
    candidates = _listen_ports()
    # All sockets stay bound until every port is read, so the ports are distinct.
    with ExitStack() as stack:
        ports: list[int] = []
        for port in random.sample(candidates, len(candidates)):  # in random order
            sock = stack.enter_context(socket.socket())
            try:
                sock.bind((_HOST, port))
            except OSError:
                continue
            ports.append(port)
            if len(ports) == count:
                return ports
        while len(ports) < count:
            sock = stack.enter_context(socket.socket())
            sock.bind((_HOST, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def _listen_ports() -> list[int]:
    """The ports of :data:`LISTEN_PORTS` outside the ephemeral range ([] if unreadable)."""
    try:
        low, high = (int(v) for v in EPHEMERAL_RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        return []
    return [p for p in LISTEN_PORTS if not low <= p <= high]


def _new_cluster_id() -> str:
    # Kafka's base64 UUID form; one starting with "-" would read as a CLI flag.
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id
