"""Quix Streams: count each event's applications in a changelog-backed RocksDB state.

Every event carries a unique ``ts``; the state key is that ``ts`` under the record's key, so
the folded changelog holds one counter per event: 1 is exactly once. Configured by the
environment bench/engines.py sets (BOOTSTRAP, GROUP, TOPIC, STATE_DIR, GUARANTEE).
"""

import os

from quixstreams import Application


def count(value: dict, state) -> None:  # type: ignore[no-untyped-def]
    key = str(value["ts"])
    state.set(key, state.get(key, 0) + 1)


def main() -> None:
    app = Application(
        broker_address=os.environ["BOOTSTRAP"],
        consumer_group=os.environ["GROUP"],
        auto_offset_reset="earliest",
        processing_guarantee=os.environ.get("GUARANTEE", "exactly-once"),
        state_dir=os.environ["STATE_DIR"],
        # the same session timeout as streamgnn's worker in this bench (Quix: 45 s default)
        consumer_extra_config={"session.timeout.ms": int(os.environ["SESSION_TIMEOUT_MS"])},
    )
    topic = app.topic(os.environ["TOPIC"], key_deserializer="str", value_deserializer="json")
    app.dataframe(topic).update(count, stateful=True)
    app.run()


if __name__ == "__main__":
    main()
