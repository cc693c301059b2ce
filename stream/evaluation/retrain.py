"""``retrain``: the quality ceiling, the same encoder refit from scratch on the full history.

The live graph forgets: an edge whose decayed weight falls below epsilon is pruned, so a
refit on it is no ceiling. This method keeps a second graph store, fed the same events,
whose behaviours keep their weights but have half-lives of :data:`FOREVER_MS` (1,000
years): nothing decays measurably and nothing is pruned (:class:`HistoryStore`). Before
every chunk a fresh trainer (the same :class:`~stream.evaluation.methods.TrainerRecipe`,
with those behaviours) is fitted on it from scratch.

The epoch budget is chosen on the warm-up only: one fit per value of the grid on the
warm-up's fitting prefix, judged by Recall@20 on its held-out chunks
(:mod:`stream.evaluation.validation`). The validation fits are counted in the method's
warm-up seconds.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from stream.behaviours import Behaviour
from stream.evaluation.methods import TrainerMethod, TrainerRecipe, trainer_scores
from stream.evaluation.prequential import apply_events
from stream.evaluation.queries import Scorer
from stream.evaluation.validation import choose, split_warmup
from stream.events import Interaction
from stream.state.graph_store import DecayedGraphStore

FOREVER_MS = 1_000 * 365 * 86_400_000
_WRITE_BATCH = 5_000


def full_history_behaviours(behaviours: Mapping[str, Behaviour]) -> dict[str, Behaviour]:
    """The same behaviours and weights with half-lives of :data:`FOREVER_MS`."""
    return {name: dataclasses.replace(b, half_life_ms=FOREVER_MS) for name, b in behaviours.items()}


class HistoryStore:
    """A graph store in a temporary directory that keeps every edge it is fed."""

    def __init__(self, behaviours: Mapping[str, Behaviour], epsilon: float) -> None:
        self.behaviours = full_history_behaviours(behaviours)
        self._dir = tempfile.TemporaryDirectory(prefix="streamgnn-history-")
        self.store = DecayedGraphStore(Path(self._dir.name) / "graph", self.behaviours, epsilon)
        self._offset = 0

    def add(self, events: Sequence[Interaction]) -> None:
        self._offset = apply_events(self.store, events, _WRITE_BATCH, self._offset)

    def close(self) -> None:
        self.store.close()
        self._dir.cleanup()


class FullHistoryRetrain(TrainerMethod):
    """Refit from scratch on the full history before every chunk; see the module docstring.

    Args:
        recipe: the trainer settings; its ``epochs`` is used when ``epoch_grid`` has one value.
        epoch_grid: epoch budgets to choose from on the warm-up.
        target_types, seed: the protocol's, so the validation queries are its queries.
    """

    name = "retrain"

    def __init__(
        self,
        recipe: TrainerRecipe,
        epoch_grid: Sequence[int],
        target_types: Collection[str] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(
            dataclasses.replace(recipe, behaviours=full_history_behaviours(recipe.behaviours))
        )
        self.epoch_grid = list(epoch_grid)
        self._target_types = target_types
        self._seed = seed
        self._history: HistoryStore | None = None
        self._tuning: dict[str, Any] = {}

    def warmup(self, events: Sequence[Interaction]) -> None:
        if len(self.epoch_grid) > 1:
            epochs, self._tuning = self._choose_epochs(events)
            self.recipe = dataclasses.replace(self.recipe, epochs=epochs)
        elif self.epoch_grid:
            self.recipe = dataclasses.replace(self.recipe, epochs=self.epoch_grid[0])
        self._history = HistoryStore(self.recipe.behaviours, self.recipe.epsilon)
        self._history.add(events)

    def _choose_epochs(self, events: Sequence[Interaction]) -> tuple[int, dict[str, Any]]:
        validation = split_warmup(events, self._target_types, self._seed)
        prefix = HistoryStore(self.recipe.behaviours, self.recipe.epsilon)
        try:
            prefix.add(validation.fit)

            def recall(epochs: int) -> float:
                trainer = dataclasses.replace(self.recipe, epochs=epochs).fitted(prefix.store)
                scorer: Scorer = lambda users, items: trainer_scores(trainer, users, items)  # noqa: E731
                return validation.recall(lambda _, seen: scorer)

            epochs, record = choose(self.epoch_grid, recall)
        finally:
            prefix.close()
        record["validation_queries"] = validation.queries()
        return epochs, record

    def start(self, store: DecayedGraphStore) -> None:
        """Nothing to do: :meth:`prepare` fits from scratch before every chunk."""

    def prepare(self, store: DecayedGraphStore) -> None:
        if self._history is None:
            raise RuntimeError("retrain has no history: warmup() was not called")
        self.trainer = None
        self.trainer = self.recipe.fitted(self._history.store)

    def learn(self, store: DecayedGraphStore, batch: Sequence[Interaction]) -> None:
        if self._history is not None:
            self._history.add(batch)

    def close(self) -> None:
        self.trainer = None
        if self._history is not None:
            self._history.close()
            self._history = None

    def describe(self) -> dict[str, Any]:
        return {
            "history": "full",
            "half_life_ms": FOREVER_MS,
            "epochs": self.recipe.epochs,
            **self._tuning,
        }
