"""Percentile bootstrap intervals over queries.

A method's figure is the mean of a per-query metric; its 95 % interval is the 2.5th and
97.5th percentiles of that mean over :data:`RESAMPLES` resamples of the queries (drawn
with replacement, from a fixed seed). Every method is scored on the same queries, so with
the same seed every method's mean is recomputed on the same resamples: the intervals are
paired, and :func:`difference_interval` gives one for the gap between two methods.

>>> lo, hi = mean_interval([0.0, 1.0] * 50)
>>> lo < 0.5 < hi
True
>>> mean_interval([0.25] * 10)
(0.25, 0.25)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

RESAMPLES = 1_000
LEVEL = 0.95
SEED = 0
_BLOCK = 100  # resamples drawn at once (memory: _BLOCK x queries indices)


def resampled_means(
    values: Sequence[float], resamples: int = RESAMPLES, seed: int = SEED
) -> NDArray[np.float64]:
    """The mean of ``values`` over each resample (the same resamples for a given length)."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise ValueError("no values to resample")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, _BLOCK):
        size = min(_BLOCK, resamples - start)
        rows = rng.integers(0, data.size, size=(size, data.size))
        means[start : start + size] = data[rows].mean(axis=1)
    return means


def percentile_interval(means: NDArray[np.float64], level: float = LEVEL) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail])
    return float(lo), float(hi)


def mean_interval(
    values: Sequence[float], resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL
) -> tuple[float, float] | None:
    """The percentile bootstrap interval of the mean (None without values)."""
    if len(values) == 0:
        return None
    return percentile_interval(resampled_means(values, resamples, seed), level)


def difference_interval(
    a: Sequence[float],
    b: Sequence[float],
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
) -> tuple[float, float] | None:
    """Interval of ``mean(a) - mean(b)`` for paired per-query values (same queries)."""
    if len(a) != len(b):
        raise ValueError(f"paired values differ in length: {len(a)} vs {len(b)}")
    if len(a) == 0:
        return None
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return percentile_interval(resampled_means(diff.tolist(), resamples, seed), level)
