"""A worker on a node that enforces ACLs (KRaft's StandardAuthorizer), with the rights the
docs/security.md's "Access control (ACLs)" table lists, read from that page itself: with all of them
a ``--changelog`` worker ingests and publishes over SASL_SSL; without one of them it exits
2 within seconds, naming what it may not do, where librdkafka would report the refusal and
go on (the worker idle, or retrying, for ever)."""

from __future__ import annotations

import re
import sys
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from stream.errors import BrokerError
from stream.local_broker.broker import free_ports
from stream.metrics import scrape_metrics, serves_metrics, total
from tests.harness.faults import produce
from tests.harness.secured_cluster import SecuredCluster, start_secured_broker
from tests.harness.worker_process import WorkerProcess, wait_for

pytestmark = pytest.mark.integration

ACL_PAGE = Path(__file__).resolve().parents[3] / "docs" / "security.md"
EVENTS = 60
_WAIT_S = 120  # a bound on a hang, not a performance figure


def documented_acls() -> list[tuple[str, str, str, list[str]]]:
    """(resource type, name template, pattern, operations) of each row of docs/security.md's
    ACL table."""
    section = ACL_PAGE.read_text().split("## Access control (ACLs)", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] in ("Topic", "Group", "TransactionalId"):
            operations = [op.strip() for op in cells[3].split(",")]
            rows.append((cells[0], cells[1].strip("`"), cells[2], operations))
    return rows


