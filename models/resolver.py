"""Encoders by name: the one table of valid names, and the resolver that reads it.

The table maps a name to ``module:Class`` so importing the resolver loads no model code;
only the encoder asked for is imported.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from models.base import Encoder
from models.errors import ModelConfigError

ENCODERS: Mapping[str, str] = MappingProxyType(
    {
        "lightgcn": "models.lightgcn:LightGCNEncoder",
        "tgn": "models.tgn:TGNEncoder",
        "sage": "models.sage:SAGEEncoder",
        "pinsage": "models.sage:PinSAGEEncoder",
        "mbgat": "models.mbgat:MultiBehaviourGATEncoder",
    }
)


def encoder_class(name: str) -> type[Encoder]:
    """The encoder class registered as ``name``; the error lists the valid names.

    >>> try:
    ...     encoder_class("nope")
    ... except ValueError as exc:
    ...     print(exc)
    unknown encoder 'nope'; valid names: lightgcn, mbgat, pinsage, sage, tgn
    """
    try:
        target = ENCODERS[name.lower()]
    except KeyError:
        valid = ", ".join(sorted(ENCODERS))
        raise ModelConfigError(f"unknown encoder {name!r}; valid names: {valid}") from None
    module, _, cls = target.partition(":")
    found: type[Encoder] = getattr(importlib.import_module(module), cls)
    return found


def encoder_resolver(name: str, num_relations: int, **kwargs: Any) -> Encoder:
    """Build the encoder registered as ``name`` (PyG's resolver idiom)."""
    return encoder_class(name)(num_relations, **kwargs)
