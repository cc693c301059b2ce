"""The store's key layout: an edge's reverse key built from its parts equals the one read
back from its suffix, for any ids (any bytes, NUL included) and relation."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stream.state import keys as k

ids = st.text(min_size=1, max_size=20)


@given(src=ids, dst=ids, relation=st.integers(0, 255), dst_kind=st.sampled_from([k.USER, k.ITEM]))
def test_reverse_of_an_edge_equals_its_suffix_reversed(src, dst, relation, dst_kind) -> None:
    a, b = k.node_key(k.USER, src), k.node_key(dst_kind, dst)
    suffix = k.edge_suffix(a, relation, b)
    assert k.reverse_of(a, relation, b) == k.reverse_suffix(suffix)
    assert k.split_edge_suffix(k.reverse_of(a, relation, b)) == (
        (dst_kind, dst),
        relation,
        (k.USER, src),
    )
