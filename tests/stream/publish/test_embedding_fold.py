"""The consumer-side fold (latest vector per id, stale versions ignored) and exact top-k."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.publish.consumer import LatestVectors, top_k
from stream.publish.schema import EmbeddingRecord, encode_record


def _value(node_id: str, version: int, x: float, dim: int = 3) -> bytes:
    vector = np.full(dim, x, np.float32)
    return encode_record(EmbeddingRecord("item", node_id, version, vector, version, version))


log_entries = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.integers(0, 6), st.booleans()),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(log_entries)
def test_fold_keeps_the_newest_version_per_key_latest_wins_on_ties(
    entries: list[tuple[str, int, bool]],
) -> None:
    fold = LatestVectors("item")
    expected: dict[str, tuple[int, float]] = {}
    stale = deleted = 0
    for seq, (node_id, version, tombstone) in enumerate(entries):
        if tombstone:
            outcome = fold.apply(node_id.encode(), None)
            if node_id in expected:
                del expected[node_id]
                deleted += 1
                assert outcome == "deleted"
            else:
                assert outcome == "ignored"
            continue
        outcome = fold.apply(node_id.encode(), _value(node_id, version, float(seq)))
        held = expected.get(node_id)
        if held is not None and version < held[0]:
            stale += 1
            assert outcome == "stale"
        else:
            expected[node_id] = (version, float(seq))
            assert outcome == "applied"
    assert set(fold) == set(expected)
    for node_id, (version, x) in expected.items():
        record = fold.get(node_id)
        assert record is not None
        assert record.model_version == version
        assert record.vector.tolist() == [x] * 3
    assert (fold.stats.stale, fold.stats.deleted) == (stale, deleted)
    ids, matrix = fold.matrix()
    assert matrix.shape == (len(expected), 3) or not expected
    for i, node_id in enumerate(ids):  # rows stay dense and aligned after deletions
        assert matrix[i, 0] == expected[node_id][1]


def test_invalid_values_and_key_mismatches_are_counted_not_applied() -> None:
    fold = LatestVectors("item")
    assert fold.apply(b"a", b"{not json") == "invalid"
    assert fold.apply(b"b", _value("a", 1, 1.0)) == "invalid"  # key disagrees with id
    user = EmbeddingRecord("user", "a", 1, np.ones(3, np.float32), 0, 0)
    assert fold.apply(b"a", encode_record(user)) == "invalid"  # wrong topic
    assert fold.apply(b"a", _value("a", 1, 1.0)) == "applied"
    assert fold.apply(b"c", _value("c", 2, 1.0, dim=4)) == "invalid"  # another dimension
    assert fold.stats.invalid == 4
    assert len(fold) == 1


def test_matrix_is_a_read_only_view() -> None:
    fold = LatestVectors("item")
    fold.apply(b"a", _value("a", 1, 1.0))
    _, matrix = fold.matrix()
    with pytest.raises(ValueError):
        matrix[0, 0] = 5.0


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 40),
    st.integers(1, 50),
    st.integers(0, 2**31),
    st.booleans(),
)
def test_top_k_equals_a_full_sort(n: int, k: int, seed: int, ties: bool) -> None:
    rng = np.random.default_rng(seed)
    matrix = rng.normal(size=(n, 4)).astype(np.float32)
    if ties:
        matrix = np.round(matrix).astype(np.float32)  # many equal scores
    query = rng.normal(size=4).astype(np.float32)
    ids = [f"i{j:03d}" for j in rng.permutation(n)]
    scores = matrix @ query
    expected = sorted(zip(ids, scores.tolist(), strict=True), key=lambda p: (-p[1], p[0]))
    got = top_k(query, ids, matrix, k)
    assert [i for i, _ in got] == [i for i, _ in expected[: min(k, n)]]
    assert np.allclose([s for _, s in got], [s for _, s in expected[: min(k, n)]])


def test_top_k_refuses_k_below_one() -> None:
    with pytest.raises(ValueError, match="k must be"):
        top_k(np.ones(2, np.float32), ["a"], np.ones((1, 2), np.float32), 0)
