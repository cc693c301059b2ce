"""``make gpu-check``: everything that needs an NVIDIA GPU, in one run, into bench/results/gpu.json.

Parts, in this order, each in its own time budget (the whole stays under ``--budget-s``,
480 s by default); a part that cannot run records why (``status`` ``not_run`` with a
``reason``, or ``error`` with the message) and the next one runs:

1. ``device``: name, memory, compute capability, the spec peak memory bandwidth from
   :data:`PEAK_TB_S` (by device name) and a measured device-to-device copy (bytes read
   plus written per second: the achievable figure).
2. ``cuda_tests``: the suite's device-parametrised tests, CUDA cases only (the ones that
   show "no CUDA device" as their skip reason elsewhere), through pytest.
3. ``propagation``: at 1M, 10M and 100M edges (``--sizes``; graphs drawn on the GPU as in
   bench/propagation.py), the LightGCN encoder's training propagation (forward and
   backward) and ``embed``, and one sparse product ``A @ X`` of the symmetric normalised
   adjacency with its achieved bandwidth against the peak and the copy: ``compulsory``
   counts the CSR once plus ``X`` read and ``A @ X`` written once (a lower bound of the
   traffic), ``gathered`` counts one row of ``X`` per stored entry (no cache reuse).
   Sizes run while they fit: the later required parts' expected seconds stay reserved,
   and a size whose time, scaled by edges from the last one's, would eat into them is
   ``not_run`` with the estimate (the whole run stays inside the budget and every required
   part gets its turn).
4. ``step_time``: the trainer's learn step (local-shared, local-history and full configs; one
   untimed first call, as in the committed run) at 1M and 10M
   edges (``--step-sizes``: its graphs are filled on the host, so 100M does not fit), by
   ``python -m bench.step_cost --device cuda ...`` (issue 13's step-cost bench); the rows
   it printed are kept when it runs out of time.
5. ``freshness``: ``python -m bench.freshness --loads 10000 50000 --device cuda`` (shorter
   loads than the CPU figures, to fit the budget); the 10,000 events/s load is seeded
   with :data:`FRESHNESS_SEED_EDGES` so that its graph ends above 1M edges, as the issue's
   figure asks (the seeding also warms the worker's CUDA kernels before the load). Needs a
   Java runtime (``java`` on PATH or ``JAVA_HOME``) and Kafka's jars
   (``STREAMGNN_KAFKA_LIBS``, or the default cache); both are checked first, without the
   network. A bare GPU machine has neither:
   bench/gpu_java.sh packs a runtime and the jars into ``.whl/java-kafka.tar.xz``, which
   this script unpacks there (carry ``.whl``).
6. ``gil_switch``: ``python -m bench.gil_switch --device cuda`` (learn calls of 20,000
   events at 1M edges, alone and beside a thread spinning in Python, at GIL switch
   intervals of 5, 1, 0.5 and 0.2 ms): how much of a GPU learn call is waiting for the
   GIL, the worker's ``--gil-switch-interval-ms``.
7. ``freshness_split``: the 10,000 events/s load (seeded alike) offered to the split
   deployment, one ``streamgnn ingest`` plus one ``streamgnn train`` on the GPU
   (``--deployment split``): the trainer then shares no GIL with the ingest threads.
8. ``freshness_reflect``, only when ``--parts`` names it (the budget holds the seven parts
   above, not an eighth load): the same split load with
   ``STREAMGNN_REFLECT_BEFORE_STEP=true`` (the trainer publishes each batch's users before
   the step, which runs in its learner thread). On this 2-core CPU the thread that absorbs
   and publishes was the bound at 10,000 events/s (docs/worker.md, "Reflect before the step"); a
   machine with cores to spare is where it can show what it does:
   ``python -m bench.gpu_check --parts freshness_reflect --out bench/results/gpu-reflect.json``.

The parts the issue asks for (1-5) run first; the propagation's sizes run while they leave
the expected seconds of the required ones after it (step time, freshness); the optional
ones (6-8) run only if their expected seconds are left, so a short run skips them, never
a required one, and does not cut them short into an error.

    .venv/bin/python -m bench.gpu_check                # on the GPU machine: make gpu-check
    .venv/bin/python -m bench.gpu_check --dry-run      # the plumbing on the CPU, seconds

Without a CUDA device it stops at once with "no CUDA device" and writes nothing; with
``--dry-run`` it runs every part it can on the CPU at small sizes (the CUDA tests are
then collected, not run) and writes ``--out`` (default ``/tmp/gpu-check-dry-run.json``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "gpu.json"
DRY_RUN_RESULTS = Path(tempfile.gettempdir()) / "gpu-check-dry-run.json"
DIM, LAYERS, RELATIONS = 64, 2, 3

# Vendor datasheet memory bandwidth (TB/s) by a part of torch's device name; first match.
PEAK_TB_S: tuple[tuple[str, float], ...] = (
    ("GH200", 4.0),  # 96 GB HBM3 part; the 144 GB HBM3e part has 4.9
    ("H200", 4.8),
    ("H100 PCIe", 2.0),
    ("H100 NVL", 3.9),
    ("H100", 3.35),  # SXM5 80 GB ("NVIDIA H100 80GB HBM3")
    ("A100-SXM4-80GB", 2.039),
    ("A100 80GB PCIe", 1.935),
    ("A100", 1.555),  # 40 GB parts
    ("L40S", 0.864),
    ("L4", 0.3),
)


def peak_tb_s(name: str) -> float | None:
    """The spec bandwidth of the first :data:`PEAK_TB_S` entry whose key is in ``name``.

    >>> peak_tb_s("NVIDIA H200"), peak_tb_s("NVIDIA H100 80GB HBM3"), peak_tb_s("Tesla T4")
    (4.8, 3.35, None)
    """
    return next((tb for key, tb in PEAK_TB_S if key in name), None)


# What the required parts after propagation are expected to take (not their caps), kept in
# reserve for them: step time took ~40-55 s on an H200 with two configurations (gpu.json;
# a third, local-history, since); freshness takes each
# load's seconds plus about this many to start and drain, and the seeding about its own.
STEP_TIME_EXPECTED_S = 90.0
GIL_SWITCH_EXPECTED_S = 60.0  # under the 60 s its one H200 run was given (gpu.json)
FRESHNESS_LOAD_OVERHEAD_S = 40.0
FRESHNESS_SEED_S = 60.0


def propagation_reserve_s(parts: set[str], loads: list[int], freshness_s: float) -> float:
    """Seconds the propagation leaves for the parts the issue asks for after it (step
    time, freshness). The optional parts are not reserved: with them too the reserve was
    the whole 480 s budget, and the propagation, which the issue asks for, ran no size."""
    reserve = STEP_TIME_EXPECTED_S if "step_time" in parts else 0.0
    if "freshness" in parts:
        reserve += len(loads) * (freshness_s + FRESHNESS_LOAD_OVERHEAD_S)
        reserve += FRESHNESS_SEED_S if 10_000 in loads else 0.0
    return reserve


# Edges grown before the 10,000 events/s load: its 35 s add ~0.3M (304,862 on the H200,
# unseeded), so the graph ends above 1M edges.
FRESHNESS_SEED_EDGES = 750_000


class Budget:
    """What is left of the run's seconds; a part gets at most its own share of it."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self, cap: float) -> float:
        return max(0.0, min(cap, self.deadline - time.monotonic()))


