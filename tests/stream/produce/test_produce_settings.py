"""``streamgnn produce`` settings: every option has an environment twin; flags win."""

from __future__ import annotations

import dataclasses

import pytest

from stream.errors import ConfigError
from stream.produce.settings import PRODUCE_OPTIONS, ProduceSettings, load_produce_settings


def test_every_setting_is_an_option_with_a_streamgnn_produce_twin() -> None:
    assert [o.name for o in PRODUCE_OPTIONS] == [
        f.name for f in dataclasses.fields(ProduceSettings)
    ]
    assert all(o.env == "STREAMGNN_PRODUCE_" + o.name.upper() for o in PRODUCE_OPTIONS)


def test_flag_over_environment_over_default() -> None:
    env = {"STREAMGNN_PRODUCE_RATE": "50", "STREAMGNN_PRODUCE_COUNT": "9"}
    settings = load_produce_settings({"rate": "7.5", "count": None}, env)
    assert (settings.rate, settings.count, settings.seed) == (7.5, 9, 0)
    assert load_produce_settings({}, {"STREAMGNN_PRODUCE_NO_PROGRESS": "true"}).no_progress


@pytest.mark.parametrize(
    ("values", "named"),
    [({"rate": "fast"}, "--rate / STREAMGNN_PRODUCE_RATE"), ({"rate": "-1"}, "rate"),
     ({"count": "-3"}, "count"), ({"late_share": "2"}, "late_share")],
)  # fmt: skip
def test_bad_values_name_the_option(values: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_produce_settings(values, {})