@pytest.fixture(scope="module")
def acl_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredCluster]:
    directory = tmp_path_factory.mktemp("acl-kafka")
    try:
        cluster = start_secured_broker(directory, authorizer=True)
    except BrokerError as exc:
        pytest.fail(f"the Kafka node with an authorizer did not start: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.broker.stop()


def test_the_readme_lists_each_resource_a_changelog_worker_uses() -> None:
    names = {name for _, name, _, _ in documented_acls()}
    assert names == {
        "{interactions}",
        "{group}",
        "{dlq}",
        "{user_embeddings}",
        "{item_embeddings}",
        "{changelog}",
        "{group}.{instance_id}.ingest",
    }


@pytest.mark.parametrize(
    ("missing", "changelog", "refusal"),
    [
        (None, True, None),
        (("{interactions}", "READ"), True, r"not authorized to read 'interactions-\w+'"),
        (  # the consumer's own refusal, which librdkafka reports and goes on
            ("{interactions}", "READ"),
            False,
            r"not authorized to consume 'interactions-\w+' in group 'g-\w+'",
        ),
        (("{group}", "READ"), True, r"not authorized to use group 'g-\w+' \(.*Group author"),
        (("{user_embeddings}", "WRITE"), True, r"not authorized to write the embedding topics"),
        (("{user_embeddings}", "READ"), True, r"not authorized to read the embedding topics"),
        (
            ("{group}.{instance_id}.ingest", "WRITE"),
            True,
            r"not authorized to write the changelog with transactional.id 'g-\w+.w1.ingest'",
        ),
        (("{dlq}", "DESCRIBE_CONFIGS"), True, r"not authorized to describe .*'dlq-\w+'"),
        (
            ("{user_embeddings}", "DESCRIBE_CONFIGS"),
            True,
            r"not authorized to describe .*'users-\w+'",
        ),
    ],
    ids=[
        "all",
        "no-topic-read",
        "no-topic-read-without-changelog",
        "no-group",
        "no-embedding-write",
        "no-embedding-read",
        "no-transactional-id",
        "no-dlq-describe-configs",
        "no-embedding-describe-configs",
    ],
)
def test_a_worker_runs_with_the_documented_acls_and_stops_saying_which_one_is_missing(
    acl_cluster: SecuredCluster,
    tmp_path: Path,
    missing: tuple[str, str] | None,
    changelog: bool,
    refusal: str | None,
) -> None:
    tag = uuid.uuid4().hex[:10]
    names = {
        "interactions": f"interactions-{tag}",
        "group": f"g-{tag}",
        "dlq": f"dlq-{tag}",
        "user_embeddings": f"users-{tag}",
        "item_embeddings": f"items-{tag}",
        "instance_id": "w1",
    }
    names["changelog"] = f"{names['interactions']}-{names['group']}-graph-changelog"
    # Every topic made beforehand (PLAINTEXT: the node's super user), so no CREATE is needed.
    acl_cluster.broker.create_topics({names["interactions"]: 2, names["dlq"]: 1})
    acl_cluster.broker.create_topics(
        {names[kind]: 1 for kind in ("user_embeddings", "item_embeddings")},
        configs={"cleanup.policy": "compact"},
    )
    acl_cluster.broker.create_topics({names["changelog"]: 2}, configs={"cleanup.policy": "compact"})
    granted = [
        (kind, name, pattern, [op for op in ops if (name, op) != missing])
        for kind, name, pattern, ops in documented_acls()
    ]
    _grant(acl_cluster, acl_cluster.username, granted, names)
    produce(acl_cluster.broker.bootstrap_servers, names["interactions"], EVENTS)
    # Something on a vector topic: the worker's start reads them for the highest version.
    stray = Producer({"bootstrap.servers": acl_cluster.broker.bootstrap_servers})
    stray.produce(names["user_embeddings"], key=b"u0", value=b"not a vector")
    assert stray.flush(30) == 0

    metrics = f"127.0.0.1:{free_ports(1)[0]}"
    worker = WorkerProcess(
        acl_cluster.env() | _worker_twins(names, tmp_path, metrics, changelog),
        tmp_path / "worker.log",
        command=[sys.executable, "-m", "stream.cli", "worker"],
    )
    worker.start()
    try:
        if refusal is None:
            wait_for(partial(_published, worker, metrics), _WAIT_S, "events ingested, published")
            assert worker.terminate() == 0
        else:
            wait_for(lambda: worker.exit_status() is not None, _WAIT_S, "the worker to stop")
            assert worker.exit_status() == 2
    finally:
        if worker.exit_status() is None:
            worker.kill()
    text = (tmp_path / "worker.log").read_text(errors="replace")
    if refusal is not None:
        assert re.search(f"user '{acl_cluster.username}' is {refusal}", text), text[-3000:]
    assert acl_cluster.password not in text


def _grant(
    cluster: SecuredCluster,
    user: str,
    rows: list[tuple[str, str, str, list[str]]],
    names: dict[str, str],
) -> None:
    kinds = {
        "Topic": ResourceType.TOPIC,
        "Group": ResourceType.GROUP,
        "TransactionalId": ResourceType.TRANSACTIONAL_ID,
    }
    patterns = {"literal": ResourcePatternType.LITERAL, "prefixed": ResourcePatternType.PREFIXED}
    bindings = [
        AclBinding(
            kinds[kind],
            template.format(**names),
            patterns[pattern],
            f"User:{user}",
            "*",
            AclOperation[operation],
            AclPermissionType.ALLOW,
        )
        for kind, template, pattern, operations in rows
        for operation in operations
    ]
    assert bindings
    admin = AdminClient({"bootstrap.servers": cluster.broker.bootstrap_servers})
    for future in admin.create_acls(bindings).values():
        future.result(30)


def _worker_twins(
    names: dict[str, str], tmp_path: Path, metrics: str, changelog: bool
) -> dict[str, str]:
    return {
        "STREAMGNN_INTERACTIONS_TOPIC": names["interactions"],
        "STREAMGNN_GROUP_ID": names["group"],
        "STREAMGNN_DLQ_TOPIC": names["dlq"],
        "STREAMGNN_USER_EMBEDDINGS_TOPIC": names["user_embeddings"],
        "STREAMGNN_ITEM_EMBEDDINGS_TOPIC": names["item_embeddings"],
        "STREAMGNN_CHANGELOG": str(changelog).lower(),
        "STREAMGNN_INSTANCE_ID": names["instance_id"],
        "STREAMGNN_STORE_PATH": str(tmp_path / "graph"),
        "STREAMGNN_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
        "STREAMGNN_VERSION_LEDGER": str(tmp_path / "ledger" / "versions.json"),
        "STREAMGNN_METRICS_ADDRESS": metrics,
        "STREAMGNN_DIM": "8",
        "STREAMGNN_DEVICE": "cpu",
    }


def _published(worker: WorkerProcess, metrics: str) -> bool:
    """Every event applied and vectors published (raises if the worker exited)."""
    if worker.exit_status() is not None:
        raise AssertionError(f"the worker exited {worker.exit_status()}")
    if not serves_metrics(metrics):
        return False
    samples = scrape_metrics(metrics)
    applied = total(samples, "streamgnn_events_applied_total")
    return applied >= EVENTS and total(samples, "streamgnn_freshness_seconds_count") > 0


def test_produce_without_write_on_its_topic_ends_in_one_line(
    acl_cluster: SecuredCluster, tmp_path: Path
) -> None:
    topic = f"interactions-{uuid.uuid4().hex[:10]}"
    acl_cluster.broker.create_topics({topic: 1})
    _grant(acl_cluster, acl_cluster.username, [("Topic", topic, "literal", ["READ"])], {})
    text = _refused_command(
        acl_cluster,
        ["produce", "--count", "20", "--rate", "0"],
        {"STREAMGNN_INTERACTIONS_TOPIC": topic, "STREAMGNN_PRODUCE_NO_PROGRESS": "true"},
        tmp_path / "produce.log",
    )
    assert f"user '{acl_cluster.username}' is not authorized to write to '{topic}'" in text


def test_consume_without_read_on_the_embedding_topics_ends_in_one_line(
    acl_cluster: SecuredCluster, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:10]
    users, items = f"users-{tag}", f"items-{tag}"
    acl_cluster.broker.create_topics({users: 1, items: 1})
    may_describe = [("Topic", name, "literal", ["DESCRIBE"]) for name in (users, items)]
    _grant(acl_cluster, acl_cluster.username, may_describe, {})
    text = _refused_command(
        acl_cluster,
        ["consume", "--from-beginning"],
        {"STREAMGNN_USER_EMBEDDINGS_TOPIC": users, "STREAMGNN_ITEM_EMBEDDINGS_TOPIC": items},
        tmp_path / "consume.log",
    )
    assert f"user '{acl_cluster.username}' is not authorized to read the embedding topics" in text


def _refused_command(
    cluster: SecuredCluster, args: list[str], twins: dict[str, str], log: Path
) -> str:
    """Run ``streamgnn ARGS`` logged in as the cluster's user; it must end by itself with
    exit 2 and no traceback. Returns its output."""
    command = WorkerProcess(
        cluster.env() | twins, log, command=[sys.executable, "-m", "stream.cli", *args]
    )
    command.start()
    wait_for(lambda: command.exit_status() is not None, _WAIT_S, f"{args[0]} to stop")
    text = log.read_text(errors="replace")
    assert command.exit_status() == 2, text[-3000:]
    assert "Traceback" not in text
    return text