def _rate(value: float) -> float:
    """A rate to 4 significant figures: a fixed number of decimals rounds a small graph's
    (or a loaded CPU's) TB/s to 0."""
    return float(f"{value:.4g}")


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _best_seconds(call: Callable[[], object], device: str, repeats: int) -> float:
    call()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        call()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def device_part(device: str, copy_bytes: int) -> dict[str, Any]:
    info: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(
            name=props.name,
            memory_gib=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            multiprocessors=props.multi_processor_count,
        )
    else:
        info["name"] = f"cpu ({platform.processor() or platform.machine()})"
    info["peak_tb_s"] = peak_tb_s(info["name"])
    info["peak_source"] = "vendor datasheet, by device name (bench/gpu_check.py PEAK_TB_S)"
    source = torch.empty(copy_bytes // 4, dtype=torch.float32, device=device)
    target = torch.empty_like(source)
    seconds = _best_seconds(lambda: target.copy_(source), device, repeats=10)
    info["copy_tb_s"] = _rate(2 * copy_bytes / seconds / 1e12)
    info["copy_note"] = f"device-to-device copy of {copy_bytes / 2**30:.1f} GiB, read + written"
    return info


def cuda_tests(device: str, timeout_s: float) -> dict[str, Any]:
    files = sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "tests").rglob("test_*.py")
        if "tests.devices import" in p.read_text()
    )
    report = Path(tempfile.mkdtemp(prefix="gpu-check-")) / "junit.xml"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cuda"]
    command += ["-rs", f"--junitxml={report}", *files]
    if device != "cuda":
        command.append("--collect-only")  # the dry run: that the selection finds the cases
    started = time.monotonic()
    run = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    result: dict[str, Any] = {
        "files": files,
        "command": " ".join(command[1:]),
        "exit": run.returncode,
    }
    result["seconds"] = round(time.monotonic() - started, 1)
    if report.is_file():
        cases = ET.parse(report).getroot().iter("testcase")
        outcome: dict[str, list[str]] = {"passed": [], "failed": [], "skipped": []}
        for case in cases:
            name = f"{case.get('classname')}::{case.get('name')}"
            kind = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "ok")
            key = {"ok": "passed", "skipped": "skipped"}.get(kind, "failed")
            outcome[key].append(name)
        result.update({k: len(v) for k, v in outcome.items()})
        result["failures"] = outcome["failed"]
        result["skip_reasons"] = sorted(set(_skip_reasons(run.stdout)))
    if device != "cuda":  # collected, not run: the cases a GPU would run
        result["collected"] = sum("::" in line for line in run.stdout.splitlines())
    ran = device != "cuda" or result.get("passed", 0) > 0  # all skipped on a GPU: a failure
    result["status"] = "ok" if run.returncode == 0 and ran else "failed"
    result["output_tail"] = "\n".join(run.stdout.splitlines()[-15:])
    return result


