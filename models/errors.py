"""The exceptions the model library raises on purpose.

``models`` is a library: it knows nothing of the application that composes it, so it
has its own small hierarchy. :class:`ModelConfigError` is a ``ValueError`` (a bad
argument, and the message names it); the application translates it into its own
configuration error where it builds models from its settings.
"""


class ModelError(Exception):
    """Base class of every error the model library raises on purpose."""


class ModelConfigError(ModelError, ValueError):
    """A model argument has a value outside its valid range; the message names it."""


def check_positive(**values: int) -> None:
    """Raise :class:`ModelConfigError` naming the first value that is not > 0.

    >>> check_positive(dim=0)
    Traceback (most recent call last):
    ...
    models.errors.ModelConfigError: dim must be > 0, got 0
    """
    for name, value in values.items():
        if value <= 0:
            raise ModelConfigError(f"{name} must be > 0, got {value!r}")
