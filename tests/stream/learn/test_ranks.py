"""Trainers as ranks of one gloo job (two processes on 127.0.0.1): identical parameters
after every step, each key published by one rank, one version sequence per key."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from threading import Event
from typing import Any

import pytest

from stream.learn.ranks import Ranks
from stream.metrics import PipelineMetrics
from stream.settings import Settings
from stream.train import ChangelogTraining
from stream.train_ranks import began_again
from tests.harness.rank_job import run_job, train_stream

# Full-step cap off, several steps per call, small chunks: calls whose last chunk holds a
# single positive (rank 1's share empty) happen in every scope.
BASE: dict[str, Any] = {
    "dim": 8,
    "device": "cpu",
    "batch_size": 8,
    "steps_per_batch": 2,
    "max_steps_per_batch": 0,
    "num_negatives": 2,
    "fanout": 4,
    # a sweep of a few rows: sweeping every row (the default 1,024 > these 960) would draw
    # trees larger than the graph, and a local call would re-embed every row instead
    "sweep_rows": 16,
}


def stream_batches(seed: int) -> list[list[list[Any]]]:
    """Batches of ``(user, item, type, ts)`` over 60 clusters of 8 users and 8 items (so
    a local step's neighbourhood is a small part of the graph): the first holds one event
    (one positive, no replay yet: rank 1 has nothing to train on), one is empty, one
    builds most of the graph, the rest are small."""
    rng = random.Random(seed)
    ts = 1_000_000
    out = []
    for size in (1, 7, 0, 400, 2, 13, 1, 9, 4):
        rows = []
        for _ in range(size):
            ts += 1_000
            user = rng.randrange(480)
            item = (user // 8) * 8 + rng.randrange(8)
            kind = "purchase" if rng.random() < 0.2 else "click"
            rows.append([f"u{user}", f"i{item}", kind, ts])
        out.append(rows)
    return out


@pytest.mark.parametrize("scope", ["full", "local"])
def test_two_ranks_hold_one_model_and_split_the_keys(scope: str) -> None:
    # No drift reports: what is published follows the stream alone (touched or never
    # reported rows), so it is comparable with a single process's, whose numbers differ.
    settings = {**BASE, "step_scope": scope, "publish_threshold": 1e9}
    batches = stream_batches(1)
    ranks = run_job(2, train_stream, [settings, batches])
    alone = train_stream(None, settings, batches, check_every_step=False)

    steps = list(zip(ranks[0]["steps"], ranks[1]["steps"], alone["steps"], strict=True))
    assert any(solo["steps"] > 0 for _, _, solo in steps)
    if scope == "local":  # some calls re-embedded only what moved, on every rank alike
        partial = [a["reembedded"] for a, _, _ in steps if None not in a["reembedded"].values()]
        assert partial
    for a, b, _ in steps:
        assert a["reembedded"] == b["reembedded"]
    published: dict[tuple[str, str], list[int]] = {}
    for a, b, solo in steps:
        assert a["params"] == b["params"]
        assert a["vectors"] == b["vectors"]
        assert a["version"] == b["version"] == solo["version"]
        assert a["steps"] == b["steps"] == solo["steps"]
        for kind in ("user", "item"):
            mine, theirs = set(a["published"][kind]), set(b["published"][kind])
            assert not mine & theirs
            assert mine | theirs == set(solo["published"][kind])
            for rank, keys in enumerate((mine, theirs)):
                assert all(Ranks(rank, 2).owner(key) == rank for key in keys)
            for key in mine | theirs:
                published.setdefault((kind, key), []).append(a["version"])
    assert published
    for versions in published.values():
        assert versions == sorted(set(versions))  # one increasing sequence per key


def test_two_ranks_with_default_publishing_publish_disjoint_keys() -> None:
    """With drift reports on, both ranks still agree on every vector, so the keys each
    publishes are exactly its share of the set both select."""
    settings = {**BASE, "step_scope": "local"}
    ranks = run_job(2, train_stream, [settings, stream_batches(2)])
    for a, b in zip(ranks[0]["steps"], ranks[1]["steps"], strict=True):
        assert a["params"] == b["params"] and a["vectors"] == b["vectors"]
        for kind in ("user", "item"):
            assert not set(a["published"][kind]) & set(b["published"][kind])


def test_ranks_with_different_seeds_fail_at_start() -> None:
    with pytest.raises(RuntimeError) as failed:
        run_job(2, _seeded_by_rank, [BASE])
    message = str(failed.value)
    for rank in (0, 1):  # both refuse, saying why
        assert f"rank {rank} of 2: the ranks' settings or parameters differ" in message


def _seeded_by_rank(ranks: Ranks, settings: dict[str, Any]) -> dict[str, Any]:
    return train_stream(ranks, {**settings, "seed": 7 + ranks.rank}, [])


RECORDS = [
    (0, 5, b"e\x00k1", b"\x01\x02"),
    (3, 9, b"k2", None),
    (0, 6, b"k3", b""),
    (1, 0, b"", b"v"),
]


def test_every_rank_gets_rank_0s_records_bytes_and_tombstones_intact() -> None:
    received = run_job(2, _broadcast, [])
    sent = [[list(map(_hex, r)) for r in RECORDS], []]
    assert received[0] == received[1] == sent


def _hex(field: object) -> object:
    return field.hex() if isinstance(field, bytes) else field


def _broadcast(ranks: Ranks) -> list[list[list[object]]]:
    batches = [RECORDS, []] if ranks.rank == 0 else [None, None]
    return [[list(map(_hex, r)) for r in ranks.broadcast_records(b)] for b in batches]


def test_every_rank_gets_rank_0s_text() -> None:
    received = run_job(2, _texts, [])
    assert received[0] == received[1] == ["changelog id é", None, ""]


def _texts(ranks: Ranks) -> list[str | None]:
    sent = ["changelog id é", None, ""] if ranks.rank == 0 else ["other", "other", None]
    return [ranks.broadcast_text(text) for text in sent]


def test_every_ranks_training_hears_that_rank_0s_changelog_began_again(tmp_path: Path) -> None:
    """Under torchrun only rank 0 follows the changelog: when it is made again, every rank
    must train on all of its new log (it kept the old log's offsets before, so records
    below them were folded and never trained on)."""
    received = run_job(2, _began_again, [str(tmp_path)])
    assert (
        received[0]
        == received[1]
        == {
            "source_topic_id": "id-2",
            "trained_through": {"0": 0, "1": 7},
            "fold_only": {"1": 7},
        }
    )


def _began_again(ranks: Ranks, folder: str) -> dict[str, Any]:
    settings = Settings()
    worker = replace(settings.worker, checkpoint_dir=Path(folder) / f"rank-{ranks.rank}")
    training = ChangelogTraining(replace(settings, worker=worker), PipelineMetrics(), Event())
    training.trained_through, training._fold_only = {0: 5, 1: 7}, {0: 5, 1: 7}
    told = ([0], "id-2") if ranks.rank == 0 else ([], None)
    began_again(ranks, training, *told)
    return {
        "source_topic_id": training.source_topic_id,
        "trained_through": {str(p): o for p, o in training.trained_through.items()},
        "fold_only": {str(p): o for p, o in training._fold_only.items()},
    }
