"""The engine comparison's counting: what it folds must be what each event got."""

from __future__ import annotations

import json
import random

from bench.engines import fold_counters
from tests.harness.faults import BASE_TS, event, event_seq


def test_every_event_edge_maps_back_to_its_event() -> None:
    for seq in random.Random(0).sample(range(997 * 1009), 2_000):
        body = json.loads(event(seq)[1])
        assert event_seq(body["user_id"], body["item_id"]) == seq


def test_folded_counters_count_each_event_once_per_application() -> None:
    rng = random.Random(1)
    truth = {seq: rng.randint(1, 3) for seq in rng.sample(range(10_000), 300)}
    latest: dict[bytes, bytes | None] = {
        # Quix's key: the message key, a separator, the JSON state key
        f'u{seq % 997}|"{BASE_TS + seq}"'.encode(): str(n).encode()
        for seq, n in truth.items()
    }
    latest[b'"%d"' % (BASE_TS + 10_001)] = None  # a tombstone applies nothing
    latest[b"__consumer_offset__"] = b"7"  # engine bookkeeping, not an event
    assert fold_counters(latest) == truth