def _skip_reasons(stdout: str) -> list[str]:
    return [line.split(": ", 1)[-1] for line in stdout.splitlines() if line.startswith("SKIPPED")]


def graph_on(num_edges: int, device: str, seed: int = 0) -> Any:
    """bench/propagation.py's graph (power-law degrees, each (user, item, relation) once),
    drawn on ``device``: 100M edges in seconds on a GPU."""
    from models.base import BipartiteGraph

    gen = torch.Generator(device=device).manual_seed(seed)
    num_users, num_items = max(num_edges // 7, 1), max(num_edges // 14, 1)
    keys = torch.zeros(0, dtype=torch.long, device=device)
    while keys.numel() < num_edges:
        draws = 2 * num_edges
        users = (torch.rand(draws, generator=gen, device=device).pow(2) * num_users).long()
        items = (torch.rand(draws, generator=gen, device=device).pow(2) * num_items).long()
        relations = torch.randint(0, RELATIONS, (draws,), generator=gen, device=device)
        fresh = (users * num_items + items) * RELATIONS + relations
        keys = torch.unique(torch.cat([keys, fresh]))
        del users, items, relations, fresh
    pick = torch.randperm(keys.numel(), generator=gen, device=device)[:num_edges]
    keys = keys[pick]
    pairs, relations = keys.div(RELATIONS, rounding_mode="floor"), keys % RELATIONS
    users, items = pairs.div(num_items, rounding_mode="floor"), pairs % num_items
    weights = torch.rand(num_edges, generator=gen, device=device) + 0.01
    times = torch.zeros(num_edges, dtype=torch.long, device=device)
    return BipartiteGraph(num_users, num_items, users, items, relations, weights, times, 0)


def _normalised_csr(graph: Any, device: str) -> torch.Tensor:
    """``D^-1/2 A D^-1/2`` of the symmetric user-item graph as one CSR (int32 indices)."""
    n = graph.num_users + graph.num_items
    rows = torch.cat([graph.users, graph.items + graph.num_users])
    cols = torch.cat([graph.items + graph.num_users, graph.users])
    key, slot = torch.unique(rows * n + cols, sorted=True, return_inverse=True)
    values = torch.zeros(key.numel(), device=device).index_add(
        0, slot, torch.cat([graph.weights, graph.weights])
    )
    row, col = key.div(n, rounding_mode="floor"), key.remainder(n)
    degree = torch.zeros(n, device=device).index_add(0, row, values)
    inv = degree.clamp_min(1e-12).rsqrt()
    values = inv[row] * values * inv[col]
    crow = torch.zeros(n + 1, dtype=torch.int32, device=device)
    crow[1:] = torch.bincount(row, minlength=n).cumsum(0)
    return torch.sparse_csr_tensor(crow, col.int(), values, (n, n), check_invariants=False)


def propagation_size(
    num_edges: int, device: str, peak: float | None, copy: float
) -> dict[str, Any]:
    started = time.monotonic()
    graph = graph_on(num_edges, device)
    entry: dict[str, Any] = {"edges": num_edges, "users": graph.num_users, "items": graph.num_items}
    entry["spmm"] = _spmm(graph, device, peak, copy)
    entry.update(_encoder_times(graph, device))
    entry["seconds"] = round(time.monotonic() - started, 1)
    return entry


def _spmm(graph: Any, device: str, peak: float | None, copy: float) -> dict[str, Any]:
    adjacency = _normalised_csr(graph, device)
    n, nnz = adjacency.shape[0], adjacency.values().numel()
    x = torch.randn(n, DIM, device=device)
    seconds = _best_seconds(lambda: adjacency @ x, device, repeats=5)
    compulsory = (nnz * 8 + (n + 1) * 4 + 2 * n * DIM * 4) / seconds / 1e12
    gathered = (nnz * 8 + (n + 1) * 4 + nnz * DIM * 4 + n * DIM * 4) / seconds / 1e12
    return {
        "stored_entries": nnz,
        "seconds": round(seconds, 6),
        "compulsory_tb_s": _rate(compulsory),
        "gathered_tb_s": _rate(gathered),
        "compulsory_of_peak": _rate(compulsory / peak) if peak else None,
        "compulsory_of_copy": _rate(compulsory / copy),
    }


def _encoder_times(graph: Any, device: str) -> dict[str, float]:
    from models.lightgcn import LightGCNEncoder

    encoder = LightGCNEncoder(RELATIONS, dim=DIM, num_layers=LAYERS)
    encoder.grow(graph.num_users, graph.num_items)
    encoder.to(device)
    users = torch.arange(graph.num_users, device=device)
    items = torch.arange(graph.num_items, device=device)

    def forward_backward() -> None:
        encoder.zero_grad(set_to_none=True)
        u, i = encoder(graph, users, items)
        (u.sum() + i.sum()).backward()

    def embed() -> None:
        encoder.embed(graph, users, items)

    return {
        "forward_backward_s": round(_best_seconds(forward_backward, device, repeats=3), 5),
        "embed_s": round(_best_seconds(embed, device, repeats=3), 5),
    }


def propagation(
    sizes: list[int], device: str, dev: dict[str, Any], budget: Budget, reserve_s: float = 0.0
) -> dict[str, Any]:
    """Each size in turn while it fits: ``reserve_s`` of the budget stays for the later
    parts, and a size is skipped when the last one's seconds, scaled by edges (the graph is
    built on the host and copied: linear), say it would not end before that reserve."""
    results: list[dict[str, Any]] = []
    last: tuple[int, float] | None = None  # (edges, seconds) of the last size run
    for num_edges in sizes:
        left = budget.left(1e9) - reserve_s
        estimate = None if last is None else last[1] * num_edges / last[0]
        if left <= 0 or (estimate is not None and estimate > left):
            reason = f"{max(left, 0):.0f} s left before the later parts' {reserve_s:.0f} s"
            if last is not None:
                reason += f"; estimated {estimate:.0f} s from {last[0]:,} edges' {last[1]:.0f} s"
            results.append({"edges": num_edges, "status": "not_run", "reason": reason})
            print(json.dumps(results[-1]), flush=True)
            continue
        started = time.monotonic()
        try:
            results.append(propagation_size(num_edges, device, dev["peak_tb_s"], dev["copy_tb_s"]))
            last = (num_edges, time.monotonic() - started)
        except torch.cuda.OutOfMemoryError as exc:
            results.append(
                {"edges": num_edges, "status": "error", "reason": f"out of memory: {exc}"}
            )
        finally:
            if device == "cuda":
                torch.cuda.empty_cache()
        print(json.dumps(results[-1]), flush=True)
    failed = any(r.get("status") for r in results)
    return {"status": "partial" if failed else "ok", "dim": DIM, "layers": LAYERS, "sizes": results}


def step_time(sizes: list[int], device: str, timeout_s: float) -> dict[str, Any]:
    if not (ROOT / "bench" / "step_cost.py").is_file():
        return {"status": "not_run", "reason": "bench/step_cost.py is not in this tree"}
    out = Path(tempfile.mkdtemp(prefix="gpu-check-")) / "step_cost.json"
    command = [sys.executable, "-m", "bench.step_cost", "--device", device, "--steps", "3"]
    command += ["--warmup", "1"]  # as in the committed gpu.json; the budget is 8 minutes
    command += ["--configs", "local-shared", "local-history", "full", "--threads", "8"]
    command += ["--sizes", *map(str, sizes), "--out", str(out)]
    return _child(command, out, timeout_s)


def gil_switch(dry_run: bool, device: str, timeout_s: float) -> dict[str, Any]:
    out = Path(tempfile.mkdtemp(prefix="gpu-check-")) / "gil_switch.json"
    command = [sys.executable, "-m", "bench.gil_switch", "--device", device, "--json", str(out)]
    if dry_run:  # the plumbing only: one call per case, two intervals, a small graph
        command += ["--edges", "10000", "--events", "1000", "--calls", "1"]
        command += ["--intervals-ms", "5", "1"]
    return _child(command, out, timeout_s)


def freshness(
    loads: list[int],
    device: str,
    duration_s: float,
    timeout_s: float,
    deployment: str = "worker",
    options: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``bench.freshness`` on the device; ``options``: worker settings, as environment
    variables its processes inherit (the benchmark records them)."""
    from stream.local_broker import jars

    try:
        java = jars.java_executable()
    except Exception as exc:  # BrokerError: no JDK here
        return {"status": "not_run", "reason": str(exc)}
    libs = Path(os.environ.get("STREAMGNN_KAFKA_LIBS") or jars._default_jars_dir())
    if not (libs / jars._COMPLETE_MARKER).is_file():
        return {
            "status": "not_run",
            "reason": f"no Kafka jars at {libs} (nothing is downloaded here: carry them and "
            "set STREAMGNN_KAFKA_LIBS)",
        }
    out = Path(tempfile.mkdtemp(prefix="gpu-check-")) / "freshness.json"
    command = [sys.executable, "-m", "bench.freshness", "--loads", *map(str, loads)]
    command += ["--duration-s", str(duration_s), "--drain-s", "15", "--device", device]
    command += ["--seed-edges", f"10000:{FRESHNESS_SEED_EDGES}", "--deployment", deployment]
    # No broker warm-up (bench.freshness's throwaway load): the budget has no minute for it,
    # and with 16 cores a cold broker's JIT does not take the worker's cores as on 2
    command += ["--broker-warmup-s", "0", "--json", str(out)]
    return {"java": java, **_child(command, out, timeout_s, options)}


def _child(
    command: list[str], out: Path, timeout_s: float, options: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run a benchmark in its own process group: on timeout the whole group (a broker's
    JVM, a worker) is killed, so nothing holds the GPU for the next part."""
    started = time.monotonic()
    result: dict[str, Any] = {"command": " ".join(command[1:])}
    child = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, **(options or {})},
    )
    try:
        output, _ = child.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        output, _ = child.communicate()
        result.update(status="error", reason=f"timed out after {timeout_s:.0f} s")
    result.update(exit=child.returncode, seconds=round(time.monotonic() - started, 1))
    if child.returncode == 0 and out.is_file():
        result.update(status="ok", result=json.loads(out.read_text()))
    else:
        result.setdefault("status", "error")
        result["output_tail"] = "\n".join(output.splitlines()[-20:])
        result["rows"] = _json_rows(output)  # what a benchmark printed before it stopped
    return result


