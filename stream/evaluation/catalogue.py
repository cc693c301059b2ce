"""The methods ``streamgnn eval`` compares, by name, and how each is built.

Baselines a ranker could use instead of the vectors (:mod:`.popularity`, :mod:`.knn`),
then the model: ``static``, ``incremental`` (:mod:`.methods`) and the ceiling
``retrain`` (:mod:`.retrain`). ``retrain-decayed`` (a refit on the decayed graph alone)
runs only when asked for. Model code is imported when a model method is built.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stream.behaviours import Behaviour
from stream.errors import ConfigError
from stream.evaluation.knn import CooccurRecent, ItemKNN
from stream.evaluation.popularity import AllTimePopularity, DecayedPopularity, RecentPopularity
from stream.evaluation.prequential import Method
from stream.settings.commands import (
    EVAL_BASELINES,
    EVAL_DEFAULT_METHODS,
    EVAL_METHODS,
    EVAL_MODELS,
    RETRAIN_EPOCHS,
    WINDOW_FRACTIONS,
)

if TYPE_CHECKING:
    from stream.evaluation.methods import StaticModel, TrainerRecipe

# The names are the settings tree's (``--methods`` is validated there).
BASELINES = EVAL_BASELINES
MODELS = EVAL_MODELS
DEFAULT_METHODS = EVAL_DEFAULT_METHODS
METHOD_NAMES = EVAL_METHODS


@dataclass(frozen=True)
class MethodOptions:
    """What the methods share with the protocol.

    Args:
        behaviours: the store's behaviours (decayed popularity reads its half-lives).
        recipe: how model methods build and fit a trainer (None: baselines only).
        retrain_epochs: the epoch budgets ``retrain`` chooses from on the warm-up.
        window_fractions: the windows ``popularity-recent`` chooses from on the warm-up.
        target_types, seed: the protocol's (validation scores the protocol's queries).
    """

    behaviours: Mapping[str, Behaviour]
    recipe: TrainerRecipe | None = None
    retrain_epochs: Sequence[int] = RETRAIN_EPOCHS
    window_fractions: Sequence[float] = WINDOW_FRACTIONS
    target_types: Collection[str] | None = None
    seed: int = 0


def check_names(names: Sequence[str]) -> None:
    unknown = [n for n in names if n not in METHOD_NAMES]
    if unknown or not names:
        raise ConfigError(f"unknown method(s) {unknown or names}; valid: {', '.join(METHOD_NAMES)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"methods must be given once each, got {list(names)}")


def build_methods(names: Sequence[str], options: MethodOptions) -> list[Method]:
    """The methods named, in the order given; the error lists the valid names."""
    check_names(names)
    out: list[Method] = []
    static: StaticModel | None = None
    for name in names:
        if name in BASELINES:
            out.append(_baseline(name, options))
            continue
        recipe = options.recipe
        if recipe is None:
            raise ConfigError(f"method {name!r} needs a trainer recipe")
        from stream.evaluation.methods import (
            FullRetrain,
            IncrementalModel,
            StaticModel,
            warm_model,
        )
        from stream.evaluation.retrain import FullHistoryRetrain

        if name == "static":
            static = StaticModel(recipe)
            out.append(static)
        elif name == "incremental":
            # starts from the static model's warm-up fit when that runs first
            out.append(IncrementalModel(recipe, warm_model(static)))
        elif name == "retrain":
            out.append(
                FullHistoryRetrain(
                    recipe, options.retrain_epochs, options.target_types, options.seed
                )
            )
        else:
            out.append(FullRetrain(recipe))
    return out


def _baseline(name: str, options: MethodOptions) -> Method:
    if name == "popularity":
        return DecayedPopularity(options.behaviours)
    if name == "popularity-recent":
        return RecentPopularity(None, options.target_types, options.seed, options.window_fractions)
    if name == "popularity-all":
        return AllTimePopularity()
    if name == "itemknn":
        return ItemKNN()
    return CooccurRecent()
