"""Embedding record encoding: records per second, and an exhaustive float32 round-trip check.

Speed: a batch of L2-normalised vectors (dim 64 by default) encoded as the publisher
does it (``stream.publish.schema.encode_records``, both encodings), against the JSON
encoder it replaced (kept here as :func:`previous_encode_json`: one f-string per record,
each float32 turned into Python's shortest decimal through numpy's ``astype(str)``).
Each figure is the best of ``--repeat`` timed batches (the machine is shared).

Exactness (``--exhaustive``): every positive finite float32 (2**31 - 2**23 values; the
sign is written apart) goes through ``encode_records`` and back through a float64 parse
then a cast to float32, as a JSON parser and a cast do; ``respelt`` counts the values
whose orjson spelling alone would not have survived that way. Minutes, on every core
(``--workers``).

    .venv/bin/python -m bench.encoding                  # speed; bench/results/encoding.json
    .venv/bin/python -m bench.encoding --exhaustive     # adds the exhaustive check
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from stream.publish.schema import ENCODINGS, Encoding, encode_records

RESULTS = Path(__file__).resolve().parent / "results" / "encoding.json"
_EVENT_MS = 1_700_000_000_000


def previous_encode_json(
    ids: list[str], model_version: int, matrix: npt.NDArray[np.float32], publish_ms: int
) -> list[bytes]:
    """The JSON encoder before orjson (commit ab5270a), one record at a time."""
    out = []
    for node_id, vector in zip(ids, matrix, strict=True):
        texts = [repr(float(text)) for text in vector.astype(str)]
        back = np.array([float(text) for text in texts], np.float64).astype(np.float32)
        for i in np.flatnonzero(back != vector):
            texts[i] = repr(float(f"{float(vector[i]):.9g}"))
        text = (
            f'{{"schema_version":1,"kind":"user","id":{json.dumps(node_id, ensure_ascii=False)},'
            f'"model_version":{model_version},"dim":{vector.size},"encoding":"json",'
            f'"vector":[{",".join(texts)}],'
            f'"event_time_ms":{_EVENT_MS},"publish_time_ms":{publish_ms}}}'
        )
        out.append(text.encode())
    return out


def records_per_s(encode: Any, rows: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        encode()
        best = min(best, time.perf_counter() - start)
    return round(rows / best, 1)


def speed(rows: int, dim: int, repeat: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((rows, dim)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    ids = [f"u{i}" for i in range(rows)]
    times = np.full(rows, _EVENT_MS)

    def current(encoding: Encoding) -> list[bytes]:
        return encode_records("user", ids, 7, matrix, times, _EVENT_MS + 250, encoding)

    previous = previous_encode_json(ids, 7, matrix, _EVENT_MS + 250)
    assert [orjson.loads(v) for v in previous] == [orjson.loads(v) for v in current("json")]
    figures: dict[str, Any] = {
        "previous_json": records_per_s(
            lambda: previous_encode_json(ids, 7, matrix, _EVENT_MS + 250), rows, repeat
        )
    }
    for encoding in ENCODINGS:
        figures[encoding] = records_per_s(lambda e=encoding: current(e), rows, repeat)
        figures[f"{encoding}_bytes_per_record"] = round(sum(map(len, current(encoding))) / rows, 1)
    figures["json_speedup_over_previous"] = round(figures["json"] / figures["previous_json"], 1)
    return {"rows": rows, "dim": dim, "repeat": repeat, "records_per_s": figures}


_END = 0x7F800000  # the bit pattern of +inf: every positive finite float32 is below it
_CHUNK = 1 << 22


def _check_chunk(low: int) -> tuple[list[str], int]:
    """One chunk of bit patterns: (values that did not survive, values respelt)."""
    width = 1 << 16  # MAX_DIM values per record
    bits = np.arange(low, min(low + _CHUNK, _END), dtype=np.uint32)
    values = np.pad(bits, (0, -bits.size % width)).view(np.float32).reshape(-1, width)
    records = encode_records(
        "item", [str(i) for i in range(len(values))], 1, values, [0] * len(values), 0
    )
    spelt = np.concatenate([np.array(orjson.loads(r)["vector"]) for r in records])
    expected = values.reshape(-1).view(np.uint32)
    wrong = np.flatnonzero(spelt.astype(np.float32).view(np.uint32) != expected)
    raw = orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)
    raw_back = np.array(orjson.loads(raw), np.float64).astype(np.float32).view(np.uint32)
    respelt = int((raw_back.reshape(-1) != expected).sum())
    return [hex(int(expected[i])) for i in wrong[:10]], respelt


def exhaustive(workers: int) -> dict[str, Any]:
    """Every positive finite float32 through the encoder and a float64 parse."""
    failures: list[str] = []
    respelt = 0
    start = time.perf_counter()
    with multiprocessing.Pool(workers) as pool:
        for wrong, fixed in pool.imap_unordered(_check_chunk, range(0, _END, _CHUNK)):
            failures += wrong
            respelt += fixed
    return {
        "values": _END,
        "failures": len(failures),
        "first_failures": sorted(failures)[:10],
        "respelt": respelt,
        "workers": workers,
        "seconds": round(time.perf_counter() - start, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--exhaustive", action="store_true")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result: dict[str, Any] = {
        "benchmark": "embedding record encoding (records/s) and float32 round trip",
        "command": " ".join([Path(sys.executable).name, "-m", "bench.encoding", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "orjson": orjson.__version__,
        "speed": speed(args.rows, args.dim, args.repeat),
    }
    print(json.dumps(result["speed"]), flush=True)
    if args.exhaustive:
        result["exhaustive"] = exhaustive(args.workers)
        print(json.dumps(result["exhaustive"]), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0 if not result.get("exhaustive", {}).get("failures") else 1


if __name__ == "__main__":
    raise SystemExit(main())
