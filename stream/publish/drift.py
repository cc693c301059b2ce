"""Which vectors moved enough to publish again: the trainer's half of the publish split.

The trainer keeps ``published``, the last published vector of every row, as a tensor
beside its embedding table (same rows, same device, part of its checkpoint). Rows never
published hold NaN. After a step it re-embeds the rows the step touched, asks
:func:`changed_rows` which of them moved more than the threshold, publishes those rows
and copies them into ``published``.
"""

from __future__ import annotations

import torch


def changed_rows(current: torch.Tensor, published: torch.Tensor, threshold: float) -> torch.Tensor:
    """Boolean mask of rows whose L2 distance to their published vector exceeds ``threshold``.

    A row whose published vector holds NaN (never published) always counts as changed.

    >>> cur = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    >>> pub = torch.tensor([[1.0, 0.0], [float("nan")] * 2, [0.8, 0.6]])
    >>> changed_rows(cur, pub, 0.1).tolist()
    [False, True, True]
    """
    if current.shape != published.shape or current.dim() != 2:
        raise ValueError(
            f"need two [rows, dim] tensors of one shape, got {tuple(current.shape)} "
            f"and {tuple(published.shape)}"
        )
    if not threshold >= 0:
        raise ValueError(f"threshold must be >= 0, got {threshold!r}")
    distance = torch.linalg.vector_norm(current.float() - published.float(), dim=1)
    mask: torch.Tensor = torch.isnan(distance) | (distance > threshold)
    return mask
