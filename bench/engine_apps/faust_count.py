"""faust-streaming: count each event's applications in a changelog-backed table (rocksdict).

Every event carries a unique ``ts``; the table key is that ``ts``, so the folded changelog
``<GROUP>-counts-changelog`` holds one counter per event: 1 is exactly once. Configured by
the environment bench/engines.py sets (BOOTSTRAP, GROUP, TOPIC, STATE_DIR, GUARANTEE).
"""

import json
import os
import sys

import faust

app = faust.App(
    os.environ["GROUP"],
    broker=f"kafka://{os.environ['BOOTSTRAP']}",
    store="rocksdb://",
    datadir=os.environ["STATE_DIR"],
    processing_guarantee=os.environ.get("GUARANTEE", "exactly_once"),
    topic_partitions=int(os.environ["PARTITIONS"]),
    broker_session_timeout=int(os.environ["SESSION_TIMEOUT_MS"]) / 1000,
    # Faust binds its web port even with the web disabled: one free port per instance
    web_enabled=False,
    web_bind="127.0.0.1",
    web_port=int(os.environ["WEB_PORT"]),
)
events = app.topic(os.environ["TOPIC"], key_serializer="raw", value_serializer="raw")
counts = app.Table("counts", default=int, partitions=int(os.environ["PARTITIONS"]))


@app.agent(events)
async def count(stream):  # type: ignore[no-untyped-def]
    async for value in stream:
        key = str(json.loads(value)["ts"])
        counts[key] += 1


if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    app.main()
