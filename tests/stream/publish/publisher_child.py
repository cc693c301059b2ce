"""A trainer's publishing half, run as its own process so a test can SIGKILL it.

    python publisher_child.py BOOTSTRAP USER_TOPIC ITEM_TOPIC LEDGER KEYS DIM

Publishes every key at model versions 1, 2 and 3 (one publish each), then version 4 in
chunks of 10 keys, printing ``acked V CHUNK`` after each acknowledged publish. Version 4
never finishes on purpose: after its last chunk the process waits to be killed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from stream.publish.publisher import EmbeddingPublisher, NodeVectors
from stream.settings import KafkaSettings, PublishSettings

KINDS = ("user", "item")
CHUNK = 10


def vector(kind: str, key: int, version: int, dim: int) -> np.ndarray:
    """The vector of one key at one model version: the same in every process."""
    seed = [KINDS.index(kind), key, version]
    return np.random.default_rng(seed).normal(size=dim).astype(np.float32)


def node_id(kind: str, key: int) -> str:
    return f"{kind[0]}{key}"


def batch(kind: str, keys: range, version: int, dim: int) -> NodeVectors:
    ids = [node_id(kind, k) for k in keys]
    vectors = np.stack([vector(kind, k, version, dim) for k in keys])
    return NodeVectors(kind, ids, vectors, event_time_ms=1_000 * version)  # type: ignore[arg-type]


def main(argv: list[str]) -> None:
    bootstrap, user_topic, item_topic, ledger, keys_text, dim_text = argv
    keys, dim = int(keys_text), int(dim_text)
    settings = PublishSettings(
        user_topic=user_topic,
        item_topic=item_topic,
        ledger_path=Path(ledger),
        topic_partitions=3,
    )
    with EmbeddingPublisher(KafkaSettings(bootstrap), settings) as publisher:
        for version in (1, 2, 3):
            batches = [batch(kind, range(keys), version, dim) for kind in KINDS]
            publisher.publish(batches, model_version=version)
            print(f"acked {version} 0", flush=True)
        chunk = 0
        for kind in KINDS:
            for start in range(0, keys, CHUNK):
                span = range(start, min(start + CHUNK, keys))
                publisher.publish([batch(kind, span, 4, dim)], model_version=4)
                print(f"acked 4 {chunk} {kind} {start} {span.stop}", flush=True)
                chunk += 1
        time.sleep(3600)  # never finish version 4 cleanly: the test kills us


if __name__ == "__main__":
    main(sys.argv[1:])
