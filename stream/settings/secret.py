"""A password that does not print: :class:`Secret`, and the one way to read one from a file.

Kafka passwords reach streamgnn from the environment or from a file the environment
names (a mounted Kubernetes or Docker secret), never from the command line. Wrapped in a
:class:`Secret`, a password can sit in a settings object that is logged, put in an
exception or shown by a debugger without being shown itself; only the code that hands it
to a Kafka client calls :meth:`Secret.reveal`.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import NoReturn

from stream.errors import ConfigError

_MASK = "********"


class Secret:
    """A string that never appears in ``repr``, ``str``, format strings or pickles.

    >>> password = Secret("s3cret")
    >>> password, f"{password}", password.reveal()
    (Secret('********'), '********', 's3cret')
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"a Secret holds a str, got {type(value).__name__}")
        if not value:
            raise ConfigError("a password must not be empty")
        self._value = value

    def reveal(self) -> str:
        """The password itself: only for handing it to a Kafka client."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{_MASK}')"

    def __str__(self) -> str:
        return _MASK

    def __format__(self, spec: str) -> str:
        return _MASK

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, len(self._value)))

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret is not pickled (it would carry the password)")

    # Immutable: a copy (dataclasses.asdict, copy.deepcopy of settings) is the same object.
    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Secret:
        return self


def read_secret_file(path: Path, what: str) -> Secret:
    """The password in the file at ``path``, without its trailing line break.

    ``what`` names the setting in the error (never the file's contents). One trailing
    ``\\n`` or ``\\r\\n`` is dropped, as ``echo`` and most secret stores leave one.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(f"{what}: cannot read the password file {path}: {reason}") from None
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise ConfigError(f"{what}: the password file {path} is empty")
    return Secret(text)
