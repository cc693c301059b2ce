"""bench/gpu_check.py without a GPU: it refuses plainly, and its plumbing runs on the CPU."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bench import gpu_check


def _run(tmp_path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    out = tmp_path / "gpu.json"
    code = gpu_check.main([*args, "--out", str(out)])
    return code, json.loads(out.read_text())


def test_without_a_cuda_device_it_says_so_and_writes_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu.json"
    assert gpu_check.main(["--out", str(out)]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not out.exists()


def test_the_dry_run_records_every_part(tmp_path: Path) -> None:
    code, doc = _run(tmp_path, "--dry-run", "--sizes", "3000", "--parts", "propagation,step_time")
    assert code == 0 and doc["dry_run"] is True
    assert doc["device_name"] == doc["device"]["name"] and doc["device"]["copy_tb_s"] > 0
    (size,) = doc["propagation"]["sizes"]
    assert size["edges"] == 3000 and size["users"] == 3000 // 7
    assert size["spmm"]["gathered_tb_s"] >= size["spmm"]["compulsory_tb_s"] > 0
    assert size["forward_backward_s"] > 0 and size["embed_s"] > 0
    for part in ("cuda_tests", "gil_switch", "freshness", "freshness_split", "freshness_reflect"):
        assert doc[part] == {"status": "not_run", "reason": "not in --parts"}
    assert doc["step_time"]["status"] in {"not_run", "ok"}


def test_a_failing_part_is_recorded_and_the_next_one_still_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def broken(*_: object) -> dict[str, Any]:
        raise RuntimeError("planted")

    monkeypatch.setattr(gpu_check, "propagation_size", broken)
    code, doc = _run(tmp_path, "--dry-run", "--sizes", "3000", "--parts", "propagation,step_time")
    assert code == 1
    assert doc["propagation"]["status"] == "error" and "planted" in doc["propagation"]["reason"]
    assert "status" in doc["step_time"]


def test_a_size_that_would_eat_the_later_parts_reserve_is_not_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [0.0]
    monkeypatch.setattr(gpu_check.time, "monotonic", lambda: clock[0])

    def one_second_per_million(num_edges: int, *_: Any) -> dict[str, Any]:
        clock[0] += num_edges / 1e6
        return {"edges": num_edges}

    monkeypatch.setattr(gpu_check, "propagation_size", one_second_per_million)
    dev = {"peak_tb_s": None, "copy_tb_s": 1.0}
    sizes = [1_000_000, 10_000_000, 100_000_000]
    # 100 s budget, 20 reserved: after 11 s, 100M (estimated 100 s) does not fit the 69 left
    tight = gpu_check.propagation(sizes, "cpu", dev, gpu_check.Budget(100.0), reserve_s=20.0)
    assert [r.get("status") for r in tight["sizes"]] == [None, None, "not_run"]
    assert "estimated 100 s" in tight["sizes"][2]["reason"]
    assert clock[0] == 11.0 and tight["status"] == "partial"
    # 200 s budget: 169 left, so it runs
    clock[0] = 0.0
    roomy = gpu_check.propagation(sizes, "cpu", dev, gpu_check.Budget(200.0), reserve_s=20.0)
    assert [r["edges"] for r in roomy["sizes"]] == sizes and roomy["status"] == "ok"
    # nothing before the reserve: not even the first size
    clock[0] = 0.0
    spent = gpu_check.propagation(sizes, "cpu", dev, gpu_check.Budget(20.0), reserve_s=20.0)
    assert all(r["status"] == "not_run" for r in spent["sizes"]) and clock[0] == 0.0


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H200", 4.8),
        ("NVIDIA H100 80GB HBM3", 3.35),
        ("NVIDIA H100 PCIe", 2.0),
        ("NVIDIA A100-SXM4-80GB", 2.039),
        ("Tesla T4", None),
    ],
)
def test_the_peak_bandwidth_comes_from_the_device_name(name: str, peak: float | None) -> None:
    assert gpu_check.peak_tb_s(name) == peak


def test_the_timed_product_is_the_normalised_symmetric_adjacency() -> None:
    graph = gpu_check.graph_on(500, "cpu")
    n = graph.num_users + graph.num_items
    dense = np.zeros((n, n))
    for u, i, w in zip(graph.users, graph.items, graph.weights, strict=True):
        dense[u, graph.num_users + i] += float(w)
        dense[graph.num_users + i, u] += float(w)
    degree = dense.sum(axis=1)
    inv = np.where(degree > 0, 1 / np.sqrt(np.where(degree > 0, degree, 1)), 0)
    expected = inv[:, None] * dense * inv[None, :]
    got = gpu_check._normalised_csr(graph, "cpu").to_dense().numpy()
    assert np.allclose(got, expected, atol=1e-6)
    edges = zip(graph.users, graph.items, graph.relations, strict=True)
    assert len({(int(u), int(i), int(r)) for u, i, r in edges}) == 500  # each edge once


def test_a_bare_machine_installs_the_carried_wheels_and_runs_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".whl").mkdir()
    (tmp_path / ".whl" / "orjson-3-cp312-x.whl").write_bytes(b"")
    calls: list[list[str]] = []
    monkeypatch.setattr(gpu_check, "ROOT", tmp_path)
    monkeypatch.setattr(gpu_check.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(gpu_check.subprocess, "run", lambda cmd, check: calls.append(cmd))
    monkeypatch.delenv("STREAMGNN_GPU_CHECK_WHEELS", raising=False)

    def execve(path: str, args: list[str], env: dict[str, str]) -> None:
        calls.append(args)
        assert env["PYTHONPATH"].split(":")[:2] == [str(tmp_path / ".whl" / "site"), str(tmp_path)]
        assert env["STREAMGNN_GPU_CHECK_WHEELS"] == "1"  # the second run does not loop

    monkeypatch.setattr(gpu_check.os, "execve", execve)
    gpu_check.ensure_runtime_packages(["--budget-s", "60"])
    install, again = calls
    assert "--no-index" in install and install[-1].endswith("orjson-3-cp312-x.whl")
    assert again[-3:] == ["bench.gpu_check", "--budget-s", "60"]
    calls.clear()
    monkeypatch.setenv("STREAMGNN_GPU_CHECK_WHEELS", "1")
    gpu_check.ensure_runtime_packages([])
    assert not calls


def _java_archive(root: Path) -> Path:
    """A stand-in of bench/gpu_java.sh's archive: a runtime's launcher, one unpacked jar."""
    import tarfile

    (root / "jre" / "bin").mkdir(parents=True)
    (root / "jre" / "bin" / "java").write_text("#!/bin/sh\n")
    (root / "jre" / "bin" / "java").chmod(0o755)
    jar = root / "kafka-libs" / "kafka-clients.jar"
    (jar / "META-INF").mkdir(parents=True)
    (jar / "META-INF" / "MANIFEST.MF").write_text("Manifest-Version: 1.0\n")
    (jar / "org" / "apache").mkdir(parents=True)
    (jar / "org" / "apache" / "Kafka.class").write_bytes(bytes(range(256)))
    archive = root / "java-kafka.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        tar.add(root / "jre", "jre")
        tar.add(root / "kafka-libs", "kafka-libs")
    return archive


def test_a_machine_without_java_unpacks_the_carried_runtime_and_jars(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import zipfile

    from stream.local_broker import jars

    monkeypatch.setattr(gpu_check, "JAVA_ARCHIVE", _java_archive(tmp_path / "packed"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "none"))
    monkeypatch.delenv("STREAMGNN_KAFKA_LIBS", raising=False)
    real_java = jars.java_executable

    def no_jdk() -> str:
        raise jars.BrokerError("java not found")

    monkeypatch.setattr(jars, "java_executable", no_jdk)
    done = gpu_check.ensure_java()
    assert done is not None
    monkeypatch.setattr(jars, "java_executable", real_java)
    assert Path(real_java()) == Path(gpu_check.os.environ["JAVA_HOME"]) / "bin" / "java"
    libs = jars._default_jars_dir()
    assert (libs / jars._COMPLETE_MARKER).is_file()
    with zipfile.ZipFile(libs / "kafka-clients.jar") as jar:
        assert sorted(jar.namelist()) == [
            "META-INF/",
            "META-INF/MANIFEST.MF",
            "org/",
            "org/apache/",
            "org/apache/Kafka.class",
        ]
        assert jar.read("org/apache/Kafka.class") == bytes(range(256))
    assert gpu_check.ensure_java() is None  # a JDK and the jars are there now: nothing to do


def test_a_timed_out_benchmark_keeps_the_rows_it_printed() -> None:
    output = 'load 10000 events/s ...\n{"p99": 1.5}\n%4|noise\n{"cut off\n{"p99": 2.5}\n'
    assert gpu_check._json_rows(output) == [{"p99": 1.5}, {"p99": 2.5}]


def test_the_dry_run_times_learn_calls_beside_a_busy_thread(tmp_path: Path) -> None:
    code, doc = _run(tmp_path, "--dry-run", "--parts", "gil_switch")
    assert code == 0 and doc["gil_switch"]["status"] == "ok"
    cases = doc["gil_switch"]["result"]["cases"]
    assert [case["interval_ms"] for case in cases] == [5.0, 1.0]
    for case in cases:
        assert len(case["learn_s_alone"]) == len(case["learn_s_beside_busy_thread"]) == 1
        assert case["busy_loop_per_s_beside_learn"] > 0


def test_the_reflect_load_runs_the_split_deployment_with_the_setting_in_its_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[tuple[Any, ...]] = []

    def recorded(*args: Any) -> dict[str, Any]:
        calls.append(args)
        return {"status": "ok"}

    monkeypatch.setattr(gpu_check, "freshness", recorded)
    code, doc = _run(tmp_path, "--dry-run", "--parts", "freshness_reflect")
    assert code == 0 and doc["freshness_reflect"]["status"] == "ok"
    ((loads, _, _, _, deployment, options),) = calls
    assert loads == [10_000] and deployment == "split"
    assert options == {"STREAMGNN_REFLECT_BEFORE_STEP": "true"}
    assert doc["freshness_split"] == {"status": "not_run", "reason": "not in --parts"}


def test_a_benchmark_child_inherits_the_options_given_it(tmp_path: Path) -> None:
    out = tmp_path / "child.json"
    script = (
        "import json, os, sys; "
        "open(sys.argv[1], 'w').write(json.dumps({k: os.environ.get(k) for k in ('A', 'PATH')}))"
    )
    result = gpu_check._child([sys.executable, "-c", script, str(out)], out, 30, {"A": "on"})
    assert result["status"] == "ok"
    assert result["result"]["A"] == "on" and result["result"]["PATH"]  # added, not replaced


def test_the_propagation_keeps_most_of_the_budget_whatever_optional_parts_run() -> None:
    required = {"step_time", "freshness"}
    optional = {"cuda_tests", "gil_switch", "freshness_split", "freshness_reflect"}
    loads = [10_000, 50_000]
    reserve = gpu_check.propagation_reserve_s(required | optional, loads, 35.0)
    assert reserve == gpu_check.propagation_reserve_s(required, loads, 35.0)
    assert reserve < 480.0  # the default --budget-s: the propagation's sizes get a turn
    assert gpu_check.propagation_reserve_s(optional, loads, 35.0) == 0.0


def test_an_optional_load_without_its_expected_seconds_left_is_skipped_not_cut_short(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def never(*_: Any) -> dict[str, Any]:
        raise AssertionError("started with too little budget")

    monkeypatch.setattr(gpu_check, "freshness", never)
    code, doc = _run(tmp_path, "--dry-run", "--parts", "freshness_split", "--budget-s", "100")
    expected = 35.0 + gpu_check.FRESHNESS_LOAD_OVERHEAD_S + gpu_check.FRESHNESS_SEED_S
    assert expected > 100  # the default load cannot fit this budget
    assert code == 0 and doc["freshness_split"]["status"] == "not_run"
    assert f"{expected:.0f} s needed" in doc["freshness_split"]["reason"]
