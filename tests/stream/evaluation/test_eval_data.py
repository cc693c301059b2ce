"""Reading interaction files: both layouts, column choice, bad and duplicate rows, time units."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.errors import ConfigError
from stream.evaluation.data import (
    MOVIELENS,
    TableFormat,
    guess_time_unit,
    read_interactions,
    table_format,
)
from stream.settings.values import parse_column


def _write(tmp_path: Path, text: str, name: str = "log.txt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_movielens_rows_become_rating_events_in_ms_sorted_by_time(tmp_path: Path) -> None:
    path = _write(tmp_path, "196\t242\t3\t881250949\n186\t302\t4\t881250000\n")
    loaded = read_interactions(path, table_format("movielens"))
    assert [(e.user_id, e.item_id, e.ts, e.weight) for e in loaded.interactions] == [
        ("186", "302", 881_250_000_000, 4.0),
        ("196", "242", 881_250_949_000, 3.0),
    ]
    assert {e.event_type for e in loaded.interactions} == {"rating"}
    assert loaded.time_unit == "s" and not loaded.time_unit_guessed


def test_movielens_double_colon_variant(tmp_path: Path) -> None:
    path = _write(tmp_path, "1::1193::5::978300760\n1::661::3::978302109\n")
    loaded = read_interactions(path, MOVIELENS)
    assert [e.item_id for e in loaded.interactions] == ["1193", "661"]


def test_csv_columns_by_name_by_index_and_default_names(tmp_path: Path) -> None:
    text = "when,who,what,stars\n1700000000000,u1,i1,2.5\n1700000000001,u2,i2,4\n"
    path = _write(tmp_path, text)
    by_name = read_interactions(
        path, TableFormat(user_col="who", item_col="what", time_col="when", weight_col="stars")
    )
    by_index = read_interactions(
        path, TableFormat(user_col=1, item_col=2, time_col=0, weight_col=parse_column("3"))
    )
    assert by_name.interactions == by_index.interactions
    assert [e.weight for e in by_name.interactions] == [2.5, 4.0]
    assert by_name.time_unit == "ms" and by_name.time_unit_guessed
    ml25m = _write(tmp_path, "userId,movieId,rating,timestamp\n1,296,5.0,1147880044\n", "r.csv")
    (event,) = read_interactions(ml25m, TableFormat(event_type="rating")).interactions
    assert (event.user_id, event.item_id, event.ts, event.weight) == ("1", "296", 1147880044000, 1)


def test_csv_without_header_and_other_separator(tmp_path: Path) -> None:
    path = _write(tmp_path, "u1;i1;1700000005\nu2;i2;1700000006\n")
    loaded = read_interactions(path, TableFormat(sep=";", header=False))
    assert [(e.user_id, e.item_id, e.ts) for e in loaded.interactions] == [
        ("u1", "i1", 1_700_000_005_000),
        ("u2", "i2", 1_700_000_006_000),
    ]
    with pytest.raises(ConfigError, match="'who' is not a column"):
        read_interactions(path, TableFormat(sep=";", header=False, user_col="who"))


def test_duplicate_and_bad_rows_are_counted_not_fatal(tmp_path: Path) -> None:
    text = (
        "user_id,item_id,ts,w\n"
        "a,x,1700001000,1\n"
        "a,x,1700001000,1\n"  # exact duplicate
        "a,x,1700001000,2\n"  # same event, other weight: not an exact duplicate
        "b,y,soon,1\n"  # bad timestamp
        "b,y,1700001001,-1\n"  # negative weight
        "b,y,1700001002,nan\n"  # not finite
        "c,,1700001003,1\n"  # empty item id
        "d\n"  # too few fields
        "\n"  # blank lines are not rows
        "e,z,1700001004,1\n"
    )
    loaded = read_interactions(_write(tmp_path, text), TableFormat(weight_col="w"))
    assert loaded.rows == 9 and loaded.duplicates == 1
    assert dict(loaded.bad_rows) == {
        "bad_timestamp": 1,
        "bad_weight": 2,
        "bad_id": 1,
        "missing_field": 1,
    }
    assert len(loaded.interactions) + loaded.duplicates + sum(loaded.bad_rows.values()) == 9
    assert loaded.bad_examples[0].startswith("line 5: bad_timestamp")
    assert "1 exact duplicates" in loaded.summary()


def test_sort_is_stable_for_equal_times(tmp_path: Path) -> None:
    rows = "".join(f"u{i},i{i},{1_700_000_007 if i % 2 else 1_700_000_003}\n" for i in range(10))
    loaded = read_interactions(_write(tmp_path, rows), TableFormat(header=False))
    times = [e.ts for e in loaded.interactions]
    assert times == sorted(times)
    assert [e.user_id for e in loaded.interactions] == [
        f"u{i}" for i in (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)
    ]


def test_time_unit_guess_and_override(tmp_path: Path) -> None:
    assert guess_time_unit([0, 99_999_999_999]) == "s"
    assert guess_time_unit([100_000_000_000]) == "ms"
    path = _write(tmp_path, "a,x,1700000000\n")
    as_ms = read_interactions(path, TableFormat(header=False, time_unit="ms"))
    assert not as_ms.time_unit_guessed
    # Read as milliseconds that is January 1970: the event contract refuses it as seconds.
    assert not as_ms.interactions and dict(as_ms.bad_rows) == {"ts_unit": 1}


def test_bad_options_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'fortnights'"):
        TableFormat(time_unit="fortnights")
    with pytest.raises(ConfigError, match="'parquet'"):
        table_format("parquet")
    with pytest.raises(ConfigError, match="'teleport'"):
        read_interactions(_write(tmp_path, "a,b,1\n"), TableFormat(event_type="teleport"))
    with pytest.raises(ConfigError, match="--user-col"):
        read_interactions(_write(tmp_path, "who,item_id,ts\na,b,1\n"), TableFormat())


def test_retailrocket_events_map_to_the_worker_behaviours(tmp_path: Path) -> None:
    text = (
        "timestamp,visitorid,event,itemid,transactionid\n"
        "1433221332117,257597,view,355908,\n"
        "1433224214164,992329,addtocart,248676,\n"
        "1433223000000,992329,transaction,248676,4000.0\n"
        "1433224214165,1,wishlist,2,\n"
    )
    loaded = read_interactions(_write(tmp_path, text, "events.csv"), table_format("retailrocket"))
    assert [(e.user_id, e.item_id, e.event_type, e.ts) for e in loaded.interactions] == [
        ("257597", "355908", "view", 1433221332117),
        ("992329", "248676", "purchase", 1433223000000),
        ("992329", "248676", "cart", 1433224214164),
    ]
    assert dict(loaded.bad_rows) == {"unknown_event_type": 1}  # counted, not silent
    assert loaded.time_unit == "ms" and not loaded.time_unit_guessed


def test_taobao_behaviours_map_to_the_worker_behaviours(tmp_path: Path) -> None:
    text = "1,2268318,2520377,pv,1511544070\n1,2333346,2520771,fav,1511561733\n"
    text += "2,2576651,149192,cart,1511572885\n2,3830808,4181361,buy,1511593493\n"
    loaded = read_interactions(_write(tmp_path, text, "UserBehavior.csv"), table_format("taobao"))
    assert [(e.user_id, e.item_id, e.event_type) for e in loaded.interactions] == [
        ("1", "2268318", "view"),
        ("1", "2333346", "favorite"),
        ("2", "2576651", "cart"),
        ("2", "3830808", "purchase"),
    ]
    assert next(e.ts for e in loaded.interactions) == 1511544070 * 1000


def test_a_csv_event_column_is_validated_against_the_behaviours(tmp_path: Path) -> None:
    rows = "u,i,1700000001,click\nu,j,1700000002,teleport\nu,k,1700000003,purchase\n"
    path = _write(tmp_path, "user,item,ts,kind\n" + rows)
    loaded = read_interactions(path, TableFormat(event_col="kind"))
    assert [e.event_type for e in loaded.interactions] == ["click", "purchase"]
    assert dict(loaded.bad_rows) == {"unknown_event_type": 1}
    with pytest.raises(ConfigError, match="not configured"):
        read_interactions(path, TableFormat(event_col="kind", event_map=(("click", "poke"),)))


def test_a_file_no_reader_takes_is_refused_in_one_short_line(tmp_path: Path) -> None:
    """By hand: a 5 MB field ended `streamgnn produce --data` with a csv traceback, and a
    binary file's error printed its whole first "line" as the header."""
    huge = _write(tmp_path, "user,item,ts\nu1,i1,1700000000000\nu2,i2," + "9" * 200_000 + "\n")
    with pytest.raises(ConfigError, match=r"line 3: field larger than field limit"):
        read_interactions(huge, TableFormat())
    binary = tmp_path / "random.bin"
    binary.write_bytes(bytes(range(128, 256)) * 300)  # no newline, no comma: one "column"
    with pytest.raises(ConfigError, match=r"no user_col given") as raised:
        read_interactions(binary, TableFormat())
    assert len(str(raised.value)) < 600
