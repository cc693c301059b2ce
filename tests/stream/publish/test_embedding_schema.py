"""The embedding wire format: golden bytes, the JSON Schema, and exact float32 round trips.

The golden files are the contract with rankers in other languages. A change of what the
bytes mean (a field, a type, an encoding) is a wire-format change and needs a new
``schema_version`` and a new schema file, never an edit of the files to make this test
pass. A change of how a number is spelt that decodes to the same values is an encoder
change: the files are then rewritten deliberately, and the previous ones move to
``golden/earlier/`` where they must still decode to the same records (consumers read
both). The one so far: the shortest float32 decimals as orjson writes them (``1e-8``)
replaced Python's spelling of the same decimals (``1e-08``).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from stream.errors import SchemaError
from stream.publish.consumer import LatestVectors
from stream.publish.schema import (
    ENCODINGS,
    EmbeddingRecord,
    Encoding,
    decode_record,
    encode_record,
    encode_records,
)

ROOT = Path(__file__).resolve().parents[3]
SCHEMA = json.loads((ROOT / "schema" / "embedding.v1.schema.json").read_text())
GOLDEN = Path(__file__).resolve().parent / "golden"
GOLDEN_FILES = sorted(GOLDEN.glob("*.json"))
EARLIER_FILES = sorted((GOLDEN / "earlier").glob("*.json"))

# The record every golden file encodes: awkward values on purpose (a tenth, a subnormal-ish
# small value, float32 max, a negative zero, a non-ASCII id, quotes that need escaping).
GOLDEN_VECTOR = np.array([0.1, -1.5, 1e-8, 1 / 3, 3.4028235e38, -0.0, 0.625, 123456.78], np.float32)
GOLDEN_IDS = {"user": "user-42 ✓", "item": 'item/"quoted"'}


def _validator() -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(SCHEMA)
    cls.check_schema(SCHEMA)
    return cls(SCHEMA, format_checker=cls.FORMAT_CHECKER)


VALIDATOR = _validator()


def _golden_record(kind: str) -> EmbeddingRecord:
    return EmbeddingRecord(
        kind, GOLDEN_IDS[kind], 7, GOLDEN_VECTOR, 1_700_000_000_000, 1_700_000_000_250
    )  # type: ignore[arg-type]


def test_schema_is_draft_2020_12_and_its_examples_validate_and_decode() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert SCHEMA["examples"]
    for example in SCHEMA["examples"]:
        VALIDATOR.validate(example)
        record = decode_record(json.dumps(example).encode())
        assert record.dim == example["dim"]


def test_every_kind_and_encoding_has_a_golden_file() -> None:
    names = {p.name for p in GOLDEN_FILES}
    assert names == {f"{kind}.{enc}.json" for kind in GOLDEN_IDS for enc in ENCODINGS}


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda p: p.name)
def test_encoding_the_fixed_record_gives_the_golden_bytes(path: Path) -> None:
    kind, encoding, _ = path.name.split(".")
    assert encode_record(_golden_record(kind), encoding) == path.read_bytes()  # type: ignore[arg-type]


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda p: p.name)
def test_every_golden_validates_against_the_json_schema(path: Path) -> None:
    VALIDATOR.validate(json.loads(path.read_bytes()))


@pytest.mark.parametrize("kind", sorted(GOLDEN_IDS))
def test_both_encodings_decode_to_the_same_float32_vector(kind: str) -> None:
    decoded = [decode_record((GOLDEN / f"{kind}.{enc}.json").read_bytes()) for enc in ENCODINGS]
    for record in decoded:
        assert record.vector.dtype == np.float32
        assert record.vector.tobytes() == GOLDEN_VECTOR.tobytes()  # bit for bit, -0.0 too
        assert (record.kind, record.id, record.model_version) == (kind, GOLDEN_IDS[kind], 7)


def test_a_decoder_without_our_code_reads_the_base64_golden() -> None:
    # What a Java or Go ranker does: base64, then little-endian float32.
    obj = json.loads((GOLDEN / "item.f32le-base64.json").read_bytes())
    raw = base64.b64decode(obj["vector_b64"])
    assert len(raw) == 4 * obj["dim"]
    assert np.frombuffer(raw, "<f4").tobytes() == GOLDEN_VECTOR.astype("<f4").tobytes()


finite_f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(
    vector=arrays(np.float32, st.integers(1, 40), elements=finite_f32),
    encoding=st.sampled_from(ENCODINGS),
    node_id=st.text(min_size=1, max_size=40),
    version=st.integers(0, 2**53),
)
def test_encode_decode_is_exact_and_schema_valid(
    vector: np.ndarray, encoding: Encoding, node_id: str, version: int
) -> None:
    record = EmbeddingRecord("user", node_id, version, vector, 5, 6)
    value = encode_record(record, encoding)
    VALIDATOR.validate(json.loads(value))
    back = decode_record(value, kind="user")
    assert back.vector.tobytes() == vector.astype(np.float32).tobytes()
    assert (back.id, back.model_version, back.dim) == (node_id, version, vector.size)
    assert encode_record(back, encoding) == value  # decode . encode is the identity


def _float32_via_float64(value: bytes) -> np.ndarray:
    """What a JSON parser then a cast do: each decimal to a float64, then to a float32."""
    return np.array(json.loads(value)["vector"], np.float64).astype(np.float32)


# Float32 values whose shortest decimal, parsed as a float64 then rounded, is another
# float32 (found by ``python -m bench.encoding --exhaustive``): the encoder respells them.
DOUBLE_ROUNDING = [0x15AE43FD]


def _awkward_float32() -> np.ndarray:
    """Values where a decimal spelling could go wrong: the ends of every binade (normal and
    subnormal), their neighbours, powers of ten, integers past 2**24, and the values whose
    shortest decimal does not survive a float64 parse."""
    bits = np.arange(0, 0x7F800000, 0x800000, dtype=np.uint32)  # each binade's first value
    hard = np.array(DOUBLE_ROUNDING, np.uint32)
    near = np.concatenate([bits, bits + 1, bits - 1, bits + 0x7FFFFF, np.arange(1, 4096), hard])
    values = near[(near > 0) & (near < 0x7F800000)].astype(np.uint32).view(np.float32)
    decades = np.array([10.0**k for k in range(-45, 39)], np.float64).astype(np.float32)
    integers = np.arange(2**24 - 8, 2**24 + 64, dtype=np.float32)
    every = np.concatenate([values, decades[np.isfinite(decades)], integers])
    return np.concatenate([every, -every])


def test_awkward_float32_values_survive_the_text_round_trip_bit_for_bit() -> None:
    vector = _awkward_float32()
    value = encode_records("item", ["i"], 1, vector[np.newaxis, :], [0], 0)[0]
    assert _float32_via_float64(value).tobytes() == vector.tobytes()
    assert decode_record(value).vector.tobytes() == vector.tobytes()


@settings(max_examples=300, deadline=None)
@given(arrays(np.uint32, st.integers(1, 64)))
def test_any_float32_bit_pattern_survives_the_text_round_trip(bits: np.ndarray) -> None:
    vector = bits.view(np.float32)
    vector = vector[np.isfinite(vector)]
    if not vector.size:
        return
    value = encode_records("user", ["u"], 1, vector[np.newaxis, :], [0], 0)[0]
    assert _float32_via_float64(value).tobytes() == vector.tobytes()
    # Never longer than the nine significant digits float32 needs.
    for text in value.split(b"[")[1].split(b"]")[0].split(b","):
        digits = text.lstrip(b"-").split(b"e")[0].replace(b".", b"").strip(b"0")
        assert len(digits) <= 9, text


@settings(max_examples=100, deadline=None)
@given(
    matrix=st.integers(0, 6).flatmap(
        lambda rows: arrays(np.float32, (rows, 5), elements=finite_f32)
    ),
    encoding=st.sampled_from(ENCODINGS),
)
def test_a_batch_encodes_to_the_bytes_of_its_records_one_by_one(
    matrix: np.ndarray, encoding: Encoding
) -> None:
    ids = [f"n{i}" for i in range(len(matrix))]
    times = list(range(len(matrix)))
    batch = encode_records("item", ids, 3, matrix, times, 99, encoding)
    one_by_one = [
        encode_record(EmbeddingRecord("item", ids[i], 3, matrix[i], times[i], 99), encoding)
        for i in range(len(matrix))
    ]
    assert batch == one_by_one


@pytest.mark.parametrize(
    ("change", "what"),
    [
        ({"vectors": [[1.0, np.nan]]}, "non-finite"),
        ({"vectors": [[1.0, 2.0], [3.0, 4.0]]}, "shape"),
        ({"vectors": [[1.0], [2.0, 3.0]]}, "matrix"),
        ({"ids": [""]}, "id must be"),
        ({"event_times_ms": [-1]}, "event_time_ms"),
        ({"event_times_ms": [1.5]}, "event_time_ms"),
        ({"model_version": -1}, "model_version"),
        ({"kind": "shop"}, "kind"),
        ({"encoding": "f16"}, "encoding"),
    ],
)
def test_a_batch_that_breaks_the_schema_is_refused_whole(change: dict[str, Any], what: str) -> None:
    args: dict[str, Any] = {
        "kind": "user",
        "ids": ["u1"],
        "model_version": 1,
        "vectors": [[1.0, 2.0]],
        "event_times_ms": [5],
        "publish_time_ms": 6,
        "encoding": "json",
    }
    with pytest.raises(SchemaError, match=what):
        encode_records(**{**args, **change})


@pytest.mark.parametrize("path", EARLIER_FILES, ids=lambda p: p.name)
def test_bytes_of_the_earlier_encoder_still_decode_to_the_same_record(path: Path) -> None:
    kind, encoding, _ = path.name.split(".")
    earlier = decode_record(path.read_bytes(), kind=kind)  # type: ignore[arg-type]
    assert earlier.vector.tobytes() == GOLDEN_VECTOR.tobytes()
    assert encode_record(earlier, encoding) == (GOLDEN / path.name).read_bytes()  # type: ignore[arg-type]
    VALIDATOR.validate(json.loads(path.read_bytes()))
    table = LatestVectors(kind)  # type: ignore[arg-type]  # what `streamgnn consume` folds
    key = GOLDEN_IDS[kind].encode()
    assert table.apply(key, path.read_bytes()) == "applied"
    assert table.apply(key, (GOLDEN / path.name).read_bytes()) == "applied"


def test_earlier_golden_files_are_kept() -> None:
    assert {p.name for p in EARLIER_FILES} == {f"{kind}.json.json" for kind in GOLDEN_IDS}


def _golden_obj() -> dict[str, Any]:
    obj: dict[str, Any] = json.loads((GOLDEN / "user.json.json").read_bytes())
    return obj


BROKEN: list[tuple[str, dict[str, Any]]] = [
    ("schema_version 2", {"schema_version": 2}),
    ("schema_version true", {"schema_version": True}),
    ("unknown field", {"extra": 1}),
    ("bad kind", {"kind": "shop"}),
    ("empty id", {"id": ""}),
    ("numeric id", {"id": 42}),
    ("negative version", {"model_version": -1}),
    ("float version", {"model_version": 1.5}),
    ("dim mismatch", {"dim": 9}),
    ("zero dim", {"dim": 0}),
    ("string in vector", {"vector": ["0.1"] * 8}),
    ("bool in vector", {"vector": [True] * 8}),
    ("missing vector", {"vector": None}),
    ("both vector fields", {"vector_b64": "AAAAAA=="}),
    ("bad encoding", {"encoding": "f16"}),
    ("negative event time", {"event_time_ms": -5}),
    ("missing publish time", {"publish_time_ms": None}),
]


@pytest.mark.parametrize(("name", "change"), BROKEN, ids=[b[0] for b in BROKEN])
def test_decoder_and_schema_both_refuse_a_broken_record(name: str, change: dict[str, Any]) -> None:
    obj = _golden_obj()
    for key, value in change.items():
        if value is None:
            obj.pop(key)
        else:
            obj[key] = value
    with pytest.raises(SchemaError):
        decode_record(json.dumps(obj).encode())
    if name != "dim mismatch":  # dim == len(vector) is beyond what JSON Schema can say
        assert not VALIDATOR.is_valid(obj)


@pytest.mark.parametrize(
    "value",
    [b"", b"\xff\xfe", b"[1,2]", b'{"schema_version":1', b"null"],
)
def test_decoder_refuses_what_is_not_a_json_object(value: bytes) -> None:
    with pytest.raises(SchemaError):
        decode_record(value)


def test_base64_of_the_wrong_length_or_alphabet_is_refused() -> None:
    obj = json.loads((GOLDEN / "user.f32le-base64.json").read_bytes())
    for text in ("AAAA", obj["vector_b64"][:-4], "*" * 44):
        with pytest.raises(SchemaError):
            decode_record(json.dumps({**obj, "vector_b64": text}).encode())


def test_a_record_for_the_other_topic_is_refused() -> None:
    with pytest.raises(SchemaError, match="expected a item record"):
        decode_record((GOLDEN / "user.json.json").read_bytes(), kind="item")


@pytest.mark.parametrize(
    "vector", [[np.nan], [np.inf, 1.0], [], [[1.0, 2.0]]], ids=["nan", "inf", "empty", "2-D"]
)
def test_records_with_unpublishable_vectors_cannot_be_built(vector: list[Any]) -> None:
    with pytest.raises(SchemaError):
        EmbeddingRecord("item", "i1", 1, np.array(vector, np.float32), 0, 0)


def test_ids_over_256_utf8_bytes_are_refused() -> None:
    EmbeddingRecord("item", "é" * 128, 1, GOLDEN_VECTOR, 0, 0)  # exactly 256 bytes
    with pytest.raises(SchemaError):
        EmbeddingRecord("item", "é" * 128 + "x", 1, GOLDEN_VECTOR, 0, 0)


def test_a_record_holds_a_read_only_copy_of_its_vector() -> None:
    source = GOLDEN_VECTOR.copy()
    record = EmbeddingRecord("item", "i1", 1, source, 0, 0)
    source[0] = 42.0
    assert record.vector[0] == GOLDEN_VECTOR[0]
    with pytest.raises(ValueError):
        record.vector[0] = 1.0
