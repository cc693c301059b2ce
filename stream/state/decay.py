"""Exponential time decay of edge weights, in event time.

An edge's weight at time ``t`` is ``w(t) = Σ βₖ·wₖ·2^(-(t - tₖ)/h)`` over the events
``k`` that touched it, with ``h`` the relation's half-life. The sum is kept as a pair
``(w_ref, t_ref)`` meaning "weight ``w_ref`` at time ``t_ref``", with ``t_ref`` the newest
event time seen. Every term is scaled *down* to that reference, so nothing overflows, an
update is O(1), and a late event lands exactly where it belongs:

>>> merge((0.0, 0), 1.0, 1_000, half_life_ms=1_000)
(1.0, 1000)
>>> merge((1.0, 1_000), 1.0, 0, half_life_ms=1_000)   # one half-life late
(1.5, 1000)
>>> weight_at((1.5, 1_000), 3_000, half_life_ms=1_000)
0.375
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, overload

if TYPE_CHECKING:
    from torch import Tensor

DecayedWeight = tuple[float, int]
"""``(w_ref, t_ref)``: the weight at reference event time ``t_ref`` (epoch ms)."""

# Index keys hold expiry times as unsigned 64-bit big-endian; clamp to that range.
_MAX_TIME = 2**63 - 1


@overload
def decay_factor(age_ms: float, half_life_ms: float) -> float: ...
@overload
def decay_factor(age_ms: Tensor, half_life_ms: float | Tensor) -> Tensor: ...


def decay_factor(age_ms: Any, half_life_ms: Any) -> Any:
    """``2^(-age/h)``: how much of a weight is left ``age_ms`` after it was set.

    The one decay rule: :func:`merge` and :func:`weight_at` use it on numbers, and the
    trainer's graph mirror on tensors of ages (elementwise), so both decay alike.
    """
    return 2.0 ** (-age_ms / half_life_ms)


def merge(state: DecayedWeight, amount: float, ts: int, half_life_ms: int) -> DecayedWeight:
    """Add ``amount`` at event time ``ts`` to a decayed weight; order does not matter."""
    w_ref, t_ref = state
    if ts >= t_ref:
        return (w_ref * decay_factor(ts - t_ref, half_life_ms) + amount, ts)
    return (w_ref + amount * decay_factor(t_ref - ts, half_life_ms), t_ref)


def weight_at(state: DecayedWeight, now: int, half_life_ms: int) -> float:
    """The weight at event time ``now`` (never grows for ``now`` before ``t_ref``)."""
    w_ref, t_ref = state
    if now <= t_ref:
        return w_ref
    return float(w_ref * decay_factor(now - t_ref, half_life_ms))


def is_dead(state: DecayedWeight, now: int, half_life_ms: int, epsilon: float) -> bool:
    """True when the weight at ``now`` has fallen below ``epsilon`` (the pruning rule)."""
    return weight_at(state, now, half_life_ms) < epsilon


def expiry_time(state: DecayedWeight, half_life_ms: int, epsilon: float) -> int:
    """The event time (floored, clamped to int64) at which the weight drops below epsilon.

    Used only to order the pruning index; :func:`is_dead` has the final word.

    >>> expiry_time((8.0, 0), 1_000, 1.0)
    3000
    """
    w_ref, t_ref = state
    if w_ref <= epsilon:
        return max(0, min(t_ref, _MAX_TIME))
    exp = t_ref + half_life_ms * math.log2(w_ref / epsilon)
    return max(0, min(math.floor(exp), _MAX_TIME))
