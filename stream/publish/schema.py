"""Wire format of the embedding topics, version 1 (``schema/embedding.v1.schema.json``).

One record per node: key = node id as UTF-8, value = one compact UTF-8 JSON object with
the fields in a fixed order, so the same record always encodes to the same bytes::

    {"schema_version":1,"kind":"user","id":"u42","model_version":7,"dim":4,
     "encoding":"json","vector":[0.5,-0.5,0.25,0.625],
     "event_time_ms":1700000000000,"publish_time_ms":1700000000250}

With ``encoding: "f32le-base64"`` the vector travels as ``vector_b64`` instead: base64 of
``dim`` little-endian IEEE-754 float32 values, about a third of the JSON size. Either way
the decoded vector is the same float32 array.

>>> import numpy as np
>>> record = EmbeddingRecord("item", "i7", 3, np.array([1.0, -2.0], np.float32), 10, 20)
>>> encode_record(record, "f32le-base64")
b'{"schema_version":1,"kind":"item","id":"i7","model_version":3,"dim":2,"encoding":"f32le-base64","vector_b64":"AACAPwAAAMA=","event_time_ms":10,"publish_time_ms":20}'
>>> decode_record(encode_record(record)).vector.tolist()
[1.0, -2.0]
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeGuard, get_args

import numpy as np
import numpy.typing as npt
import orjson

from stream.errors import SchemaError

SCHEMA_VERSION: Final = 1
NodeKind = Literal["user", "item"]
Encoding = Literal["json", "f32le-base64"]
NODE_KINDS: Final[tuple[NodeKind, ...]] = get_args(NodeKind)
ENCODINGS: Final[tuple[Encoding, ...]] = get_args(Encoding)
MAX_ID_BYTES: Final = 256
MAX_DIM: Final = 65_536

_FIELDS: Final = frozenset(
    {
        "schema_version",
        "kind",
        "id",
        "model_version",
        "dim",
        "encoding",
        "vector",
        "vector_b64",
        "event_time_ms",
        "publish_time_ms",
    }
)
_LE_F32: Final = np.dtype("<f4")

Vector = npt.NDArray[np.float32]


@dataclass(frozen=True, eq=False)
class EmbeddingRecord:
    """One node's vector as it travels on an embedding topic.

    Args:
        kind: ``"user"`` or ``"item"``; picks the topic.
        id: external node id (the record key), 1..256 bytes as UTF-8.
        model_version: version of the model that computed ``vector``; never decreases
            for a key.
        vector: 1-D finite values; stored as a read-only float32 copy.
        event_time_ms: event time of the newest interaction the vector reflects.
        publish_time_ms: wall-clock time the record was handed to Kafka.
    """

    kind: NodeKind
    id: str
    model_version: int
    vector: Vector
    event_time_ms: int
    publish_time_ms: int

    def __post_init__(self) -> None:
        if self.kind not in NODE_KINDS:
            raise SchemaError(f"kind must be one of {NODE_KINDS}, got {self.kind!r}")
        check_node_id(self.id)
        for name in ("model_version", "event_time_ms", "publish_time_ms"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise SchemaError(f"{name} must be an integer >= 0, got {value!r}")
        vector = np.array(self.vector, dtype=np.float32)  # a copy the caller cannot mutate
        if vector.ndim != 1 or not 1 <= vector.size <= MAX_DIM:
            raise SchemaError(
                f"vector must be 1-D with 1..{MAX_DIM} values, got shape {vector.shape}"
            )
        if not np.isfinite(vector).all():
            raise SchemaError(f"vector of {self.kind} {self.id!r} has non-finite values")
        vector.flags.writeable = False
        object.__setattr__(self, "vector", vector)

    @property
    def dim(self) -> int:
        return int(self.vector.size)

    @property
    def key(self) -> bytes:
        """The Kafka record key: the node id as UTF-8."""
        return self.id.encode()


def check_node_id(node_id: object) -> str:
    """Return ``node_id`` if it is a non-empty string of at most 256 UTF-8 bytes."""
    if not isinstance(node_id, str) or not 1 <= len(node_id.encode()) <= MAX_ID_BYTES:
        raise SchemaError(f"id must be a string of 1..{MAX_ID_BYTES} UTF-8 bytes, got {node_id!r}")
    return node_id


def encode_record(record: EmbeddingRecord, encoding: Encoding = "json") -> bytes:
    """The record's value bytes: compact JSON, fields in schema order, deterministic."""
    return encode_records(
        record.kind,
        [record.id],
        record.model_version,
        record.vector[np.newaxis, :],
        [record.event_time_ms],
        record.publish_time_ms,
        encoding,
    )[0]


