"""The model methods compared by ``streamgnn eval``, each kept current on the same stream.

- ``static``: the trainer fitted once on the warm-up graph, never updated.
- ``incremental``: the same warm-up model, then :meth:`IncrementalTrainer.learn` on every
  micro-batch the store applies: the live worker's code path.
- ``retrain-decayed``: a fresh trainer fitted from scratch on the store's decayed graph
  before each chunk. Not a ceiling: it forgets what decayed away, as the live model's
  graph does; the ceiling, ``retrain``, refits on the full history
  (:mod:`stream.evaluation.retrain`).

Model methods score by the dot product of the published (L2-normalised) vectors, which
is what a downstream ranker does with them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from stream.behaviours import Behaviour
from stream.errors import ConfigError
from stream.evaluation.prequential import Method, empty_scores, score_matrix
from stream.events import Interaction
from stream.learn.trainer import IncrementalTrainer
from stream.settings.training import TrainerSettings
from stream.state.graph_store import DecayedGraphStore


@dataclass(frozen=True)
class TrainerRecipe:
    """How the model methods build and fit a trainer."""

    settings: TrainerSettings
    behaviours: dict[str, Behaviour]
    epsilon: float
    epochs: int

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs!r}")

    def fitted(self, store: DecayedGraphStore) -> IncrementalTrainer:
        """A fresh trainer fitted from scratch on the store's graph."""
        trainer = IncrementalTrainer(self.settings, self.behaviours, self.epsilon)
        trainer.bootstrap(store)
        trainer.fit(self.epochs)
        return trainer

    def resumed(self, store: DecayedGraphStore, state: Mapping[str, Any]) -> IncrementalTrainer:
        """A trainer resumed from another's state, as the worker resumes from a checkpoint."""
        trainer = IncrementalTrainer(self.settings, self.behaviours, self.epsilon)
        trainer.load_state_dict(state)
        trainer.bootstrap(store)
        return trainer


class TrainerMethod(Method):
    """A method scoring with a trainer's vectors (none yet: every score is ``-inf``)."""

    def __init__(self, recipe: TrainerRecipe) -> None:
        self.recipe = recipe
        self.trainer: IncrementalTrainer | None = None

    def scores(self, users: Sequence[str], items: Sequence[str]) -> Tensor:
        if self.trainer is None:
            return empty_scores(len(users), len(items))
        return trainer_scores(self.trainer, users, items)


class StaticModel(TrainerMethod):
    name = "static"
    updates = False

    def start(self, store: DecayedGraphStore) -> None:
        self.trainer = self.recipe.fitted(store)


class IncrementalModel(TrainerMethod):
    """Starts from the warm-up model (shared with ``static`` when both run), then learns."""

    name = "incremental"

    def __init__(
        self, recipe: TrainerRecipe, warm_start: Callable[[], IncrementalTrainer | None]
    ) -> None:
        super().__init__(recipe)
        self._warm_start = warm_start

    def start(self, store: DecayedGraphStore) -> None:
        warm = self._warm_start()
        if warm is None:
            self.trainer = self.recipe.fitted(store)
        else:
            self.trainer = self.recipe.resumed(store, warm.state_dict())

    def learn(self, store: DecayedGraphStore, batch: Sequence[Interaction]) -> None:
        if self.trainer is not None:
            self.trainer.learn(batch)


class FullRetrain(TrainerMethod):
    """A refit from scratch on the store's decayed graph before every chunk."""

    name = "retrain-decayed"

    def start(self, store: DecayedGraphStore) -> None:
        """Nothing to do: :meth:`prepare` fits from scratch before every chunk."""

    def prepare(self, store: DecayedGraphStore) -> None:
        self.trainer = None
        self.trainer = self.recipe.fitted(store)


def warm_model(static: StaticModel | None) -> Callable[[], IncrementalTrainer | None]:
    """The static method's warm-up model, when it runs before ``incremental``."""
    return lambda: static.trainer if static is not None else None


def trainer_scores(
    trainer: IncrementalTrainer, users: Sequence[str], items: Sequence[str]
) -> Tensor:
    """Dot products of the trainer's vectors; ``-inf`` for items it has no vector for."""
    user_vectors = trainer.vectors("user", list(users))
    item_vectors = trainer.vectors("item", list(items))
    known = item_vectors.norm(dim=1) > 0  # unknown ids get a zero row
    return score_matrix(user_vectors, item_vectors, known)
