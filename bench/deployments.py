"""The streamgnn processes a benchmark offers its load to, as one unit.

``worker``: one all-in-one ``python -m stream.worker`` (ingest, store, train, publish in
one interpreter: the trainer thread and the ingest threads share its GIL). ``split``: the
scaled-out deployment with one of each, ``python -m stream.ingest.command`` (the ingest
half, writing the graph changelog in Kafka transactions) and ``python -m stream.train``
(folding that changelog, training, publishing): no GIL shared, one Kafka hop more.

Both read the same environment (each takes the options it knows); they differ only in
their metrics address. A scrape of the deployment sums the processes' samples: a metric
one process does not own reads 0 there (an unset gauge, an untouched counter), so ingest's
``streamgnn_graph_edges`` and the trainer's ``streamgnn_train_backlog_events`` each come
from their own process. RSS is the processes' sum.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from stream.local_broker.broker import free_ports
from stream.metrics import owns_partitions, scrape_metrics
from tests.harness.worker_process import INGEST_COMMAND, TRAIN_COMMAND, WorkerProcess, wait_for

DEPLOYMENTS = ("worker", "split")


def merged(scrapes: list[dict[str, float]]) -> dict[str, float]:
    """One scrape of several processes: each sample summed over them.

    >>> merged([{"edges": 5.0, 'lag{partition="0"}': 2.0}, {"edges": 0.0, "backlog": 7.0}])
    {'edges': 5.0, 'lag{partition="0"}': 2.0, 'backlog': 7.0}
    """
    out: dict[str, float] = {}
    for samples in scrapes:
        for key, value in samples.items():
            out[key] = out.get(key, 0.0) + value
    return out


class Deployment:
    """The processes of one ``kind`` (see the module docstring), started and stopped together.

    Args:
        kind: ``worker`` or ``split``.
        env: the all-in-one worker's environment (``STREAMGNN_METRICS_ADDRESS`` included:
            the worker's, or the ingest process's when split).
        workdir: where each process's log goes, named by ``tag``.
    """

    def __init__(self, kind: str, env: Mapping[str, str], workdir: Path, tag: str) -> None:
        if kind not in DEPLOYMENTS:
            raise ValueError(f"unknown deployment {kind!r}; valid: {', '.join(DEPLOYMENTS)}")
        self.kind = kind
        self.addresses = [env["STREAMGNN_METRICS_ADDRESS"]]
        if kind == "worker":
            self.processes = {"worker": WorkerProcess(env, workdir / f"worker-{tag}.log")}
            return
        self.addresses.append(f"127.0.0.1:{free_ports(1)[0]}")
        self._train_log = workdir / f"train-{tag}.log"
        self.processes = {
            "ingest": WorkerProcess(env, workdir / f"ingest-{tag}.log", command=INGEST_COMMAND),
            "train": WorkerProcess(
                {**env, "STREAMGNN_METRICS_ADDRESS": self.addresses[1]},
                self._train_log,
                command=TRAIN_COMMAND,
            ),
        }

    def start(self, timeout_s: float = 180.0) -> None:
        """Start every process; return once the trainer follows its changelog (split) and
        ingest owns its partitions: events sent from then on are consumed at once."""
        for process in reversed(self.processes.values()):  # the trainer first
            process.start()
        if self.kind == "split":
            wait_for(self._train_following, timeout_s, "the trainer to follow its changelog")
        wait_for(lambda: owns_partitions(self.addresses[0]), timeout_s, "ingest to own partitions")

    def _train_following(self) -> bool:
        if self.processes["train"].exit_status() is not None:
            raise RuntimeError(f"the trainer exited; see {self._train_log}")
        log = self._train_log.read_text(errors="replace") if self._train_log.exists() else ""
        return "trainer following" in log

    def scrape(self) -> dict[str, float]:
        """Every process's metrics, summed (see :func:`merged`)."""
        return merged([scrape_metrics(address) for address in self.addresses])

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes.values()]

    def terminate(self, timeout_s: float = 300.0) -> dict[str, int]:
        """SIGTERM each process (ingest first: what it applied reaches the trainer's
        changelog before the trainer stops); their exit statuses by role."""
        return {role: p.terminate(timeout_s) for role, p in self.processes.items()}