def encode_records(
    kind: NodeKind,
    ids: Sequence[str],
    model_version: int,
    vectors: npt.ArrayLike,
    event_times_ms: Sequence[int] | npt.NDArray[np.int64],
    publish_time_ms: int,
    encoding: Encoding = "json",
) -> list[bytes]:
    """The value bytes of one record per row of ``vectors`` (row ``i`` is node ``ids[i]``).

    The same bytes as one :func:`encode_record` per row, built for a whole batch: the
    vectors are checked once as a matrix and written by one orjson call (its float32
    formatter: the shortest decimal that reads back as the same float32), then the rare
    decimals that a float64 parse would round to another float32 are respelt
    (:func:`_exact_via_float64`). A record that breaks the schema raises
    :class:`SchemaError`, and then none is returned.

    >>> encode_records("user", ["a", "b"], 1, [[0.1], [1e-8]], [5, 6], 9)[1]
    b'{"schema_version":1,"kind":"user","id":"b","model_version":1,"dim":1,"encoding":"json","vector":[1e-8],"event_time_ms":6,"publish_time_ms":9}'
    """
    if kind not in NODE_KINDS:
        raise SchemaError(f"kind must be one of {NODE_KINDS}, got {kind!r}")
    if encoding not in ENCODINGS:
        raise SchemaError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    for name, value in (("model_version", model_version), ("publish_time_ms", publish_time_ms)):
        if not _is_int(value) or value < 0:
            raise SchemaError(f"{name} must be an integer >= 0, got {value!r}")
    try:
        matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise SchemaError(f"vectors must be a [{len(ids)}, dim] matrix of numbers: {exc}") from exc
    if matrix.ndim != 2 or matrix.shape[0] != len(ids) or not 1 <= matrix.shape[1] <= MAX_DIM:
        raise SchemaError(f"vectors must have shape [{len(ids)}, 1..{MAX_DIM}], got {matrix.shape}")
    times = np.asarray(event_times_ms)
    integral = times.dtype.kind in "iu" or times.size == 0
    if times.shape != (len(ids),) or not integral or (times < 0).any():
        raise SchemaError(f"event_time_ms must be {len(ids)} integers >= 0, got {times!r}")
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise SchemaError(f"vector of {kind} {ids[bad]!r} has non-finite values")
    keys = [orjson.dumps(check_node_id(node_id)) for node_id in ids]
    if not keys:
        return []
    if encoding == "json":
        text = orjson.dumps(matrix, option=orjson.OPT_SERIALIZE_NUMPY)
        # "[[a,b],[c,d]]": no number holds a bracket, so "],[" splits the rows exactly.
        rows = text[2:-2].split(b"],[")
        _exact_via_float64(matrix, rows)
        bodies = [b'"vector":[' + row + b"]" for row in rows]
    else:
        bodies = [
            b'"vector_b64":"' + base64.b64encode(row.tobytes()) + b'"'
            for row in matrix.astype(_LE_F32, copy=False)
        ]
    head = b'{"schema_version":%d,"kind":"%b","id":' % (SCHEMA_VERSION, kind.encode())
    middle = b',"model_version":%d,"dim":%d,"encoding":"%b",' % (
        model_version,
        matrix.shape[1],
        encoding.encode(),
    )
    tail = b',"publish_time_ms":%d}' % publish_time_ms
    return [
        b'%b%b%b%b,"event_time_ms":%d%b' % (head, key, middle, body, event_ms, tail)
        for key, body, event_ms in zip(keys, bodies, times.tolist(), strict=True)
    ]