def _json_rows(output: str) -> list[dict[str, Any]]:
    rows = []
    for line in output.splitlines():
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows


def _part(
    name: str,
    body: Callable[[], dict[str, Any]],
    budget: Budget | None = None,
    needs_s: float = 20.0,
) -> dict[str, Any]:
    """Run one part, unless the budget has less than ``needs_s`` left (an optional part
    passes what it is expected to take: skipped, rather than cut short into an error)."""
    print(f"== {name}", flush=True)
    started = time.monotonic()
    if budget is not None and budget.left(1e9) < needs_s:
        left = budget.left(1e9)
        return {
            "status": "not_run",
            "reason": f"{left:.0f} s of the run's budget left, {needs_s:.0f} s needed",
        }
    try:
        result = body()
    except Exception as exc:  # one part's failure is recorded, the next part still runs
        result = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"}
        result["traceback_tail"] = traceback.format_exc().splitlines()[-8:]
    result.setdefault("status", "ok")
    result["part_seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps({k: v for k, v in result.items() if k != "result"})[:2000], flush=True)
    return result


# What the product imports beyond a GPU image's usual packages (bench/gpu_wheels.sh).
RUNTIME_MODULES = ("orjson", "rocksdict", "kafka", "confluent_kafka", "aiokafka")


def ensure_runtime_packages(argv: list[str]) -> None:
    """On a bare GPU machine: install the carried wheels of ``.whl/`` into ``.whl/site``
    (no network, no venv) and run again with them on the path. Without wheels the parts
    that need a missing package record the ImportError."""
    missing = [name for name in RUNTIME_MODULES if importlib.util.find_spec(name) is None]
    wheels = sorted(str(p) for p in (ROOT / ".whl").glob("*.whl"))
    if not missing or not wheels or os.environ.get("STREAMGNN_GPU_CHECK_WHEELS"):
        if missing:
            print(f"missing {missing}: run bench/gpu_wheels.sh and carry .whl", file=sys.stderr)
        return
    site = ROOT / ".whl" / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
    subprocess.run([*pip, "--no-compile", "--upgrade", "--target", str(site), *wheels], check=True)
    path = [str(site), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "STREAMGNN_GPU_CHECK_WHEELS": "1"}
    os.execve(sys.executable, [sys.executable, "-m", "bench.gpu_check", *argv], env)


JAVA_ARCHIVE = ROOT / ".whl" / "java-kafka.tar.xz"


def ensure_java() -> str | None:
    """On a machine with no JDK: unpack the runtime and Kafka's jars that bench/gpu_java.sh
    packed into :data:`JAVA_ARCHIVE` (carried), the jars re-zipped into the default jars
    folder, and point ``JAVA_HOME`` at the runtime. Returns what was done, or ``None``."""
    from stream.local_broker import jars

    libs = jars._default_jars_dir()
    try:
        jars.java_executable()
        if (libs / jars._COMPLETE_MARKER).is_file() or os.environ.get("STREAMGNN_KAFKA_LIBS"):
            return None
    except jars.BrokerError:  # no JDK: the archive may bring one
        pass
    if not JAVA_ARCHIVE.is_file():
        return None
    import shutil
    import tarfile
    import zipfile

    unpacked = Path(tempfile.mkdtemp(prefix="gpu-check-java-"))
    with tarfile.open(JAVA_ARCHIVE) as archive:
        archive.extractall(unpacked, filter="tar")  # keeps the runtime's executable bits
    os.environ["JAVA_HOME"] = str(unpacked / "jre")
    staging = Path(tempfile.mkdtemp(prefix="gpu-check-jars-"))
    for folder in sorted((unpacked / "kafka-libs").iterdir()):
        with zipfile.ZipFile(staging / folder.name, "w", zipfile.ZIP_STORED) as jar:
            for entry in sorted(folder.rglob("*")):
                jar.write(entry, entry.relative_to(folder).as_posix())
    (staging / jars._COMPLETE_MARKER).touch()
    if libs.exists():
        shutil.rmtree(libs)
    libs.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(staging, libs)
    return f"JAVA_HOME={unpacked / 'jre'}, jars re-zipped into {libs}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="the plumbing on the CPU")
    parser.add_argument("--sizes", default=None, help="edge counts (default 1e6,1e7,1e8)")
    parser.add_argument(
        "--step-sizes",
        default=None,
        help="edge counts of the step-time part (default 1e6,1e7: its graphs are filled on "
        "the host, about a minute per 10M edges and config, so 100M does not fit the budget)",
    )
    parser.add_argument("--loads", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--freshness-s", type=float, default=35.0, help="seconds per load")
    parser.add_argument("--budget-s", type=float, default=480.0)
    parser.add_argument(
        "--parts",
        default=None,
        help="comma-separated parts after device (default all; with --dry-run all but freshness)",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available() and not args.dry_run:
        print(
            "no CUDA device: make gpu-check needs an NVIDIA GPU (--dry-run checks the "
            "plumbing on the CPU); nothing written",
            file=sys.stderr,
        )
        return 2
    ensure_runtime_packages(sys.argv[1:] if argv is None else argv)
    java_unpacked = ensure_java()
    device = "cpu" if args.dry_run else "cuda"
    default_sizes = "10000,100000" if args.dry_run else "1000000,10000000,100000000"
    sizes = [int(float(s)) for s in (args.sizes or default_sizes).split(",")]
    default_step_sizes = default_sizes if args.dry_run else "1000000,10000000"
    step_sizes = [int(float(s)) for s in (args.step_sizes or default_step_sizes).split(",")]
    freshness_parts = "" if args.dry_run else ",freshness,freshness_split"
    every = "cuda_tests,propagation,step_time,gil_switch" + freshness_parts
    parts = set((args.parts or every).split(","))
    budget = Budget(args.budget_s)
    started = time.monotonic()
    dev = _part("device", lambda: device_part(device, 2**28 if args.dry_run else 2**32))
    report: dict[str, Any] = {
        "benchmark": "make gpu-check",
        "command": " ".join([Path(sys.executable).name, "-m", "bench.gpu_check", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "dry_run": args.dry_run,
        "device_name": dev.get("name"),
        "device": dev,
        "java_unpacked": java_unpacked,
    }
    skipped = {"status": "not_run", "reason": "not in --parts"}
    report["cuda_tests"] = (
        _part("cuda_tests", lambda: cuda_tests(device, budget.left(120)), budget)
        if "cuda_tests" in parts
        else skipped
    )
    reserve_s = propagation_reserve_s(parts, args.loads, args.freshness_s)
    report["propagation"] = (
        _part("propagation", lambda: propagation(sizes, device, dev, budget, reserve_s))
        if "propagation" in parts and "copy_tb_s" in dev
        else skipped
        if "propagation" not in parts
        else {"status": "not_run", "reason": "the device part failed"}
    )
    report["step_time"] = (
        _part("step_time", lambda: step_time(step_sizes, device, budget.left(150)), budget)
        if "step_time" in parts
        else skipped
    )
    report["freshness"] = (
        _part(
            "freshness",
            lambda: freshness(args.loads, device, args.freshness_s, budget.left(300)),
            budget,
        )
        if "freshness" in parts
        else skipped
    )
    # The optional parts: each only if what it is expected to take is left.
    split_s = args.freshness_s + FRESHNESS_LOAD_OVERHEAD_S + FRESHNESS_SEED_S
    report["gil_switch"] = (
        _part(
            "gil_switch",
            lambda: gil_switch(args.dry_run, device, budget.left(90)),
            budget,
            GIL_SWITCH_EXPECTED_S,
        )
        if "gil_switch" in parts
        else skipped
    )
    report["freshness_split"] = (
        _part(
            "freshness_split",
            lambda: freshness([10_000], device, args.freshness_s, budget.left(180), "split"),
            budget,
            split_s,
        )
        if "freshness_split" in parts
        else skipped
    )
    report["freshness_reflect"] = (
        _part(
            "freshness_reflect",
            lambda: freshness(
                [10_000],
                device,
                args.freshness_s,
                budget.left(180),
                "split",
                {"STREAMGNN_REFLECT_BEFORE_STEP": "true"},
            ),
            budget,
            split_s,
        )
        if "freshness_reflect" in parts
        else skipped
    )
    report["total_s"] = round(time.monotonic() - started, 1)
    out = args.out or (DRY_RUN_RESULTS if args.dry_run else RESULTS)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out} in {report['total_s']} s")
    failed = [
        k
        for k, v in report.items()
        if isinstance(v, dict) and v.get("status") in ("error", "failed")
    ]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
