"""``streamgnn eval`` end to end on a tiny file: table, JSON report, plot."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from stream.behaviours import DEFAULT_BEHAVIOURS
from stream.cli import main
from stream.evaluation.catalogue import DEFAULT_METHODS
from stream.settings.values import parse_duration

TINY_TRAINER = ["--dim", "8", "--batch-size", "64", "--layers", "1"]


def _log(tmp_path: Path) -> Path:
    """Two taste groups of users, each preferring its own items; timestamps in seconds."""
    rng = random.Random(0)
    lines = ["ts;who;what;stars"]
    for t in range(600):
        user = rng.randrange(30)
        group = user % 2
        item = 2 * rng.randrange(15) + group
        lines.append(f"{1_600_000_000 + t * 60};u{user};i{item};{rng.randint(1, 5)}")
    path = tmp_path / "log.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_eval_writes_json_and_plot_and_prints_a_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report, figure = tmp_path / "out" / "r.json", tmp_path / "out" / "r.png"
    argv = ["eval", "--data", str(_log(tmp_path)), "--sep", ";", "--user-col", "who"]
    argv += ["--item-col", "what", "--time-col", "0", "--weight-col", "stars"]
    argv += ["--chunks", "3", "--epochs", "2", "--micro-batch", "50", "--no-progress"]
    argv += [*TINY_TRAINER, "--json", str(report), "--plot", str(figure)]
    assert main(argv) == 0
    document = json.loads(report.read_text())
    assert document["encoder"] == "lightgcn"
    assert document["dataset"]["events"] == 600 and document["dataset"]["time_unit"] == "s"
    assert {"machine", "date", "chunks", "protocol", "trainer"} <= document.keys()
    assert list(document["methods"]) == list(DEFAULT_METHODS)
    assert {"popularity-recent", "itemknn", "cooccur-recent", "retrain"} <= set(DEFAULT_METHODS)
    for method in document["methods"].values():
        assert {"recall@20", "ndcg@20", "mrr", "seconds", "cpu_seconds", "cold", "warm"} <= set(
            method
        )
        for metric in ("recall@20", "ndcg@20", "mrr"):
            lo, hi = method[f"{metric}_ci95"]
            assert 0.0 <= lo <= method[metric] <= hi <= 1.0
        assert len(method["per_chunk"]) == 3
        assert all(0.0 <= c["recall@20"] <= 1.0 for c in method["per_chunk"])
    tuning = {name: m["tuning"] for name, m in document["methods"].items()}
    assert tuning["popularity-recent"]["window_events"] in tuning["popularity-recent"]["grid"]
    assert tuning["retrain"]["epochs"] in tuning["retrain"]["grid"] == [5, 10, 20, 40]
    assert "vs_best_baseline" in document["methods"]["incremental"]
    assert document["command"].startswith("streamgnn eval --data")
    # the same queries for every method
    assert len({m["queries"] for m in document["methods"].values()}) == 1
    assert document["methods"]["static"]["seconds"] == 0.0  # never updated after warm-up
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "recall@20" in out and "incremental" in out


def test_an_encoders_figures_do_not_depend_on_the_methods_beside_it(tmp_path: Path) -> None:
    # sage draws its id rows and layer weights from torch's generator; static and retrain
    # draw from it too, before and between incremental's draws
    data = _log(tmp_path)
    figures = []
    for methods in ("static,incremental,retrain", "incremental"):
        report = tmp_path / f"{methods}.json"
        argv = ["eval", "--data", str(data), "--sep", ";", "--user-col", "who"]
        argv += ["--item-col", "what", "--time-col", "0", "--chunks", "2", "--epochs", "1"]
        argv += ["--micro-batch", "100", "--no-progress", "--encoder", "sage", *TINY_TRAINER]
        argv += ["--methods", methods, "--json", str(report)]
        assert main(argv) == 0
        chunks = json.loads(report.read_text())["methods"]["incremental"]["per_chunk"]
        figures.append([(c["queries"], c["recall@20"], c["ndcg@20"], c["mrr"]) for c in chunks])
    assert figures[0] == figures[1]


def test_the_report_records_the_graph_it_ran_on(tmp_path: Path) -> None:
    report, defaults = tmp_path / "given.json", tmp_path / "defaults.json"
    argv = ["eval", "--data", str(_log(tmp_path)), "--sep", ";", "--user-col", "who"]
    argv += ["--item-col", "what", "--time-col", "ts", "--methods", "popularity", "--no-progress"]
    given = ["--behaviours", '{"click": {"beta": 2, "half_life_ms": 5000}}', "--epsilon", "0.01"]
    assert main([*argv, *given, "--json", str(report)]) == 0
    assert main([*argv, "--json", str(defaults)]) == 0
    graph = json.loads(report.read_text())["graph"]
    assert graph == {"behaviours": {"click": {"beta": 2.0, "half_life_ms": 5000}}, "epsilon": 0.01}
    recorded = json.loads(defaults.read_text())["graph"]["behaviours"]
    assert recorded == {
        name: {"beta": b.beta, "half_life_ms": b.half_life_ms}
        for name, b in DEFAULT_BEHAVIOURS.items()
    }


def test_eval_popularity_only_by_duration(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    argv = ["eval", "--data", str(_log(tmp_path)), "--sep", ";", "--user-col", "who"]
    argv += ["--item-col", "what", "--time-col", "ts", "--methods", "popularity"]
    argv += ["--chunk-duration", "1h", "--no-progress", "--json", str(report)]
    assert main(argv) == 0
    document = json.loads(report.read_text())
    assert list(document["methods"]) == ["popularity"]
    chunks = document["chunks"]
    assert all(c["end_ts"] - c["start_ts"] < 3_600_000 for c in chunks)
    assert sum(c["events"] for c in chunks) + document["warmup_events"] == 600


def test_target_types_score_only_those_events(tmp_path: Path) -> None:
    rng = random.Random(1)
    lines = ["visitorid,itemid,timestamp,kind"]
    for t in range(800):
        kind = "view" if rng.random() < 0.8 else "cart"
        lines.append(f"u{rng.randrange(40)},i{rng.randrange(30)},{1_600_000_000_000 + t},{kind}")
    path = tmp_path / "shop.csv"
    path.write_text("\n".join(lines) + "\n")
    documents = []
    for extra in ([], ["--target-types", "cart"]):
        report = tmp_path / f"r{len(extra)}.json"
        argv = ["eval", "--data", str(path), "--event-col", "kind", "--chunks", "2"]
        argv += ["--methods", "popularity-all,itemknn", "--no-progress", "--json", str(report)]
        assert main(argv + extra) == 0
        documents.append(json.loads(report.read_text()))
    every, carts = documents
    assert carts["protocol"]["target_types"] == ["cart"]
    assert every["dataset"]["event_types"] == carts["dataset"]["event_types"]
    assert 0 < carts["methods"]["itemknn"]["queries"] < every["methods"]["itemknn"]["queries"]


def test_the_new_eval_options_have_environment_twins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The target types, the tuning grids and the resamples come from the settings tree:
    set by their ``STREAMGNN_EVAL_*`` twins here, recorded in the report and its command."""
    monkeypatch.setenv("STREAMGNN_EVAL_TARGET_TYPES", "rating")
    monkeypatch.setenv("STREAMGNN_EVAL_WINDOW_FRACTIONS", "0.1,0.5")
    monkeypatch.setenv("STREAMGNN_EVAL_BOOTSTRAP_RESAMPLES", "50")
    report = tmp_path / "r.json"
    argv = ["eval", "--data", str(_log(tmp_path)), "--sep", ";", "--user-col", "who"]
    argv += ["--item-col", "what", "--time-col", "0", "--event-type", "rating", "--chunks", "2"]
    argv += ["--methods", "popularity-recent", "--no-progress", "--json", str(report)]
    assert main(argv) == 0
    document = json.loads(report.read_text())
    assert document["protocol"]["target_types"] == ["rating"]
    assert document["bootstrap"]["resamples"] == 50
    tuning = document["methods"]["popularity-recent"]["tuning"]
    assert tuning["window_fractions"] == [0.1, 0.5]
    assert tuning["window_events"] in tuning["grid"] and len(tuning["grid"]) == 2
    command = document["command"]
    assert "--target-types rating" in command and "--window-fractions 0.1,0.5" in command
    assert "--bootstrap-resamples 50" in command and "--methods popularity-recent" in command


