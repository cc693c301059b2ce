"""``streamgnn consume`` against the real broker: follow as JSON lines or a table, top-k."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaProducer
from kafka.admin import NewTopic

from stream.cli import main
from stream.local_broker.broker import LocalKafkaBroker
from stream.publish.consumer import EmbeddingTable
from stream.publish.publisher import EmbeddingPublisher, NodeVectors
from stream.publish.schema import EmbeddingRecord, encode_record
from stream.settings import KafkaSettings, PublishSettings
from tests.harness.embedding_topics import delete_topic, unique_settings
from tests.harness.worker_process import wait_for

pytestmark = pytest.mark.integration

DIM = 6


@pytest.fixture
def published(
    kafka_broker: LocalKafkaBroker, tmp_path: Path
) -> tuple[PublishSettings, np.ndarray, np.ndarray]:
    """Users u0..u4 and items i0..i29 at version 2, then one stale (version 1) item record."""
    settings = unique_settings(tmp_path)
    rng = np.random.default_rng(3)
    users = rng.normal(size=(5, DIM)).astype(np.float32)
    items = rng.normal(size=(30, DIM)).astype(np.float32)
    with EmbeddingPublisher(KafkaSettings(kafka_broker.bootstrap_servers), settings) as publisher:
        publisher.publish(
            [
                NodeVectors("user", [f"u{i}" for i in range(5)], users, 10),
                NodeVectors("item", [f"i{i}" for i in range(30)], items, 10),
            ],
            model_version=2,
        )
    stale = EmbeddingRecord("item", "i0", 1, np.full(DIM, 100.0, np.float32), 1, 1)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers, acks="all")
    producer.send(settings.item_topic, key=b"i0", value=encode_record(stale))
    producer.flush()
    producer.close()
    return settings, users, items


def _topics(settings: PublishSettings) -> list[str]:
    return [
        "--user-embeddings-topic",
        settings.user_topic,
        "--item-embeddings-topic",
        settings.item_topic,
    ]


def test_top_k_for_a_user_matches_a_full_sort(
    kafka_broker: LocalKafkaBroker,
    published: tuple[PublishSettings, np.ndarray, np.ndarray],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings, users, items = published
    monkeypatch.setenv("STREAMGNN_BOOTSTRAP_SERVERS", kafka_broker.bootstrap_servers)
    assert main(["consume", *_topics(settings), "--user", "u3", "--k", "7", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    scores = items @ users[3]  # the stale record for i0 must not count
    expected = [f"i{j}" for j in np.argsort(-scores, kind="stable")[:7]]
    assert [line["item"] for line in lines] == expected
    assert [line["rank"] for line in lines] == list(range(1, 8))
    assert all(line["user"] == "u3" for line in lines)
    assert np.allclose([line["score"] for line in lines], np.sort(scores)[::-1][:7], rtol=1e-5)


def test_an_unknown_user_exits_1(
    kafka_broker: LocalKafkaBroker,
    published: tuple[PublishSettings, np.ndarray, np.ndarray],
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings, _, _ = published
    args = ["consume", "--bootstrap-servers", kafka_broker.bootstrap_servers, *_topics(settings)]
    assert main([*args, "--user", "nobody"]) == 1
    assert "nobody" in capsys.readouterr().err


def test_following_from_the_beginning_prints_each_held_update_once(
    kafka_broker: LocalKafkaBroker,
    published: tuple[PublishSettings, np.ndarray, np.ndarray],
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings, users, items = published
    args = ["consume", "--bootstrap-servers", kafka_broker.bootstrap_servers, *_topics(settings)]
    assert main([*args, "--from-beginning", "--json", "--max-seconds", "4"]) == 0
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert len(lines) == len(users) + len(items)  # the stale record is not an update
    assert {(line["kind"], line["id"]) for line in lines} == {
        *(("user", f"u{i}") for i in range(5)),
        *(("item", f"i{i}") for i in range(30)),
    }
    by_id = {line["id"]: line for line in lines}
    assert np.array_equal(np.array(by_id["i7"]["vector"], np.float32), items[7])
    assert all(line["model_version"] == 2 and line["dim"] == DIM for line in lines)
    assert "stale ignored 1" in captured.err

    assert main([*args, "--from-beginning", "--max-seconds", "3"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["kind", "id", "version"]
    assert len(table) == 1 + len(users) + len(items)


def test_a_missing_topic_is_a_clear_error(
    kafka_broker: LocalKafkaBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["consume", "--bootstrap-servers", kafka_broker.bootstrap_servers]
    code = main([*args, "--user-embeddings-topic", "no-such-topic-x", "--max-seconds", "1"])
    assert code == 2
    assert "no-such-topic-x" in capsys.readouterr().err


def test_a_table_following_a_topic_created_again_reads_it_from_its_beginning(
    kafka_broker: LocalKafkaBroker,
    published: tuple[PublishSettings, np.ndarray, np.ndarray],
) -> None:
    """The new log is shorter than the table's position: the table reads it from offset 0
    (the client alone moves to the new log's end, missing what the new topic was given)."""
    settings, users, _ = published
    bootstrap = kafka_broker.bootstrap_servers
    with EmbeddingTable(
        KafkaSettings(bootstrap), settings.user_topic, settings.item_topic
    ) as table:

        def held(node_id: str) -> EmbeddingRecord:
            record = table.users.get(node_id)
            assert record is not None, node_id
            return record

        table.catch_up()
        assert {u: held(u).model_version for u in table.users} == {f"u{i}": 2 for i in range(5)}
        compacted = {"cleanup.policy": "compact"}
        delete_topic(
            bootstrap,
            settings.user_topic,
            create_again=NewTopic(settings.user_topic, 1, 1, topic_configs=compacted),
        )
        given = {f"u{i}": EmbeddingRecord("user", f"u{i}", 3, users[i] * 2, 11, 11) for i in (0, 1)}
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        for record in given.values():
            producer.send(settings.user_topic, key=record.key, value=encode_record(record))
        producer.flush()
        producer.close()

        def caught_up() -> bool:
            table.poll(timeout_ms=200)
            return all(held(u).model_version == 3 for u in given)

        wait_for(caught_up, 60, "the new topic's records in the table")
        for node_id, record in given.items():
            assert np.array_equal(held(node_id).vector, record.vector)
        assert {u: held(u).model_version for u in table.users} == {
            f"u{i}": 3 if i < 2 else 2 for i in range(5)
        }  # the others kept as they were
