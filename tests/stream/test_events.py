"""The event contract: hostile bytes become a Rejection with a known reason, never an error."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from stream.events import REJECTION_REASONS, EventValidator, Interaction, Rejection
from stream.settings import EventSettings

VALIDATOR = EventValidator(EventSettings())

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10,
)
fields = st.fixed_dictionaries(
    {},
    optional={
        "user_id": json_values,
        "item_id": json_values,
        "event_type": st.sampled_from(["click", "purchase", "nope", ""]) | json_values,
        "ts": st.integers(-(10**20), 10**20) | json_values,
        "weight": st.floats(allow_nan=True, allow_infinity=True) | json_values,
        "event_id": json_values,
    },
)


@settings(max_examples=10_000, deadline=None)
@given(
    key=st.none() | st.binary(max_size=300),
    value=st.none()
    | st.binary(max_size=300)
    | fields.map(lambda d: json.dumps(d, allow_nan=True).encode()),
)
def test_any_bytes_give_an_interaction_or_a_known_rejection(key, value) -> None:
    result = VALIDATOR.parse(key, value)
    if isinstance(result, Rejection):
        assert result.reason in REJECTION_REASONS
        assert result.detail
    else:
        assert isinstance(result, Interaction)
        assert key == result.user_id.encode()
        assert 1 <= len(result.item_id.encode()) <= 256
        assert result.weight >= 0 and result.weight == result.weight


def test_hostile_examples_are_rejected_for_the_right_reason() -> None:
    ok = {"user_id": "u", "item_id": "i", "event_type": "click", "ts": 1_700_000_000_000}
    cases = {
        "bad_json": b'{"a": NaN}',
        "not_object": b"[1]",
        "missing_field": b'{"user_id": "u"}',
        "bad_id": json.dumps({**ok, "item_id": ""}).encode(),
        "bad_timestamp": json.dumps({**ok, "ts": -1}).encode(),
        "bad_weight": json.dumps(ok).encode()[:-1] + b', "weight": 1e400}',
        "unknown_event_type": json.dumps({**ok, "event_type": "teleport"}).encode(),
        "bad_encoding": b'{"user_id": "\xff"}',
        "too_large": b"x" * 70_000,
    }
    for reason, value in cases.items():
        result = VALIDATOR.parse(b"u", value)
        assert isinstance(result, Rejection) and result.reason == reason, (reason, result)
    deep = b"[" * 100_000 + b"]" * 100_000
    assert VALIDATOR.parse(b"u", deep[:60_000]).reason == "bad_json"  # type: ignore[union-attr]
    lone = b'{"user_id": "\\ud800", "item_id": "i", "event_type": "click", "ts": 1}'
    assert VALIDATOR.parse(b"u", lone).reason == "bad_id"  # type: ignore[union-attr]
    assert VALIDATOR.parse(None, json.dumps(ok).encode()).reason == "null_key"  # type: ignore[union-attr]
