"""Choosing a method's knob (a window, an epoch budget) on the warm-up only.

The last :data:`FRACTION` of the warm-up events is held out and split into
:data:`CHUNKS` equal-count chunks; each candidate value is judged by its mean Recall@20
over those chunks' queries, scored test-then-add exactly as the protocol scores a real
chunk (:mod:`stream.evaluation.queries`). Nothing after the warm-up is ever looked at, so
changing the scored chunks cannot change the choice.

>>> from stream.events import Interaction
>>> v = split_warmup([Interaction("u", str(i), "click", i) for i in range(10)])
>>> len(v.fit), [len(c) for c in v.chunks]
(8, [1, 1])
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from stream.errors import ConfigError
from stream.evaluation.metrics import TieBreak
from stream.evaluation.queries import History, Scorer, score_queries
from stream.events import Interaction

FRACTION = 0.2  # of the warm-up events, held out for validation
CHUNKS = 4

T = TypeVar("T")


@dataclass(frozen=True)
class Validation:
    fit: list[Interaction]  # the warm-up before the held-out part
    chunks: list[list[Interaction]]  # the held-out part, scored chunk by chunk
    target_types: frozenset[str] | None = None
    seed: int = 0

    def recall(self, scorer_for: Callable[[int, Sequence[Interaction]], Scorer]) -> float:
        """Mean Recall@20 over the held-out queries (0.0 when there are none).

        ``scorer_for(i, seen)`` scores chunk ``i``; ``seen`` is every warm-up event before it.
        """
        history = History(self.target_types)
        history.add(self.fit)
        seen = list(self.fit)
        tie_break = TieBreak(self.seed)
        total = 0.0
        count = 0
        for index, chunk in enumerate(self.chunks):
            queries = history.queries(chunk)
            if queries:
                scorer = scorer_for(index, seen)
                metrics = score_queries("validation", scorer, queries, history, tie_break)
                total += sum(q.recall for q in metrics)
                count += len(metrics)
            history.add(chunk)
            seen.extend(chunk)
        return total / count if count else 0.0

    def queries(self) -> int:
        """How many held-out queries the choice rests on."""
        history = History(self.target_types)
        history.add(self.fit)
        count = 0
        for chunk in self.chunks:
            count += len(history.queries(chunk))
            history.add(chunk)
        return count


def split_warmup(
    warmup: Sequence[Interaction],
    target_types: Collection[str] | None = None,
    seed: int = 0,
    fraction: float = FRACTION,
    chunks: int = CHUNKS,
) -> Validation:
    """The warm-up split into a fitting prefix and held-out chunks (time order kept)."""
    if len(warmup) < 2:
        raise ConfigError(f"a warm-up of {len(warmup)} events is too short to validate on")
    held = min(max(1, round(len(warmup) * fraction)), len(warmup) - 1)
    cut = len(warmup) - held
    n = min(chunks, held)
    bounds = [cut + (held * i) // n for i in range(n + 1)]
    return Validation(
        list(warmup[:cut]),
        [list(warmup[a:b]) for a, b in itertools.pairwise(bounds)],
        None if target_types is None else frozenset(target_types),
        seed,
    )


def choose(grid: Sequence[T], recall_of: Callable[[T], float]) -> tuple[T, dict[str, Any]]:
    """The grid value with the best validation recall (the first on a tie) and a record."""
    if not grid:
        raise ConfigError("a tuning grid needs at least one value")
    recalls = [recall_of(value) for value in grid]
    best = max(range(len(grid)), key=lambda i: (recalls[i], -i))
    record = {"grid": list(grid), "validation_recall@20": recalls, "chosen": grid[best]}
    return grid[best], record
