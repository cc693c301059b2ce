"""File replay: the eval reader's events, in time order, with the file's times."""

from __future__ import annotations

from pathlib import Path

from stream.evaluation.data import TableFormat, read_interactions
from stream.events import EventValidator, Interaction
from stream.produce import encode_event, replay_events
from stream.settings import EventSettings


def test_replayed_events_are_the_files_valid_rows_sorted_by_time(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    rows = "b,y,1700000020,4\na,x,1700000010,1\nc,,1700000015,2\na,z,1700000030,2.5\n"
    path.write_text("user,item,ts,stars\n" + rows)
    loaded = read_interactions(path, TableFormat(weight_col="stars", event_type="rating"))
    events = list(replay_events(loaded.interactions))
    assert [(e["user_id"], e["ts"]) for e in events] == [
        ("a", 1_700_000_010_000),
        ("b", 1_700_000_020_000),
        ("a", 1_700_000_030_000),
    ]
    assert [e.get("weight") for e in events] == [None, 4.0, 2.5]  # weight 1 is the default
    validator = EventValidator(EventSettings())
    parsed = [validator.parse(*encode_event(e)) for e in events]
    assert parsed == loaded.interactions
    assert all(isinstance(p, Interaction) for p in parsed)
