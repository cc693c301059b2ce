"""bench.gil_share's reading of py-spy's raw output: samples per thread role, inclusive
samples per function of this project (counted once per sample, however deep it recurs),
samples per innermost line."""

from __future__ import annotations

from bench.gil_share import parse_raw, role

TRAINER = "thread (11): streamgnn-trainer;Thread.run (threading.py:982)"
EXECUTOR = "_worker (concurrent/futures/thread.py:83)"
RAW = "\n".join(
    [
        f"{TRAINER};learn (stream/learn/trainer.py:231);_absorb (stream/learn/trainer.py:300) 7",
        f"{TRAINER};learn (stream/learn/trainer.py:231) 3",
        f"thread (12): asyncio_0;{EXECUTOR};apply (stream/state/graph_store.py:288) 5",
        f"thread (13): asyncio_3;{EXECUTOR};walk (models/x.py:1);walk (models/x.py:2) 2",
        "thread (14): MainThread;run (asyncio/runners.py:118);_parse (stream/events.py:187) 4",
        "thread (15): Thread-7 (serve_forever);serve (socketserver.py:1) 1",
    ]
)


def test_thread_names_map_to_their_roles() -> None:
    assert role("streamgnn-trainer") == "trainer"
    assert role("asyncio_0") == role("asyncio_11") == "ingest_executor"
    assert role("MainThread") == "event_loop"
    assert role("Thread-7 (serve_forever)") == "other"
    unnamed = "thread (99)"  # py-spy could not read the name: the stack says
    assert role(unnamed, ["_worker (concurrent/futures/thread.py:83)"]) == "ingest_executor"
    assert role(unnamed, ["TrainingLoop._run (stream/training.py:366)"]) == "trainer"
    assert role("MainThread", ["submit (concurrent/futures/thread.py:175)"]) == "event_loop"


def test_samples_add_up_per_role_and_callers_include_their_callees() -> None:
    per_role, functions, lines = parse_raw(RAW)
    assert per_role == {"trainer": 10, "ingest_executor": 7, "event_loop": 4, "other": 1}
    assert functions["trainer"] == {"learn (trainer.py)": 10, "_absorb (trainer.py)": 7}
    assert functions["ingest_executor"] == {"apply (graph_store.py)": 5, "walk (x.py)": 2}
    assert "Thread.run (threading.py)" not in functions["trainer"]  # not this project's
    assert lines["trainer"] == {"_absorb (trainer.py:300)": 7, "learn (trainer.py:231)": 3}
    for who, count in per_role.items():  # each sample has one innermost line
        assert sum(lines[who].values()) == count
