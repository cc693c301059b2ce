"""The one place settings are read: flags over their environment twins over the defaults.

:func:`load_settings` builds the tree from values and an environment passed in;
:func:`settings_from_args` is what every command calls, and the only code that reads the
process environment for settings. :func:`add_options` gives a command its flags, each
help line ending in the flag's environment twin.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from stream.errors import ConfigError
from stream.settings.options import OPTIONS, Option
from stream.settings.sections import Settings
from stream.settings.values import parse_bool

_SECTIONS: dict[str, type[Any]] = {
    f.name: typing.get_type_hints(Settings)[f.name]
    for f in dataclasses.fields(Settings)
    if dataclasses.is_dataclass(typing.get_type_hints(Settings)[f.name])
}
_SCALARS: dict[type[Any], Callable[[str], object]] = {
    bool: parse_bool,
    int: int,
    float: float,
    Path: Path,
    str: str,
}


def load_settings(
    values: Mapping[str, str | None] | None = None,
    environ: Mapping[str, str] | None = None,
    options: Sequence[Option] = OPTIONS,
) -> Settings:
    """:class:`Settings` from option values (by :attr:`Option.key`) over the environment.

    Only ``options`` are read (a command's own); every other setting keeps its default.
    An explicit value wins over its environment twin, which wins over the default.

    >>> s = load_settings({"kafka.group_id": "g1"}, {"STREAMGNN_EPSILON": "0.01"})
    >>> (s.kafka.group_id, s.store.epsilon)
    ('g1', 0.01)
    """
    values = values or {}
    environ = environ or {}
    chosen: dict[str, dict[str, object]] = {name: {} for name in ("", *_SECTIONS)}
    for option in options:
        raw = values.get(option.key)
        if raw is None:
            raw = environ.get(option.env)
        if raw is None:
            continue
        chosen[option.section][option.name] = _parse(option, raw)
    sections = {name: cls(**chosen[name]) for name, cls in _SECTIONS.items()}
    return Settings(**sections, **chosen[""])  # type: ignore[arg-type]


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The settings of a parsed command line: its flags over the process environment."""
    options: Sequence[Option] = args.settings_options
    values = {option.key: getattr(args, option.dest, None) for option in options}
    return load_settings(values, os.environ, options)


def add_options(parser: argparse.ArgumentParser, options: Sequence[Option]) -> None:
    """One flag per option, grouped by section, each help showing its default and twin."""
    defaults = Settings()
    groups: dict[str, argparse._ArgumentGroup] = {}
    for option in options:
        group = groups.get(option.section)
        if group is None:
            group = groups[option.section] = parser.add_argument_group(option.section or "process")
        section = getattr(defaults, option.section) if option.section else defaults
        default = getattr(section, option.name)
        if isinstance(default, tuple):
            default = ",".join(map(str, default))
        shown = "" if default is None or isinstance(default, Mapping) else f" ({default})"
        text = f"{option.help}{shown} [{option.env}]"
        if option.kind == "switch":
            group.add_argument(
                option.flag, dest=option.dest, action="store_const", const="true", help=text
            )
        elif option.kind == "toggle":
            group.add_argument(
                option.flag, dest=option.dest, action="store_const", const="true", help=text
            )
            negated = "--no-" + option.flag.removeprefix("--")
            group.add_argument(
                negated,
                dest=option.dest,
                action="store_const",
                const="false",
                help=f"the opposite of {option.flag}",
            )
        else:
            group.add_argument(option.flag, dest=option.dest, metavar="VALUE", help=text)
    parser.set_defaults(settings_options=tuple(options))


def _parse(option: Option, raw: str) -> object:
    try:
        return (option.parse or _parser_of(option))(raw)
    except ValueError as exc:
        raise ConfigError(f"{option.flag} / {option.env}: invalid value {raw!r}") from exc


def _parser_of(option: Option) -> Callable[[str], object]:
    """The parser a field's type implies: bool, int, float, Path or str, maybe ``| None``."""
    owner = _SECTIONS[option.section] if option.section else Settings
    hint = typing.get_type_hints(owner)[option.name]
    if isinstance(hint, types.UnionType):
        (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    return _SCALARS[hint]