def test_bad_options_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each ends the command with exit status 2 and a last line naming it, no traceback."""

    def refused(argv: list[str]) -> str:
        assert main(argv) == 2
        err = capsys.readouterr().err
        line = err.strip().splitlines()[-1]  # after the data's summary, if it was read
        assert line.startswith("streamgnn eval: ") and "Traceback" not in err
        return line

    data = ["eval", "--data", str(_log(tmp_path)), "--sep", ";", "--no-progress"]
    assert re.search("'nearest'", refused([*data, "--methods", "nearest"]))
    assert re.search("--dim / STREAMGNN_DIM", refused([*data, "--dim", "red"]))
    assert re.search("--user-col", refused([*data, "--methods", "popularity"]))
    assert re.search(
        "not behaviours",
        refused([*data, "--user-col", "who", "--item-col", "what", "--target-types", "carts"]),
    )
    assert re.search("fixed layout", refused([*data, "--format", "retailrocket"]))
    assert re.search("retrain-epochs", refused([*data, "--retrain-epochs", "ten"]))
    assert re.search("retrain-epochs", refused([*data, "--retrain-epochs", "0,5"]))
    assert re.search("window-fractions", refused([*data, "--window-fractions", "0.5,2"]))
    assert re.search("bootstrap-resamples", refused([*data, "--bootstrap-resamples", "0"]))
    assert re.search("chunk-duration", refused([*data, "--chunk-duration", "soon"]))
    assert parse_duration("2w") == 14 * 86_400_000
