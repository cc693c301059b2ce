"""The one place settings are read: flags over their environment twins over the defaults.

:func:`load_settings` builds the tree from values and an environment passed in;
:func:`settings_from_args` is what every command calls, and the only code that reads the
process environment for settings. :func:`add_options` gives a command its flags, each
help line ending in the flag's environment twin.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from stream.errors import ConfigError
from stream.settings.options import OPTIONS, Option
from stream.settings.sections import Settings
from stream.settings.training import encoder_defaults
from stream.settings.values import parse_bool


def _sections(owner: type[Any], prefix: str = "") -> dict[str, type[Any]]:
    """Every section of the tree by dotted name, sub-sections (``kafka.security``) too."""
    found: dict[str, type[Any]] = {}
    hints = typing.get_type_hints(owner)
    for f in dataclasses.fields(owner):
        if dataclasses.is_dataclass(hints[f.name]):
            found[prefix + f.name] = hints[f.name]
            found.update(_sections(hints[f.name], f"{prefix}{f.name}."))
    return found


_SECTIONS = _sections(Settings)
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
    chosen["training"] = encoder_defaults(chosen["training"])
    built: dict[str, object] = {}
    for name in sorted(_SECTIONS, key=lambda n: -n.count(".")):  # sub-sections first
        parent, _, field_name = name.rpartition(".")
        (chosen[parent] if parent else built)[field_name] = _SECTIONS[name](**chosen[name])
    return Settings(**built, **chosen[""])  # type: ignore[arg-type]


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
        section = (
            functools.reduce(getattr, option.section.split("."), defaults)
            if option.section
            else defaults
        )
        default = getattr(section, option.name)
        if isinstance(default, tuple):
            default = ",".join(map(str, default))
        shown = "" if default is None or isinstance(default, Mapping) else f" ({default})"
        text = f"{option.help}{shown} [{option.env}]"
        if option.kind == "secret":  # no flag: listed with its twin in the group's text
            listed = f"{option.help} [{option.env}]"
            group.description = (
                f"{group.description}; {listed}"
                if group.description
                else f"from the environment only, never a flag: {listed}"
            )
            refused = "--" + option.name.replace("_", "-")
            group.add_argument(
                refused,
                action=_RefusedSecret,
                nargs="?",
                dest=f"refused__{option.dest}",
                help=argparse.SUPPRESS,
                twin=option.env,
            )
        elif option.kind == "switch":
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


class _RefusedSecret(argparse.Action):
    """``--sasl-password``: refused, never taken for a prefix of ``--sasl-password-file``.

    A password on a command line shows in ``ps`` and the shell's history; the error names
    where it belongs instead, and never repeats the value.
    """

    def __init__(self, *args: Any, twin: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.twin = twin

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        parser.error(
            f"{option_string} is not accepted (a password on the command line shows in ps "
            f"and the shell history): set {self.twin} or use {option_string}-file"
        )


def _parse(option: Option, raw: str) -> object:
    try:
        return (option.parse or _parser_of(option))(raw)
    except ValueError as exc:
        if option.kind == "secret":  # never echo a password, nor an error that quotes it
            raise ConfigError(f"{option.env}: not a valid password (empty?)") from None
        raise ConfigError(f"{option.flag} / {option.env}: invalid value {raw!r}") from exc


def _parser_of(option: Option) -> Callable[[str], object]:
    """The parser a field's type implies: bool, int, float, Path or str, maybe ``| None``."""
    owner = _SECTIONS[option.section] if option.section else Settings
    hint = typing.get_type_hints(owner)[option.name]
    if isinstance(hint, types.UnionType):
        (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    return _SCALARS[hint]
