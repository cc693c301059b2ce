"""One module builds every Kafka client (where connection security plugs in).

No module of the product other than ``stream/kafka/clients.py`` imports a client class of
aiokafka, kafka-python or confluent-kafka, so no client can be built around it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException

from stream.errors import GroupShared, RebalanceError
from stream.kafka.clients import rebalance_callback

STREAM = Path(__file__).resolve().parents[3] / "stream"
CLIENTS = {
    "aiokafka": {"AIOKafkaConsumer", "AIOKafkaProducer", "AIOKafkaClient"},
    "kafka": {"KafkaProducer", "KafkaConsumer", "KafkaAdminClient", "KafkaClient"},
    "confluent_kafka": {"Producer", "Consumer", "AdminClient", "SerializingProducer"},
}


def client_imports(path: Path) -> set[str]:
    """Client classes the file imports to use (``if TYPE_CHECKING:`` imports name types only)."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")
        for inner in ast.walk(node)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            package = node.module.partition(".")[0]
            found |= {a.name for a in node.names} & CLIENTS.get(package, set())
        elif isinstance(node, ast.Import):
            # `import kafka` would allow kafka.KafkaProducer(...): refuse the bare import too
            found |= {a.name for a in node.names if a.name in CLIENTS}
    return found


def test_only_the_clients_module_imports_client_classes() -> None:
    builders = {
        str(path.relative_to(STREAM)): names
        for path in STREAM.rglob("*.py")
        if (names := client_imports(path))
    }
    assert builders.keys() == {"kafka/clients.py"}, builders
    assert builders["kafka/clients.py"] >= {
        "KafkaConsumer",
        "KafkaAdminClient",
        "Producer",
        "Consumer",
        "AdminClient",
    }


def test_the_check_sees_a_client_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from kafka import KafkaConsumer\n"
        "from confluent_kafka import Producer\nimport kafka\n"
    )
    assert client_imports(bad) == {"Producer", "kafka"}


def test_a_kafka_error_leaves_a_rebalance_callback_as_an_error_python_can_catch() -> None:
    """What a client call raises inside a callback would reach ``poll``'s caller as a bare
    KafkaError (see rebalance_callback); it leaves as a RebalanceError naming what was being
    done and the client's reason, whatever the exception carries; other errors pass as they
    are."""
    timed_out = KafkaException(KafkaError(KafkaError._TIMED_OUT, "committed offsets"))
    for raised, reason in (
        (timed_out, "committed offsets"),
        (KafkaException("refused"), "refused"),
    ):
        expected = pytest.raises(RebalanceError, match=f"^taking t\\[0\\]: .*{reason}")
        with expected as caught, rebalance_callback("taking t[0]"):
            raise raised
        assert caught.value.__cause__ is raised
    with pytest.raises(GroupShared), rebalance_callback("taking t[0]"):
        raise GroupShared("not alone")