def _exact_via_float64(matrix: Vector, rows: list[bytes]) -> None:
    """Respell, in ``rows``, each decimal that a float64 parse would round to another float32.

    orjson writes the shortest decimal that reads back as the same float32 when parsed as
    a float32. Parsed as a float64 and then rounded (a JSON parser, then a cast) it lands
    on the neighbouring float32 when the float64 rounding puts it on the midpoint between
    the two: of the 2**31 positive float32 values only 7.038531e-26 does (``python -m
    bench.encoding --exhaustive`` checks them all), but its vector would not survive.
    Such a decimal has at most nine significant digits and lies within a float64
    rounding (2**-53) of a midpoint; scaled by the power of ten that puts its binade at
    1e9..2e10, it is an integer, so the scaled midpoint is within 1e-5 of one (float64
    errors included). The screen flags the values whose midpoints come within 1e-4
    (about one in 2,500) and the subnormals; only those are parsed back and, where
    needed, respelt with nine significant digits: within 5e-9 (relative) of the value,
    while a midpoint is at least 2**-25 away, so exact both ways.
    """
    magnitude = np.abs(matrix)
    bits = magnitude.view(np.uint32)
    wide = magnitude.astype(np.float64)
    half_scale = _HALF_DECIMAL_SCALE[bits >> 23]  # by the float32 exponent field
    flagged = (bits != 0) & (bits < 0x800000)  # subnormals: one scale does not fit them
    with np.errstate(invalid="ignore"):  # float32 max: its upper neighbour is infinite
        for neighbour in (bits + np.uint32(1), np.maximum(bits, 1) - np.uint32(1)):
            scaled = (wide + neighbour.view(np.float32).astype(np.float64)) * half_scale
            flagged |= np.abs(scaled - np.rint(scaled)) < 1e-4
    for row in np.flatnonzero(flagged.any(axis=1)):
        texts = rows[row].split(b",")
        wrong = [
            col
            for col in np.flatnonzero(flagged[row])
            if np.float32(float(texts[col])) != matrix[row, col]
        ]
        for col in wrong:
            texts[col] = orjson.dumps(float(f"{float(matrix[row, col]):.9g}"))
        if wrong:
            rows[row] = b",".join(texts)


# Per float32 exponent field f (binade [2**(f-127), 2**(f-126))): half of the power of
# ten that scales the binade to 1e9..2e10 (the half turns a sum of neighbours into
# their midpoint; both factors are exact or correctly rounded).
_HALF_DECIMAL_SCALE: Final = np.array(
    [0.5 * 10.0 ** math.ceil(9 - (f - 127) * math.log10(2)) for f in range(256)]
)


def decode_record(
    value: bytes | bytearray | memoryview, kind: NodeKind | None = None
) -> EmbeddingRecord:
    """Parse a record value; raise :class:`SchemaError` naming the first broken rule.

    ``kind``, when given, is the kind the topic carries: a record of the other kind is
    refused (it was published to the wrong topic).
    """
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise SchemaError(f"value is not UTF-8 JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise SchemaError(f"value must be a JSON object, got {type(obj).__name__}")
    if obj.get("schema_version") != SCHEMA_VERSION or not _is_int(obj.get("schema_version")):
        raise SchemaError(f"unsupported schema_version {obj.get('schema_version')!r}")
    unknown = set(obj) - _FIELDS
    if unknown:
        raise SchemaError(f"unknown fields {sorted(unknown)}")
    if kind is not None and obj.get("kind") != kind:
        raise SchemaError(f"expected a {kind} record, got kind {obj.get('kind')!r}")
    dim = obj.get("dim")
    if not _is_int(dim) or not 1 <= dim <= MAX_DIM:
        raise SchemaError(f"dim must be an integer in 1..{MAX_DIM}, got {dim!r}")
    vector = _decode_vector(obj, dim)
    try:
        return EmbeddingRecord(
            kind=obj.get("kind"),  # type: ignore[arg-type]  # checked in __post_init__
            id=obj.get("id"),  # type: ignore[arg-type]
            model_version=obj.get("model_version"),  # type: ignore[arg-type]
            vector=vector,
            event_time_ms=obj.get("event_time_ms"),  # type: ignore[arg-type]
            publish_time_ms=obj.get("publish_time_ms"),  # type: ignore[arg-type]
        )
    except TypeError as exc:
        raise SchemaError(f"malformed record: {exc}") from exc


def _decode_vector(obj: dict[str, Any], dim: int) -> Vector:
    encoding = obj.get("encoding")
    if encoding == "json":
        if "vector_b64" in obj:
            raise SchemaError('encoding "json" carries "vector", not "vector_b64"')
        values = obj.get("vector")
        if not isinstance(values, list) or len(values) != dim:
            raise SchemaError(f"vector must be a list of dim={dim} numbers")
        if not all(_is_number(v) for v in values):
            raise SchemaError("vector must hold finite numbers only")
        return np.array(values, dtype=np.float64).astype(np.float32)
    if encoding == "f32le-base64":
        if "vector" in obj:
            raise SchemaError('encoding "f32le-base64" carries "vector_b64", not "vector"')
        text = obj.get("vector_b64")
        if not isinstance(text, str):
            raise SchemaError("vector_b64 must be a base64 string")
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SchemaError(f"vector_b64 is not valid base64: {exc}") from exc
        if len(raw) != 4 * dim:
            raise SchemaError(f"vector_b64 holds {len(raw)} bytes, dim={dim} needs {4 * dim}")
        return np.frombuffer(raw, dtype=_LE_F32).astype(np.float32)
    raise SchemaError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
