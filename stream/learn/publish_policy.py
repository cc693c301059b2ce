"""Which rows a training step reports as changed, and what downstream was last given.

After every step the trainer re-embeds rows (all of them after a full step; those within
``layers`` hops of a row that moved after a local one) and asks :class:`PublishPolicy`
which to report (publish), among the re-embedded rows and those still pending:

* rows with new events of their own, always: their vectors must reflect those events,
  however little they moved;
* rows never reported since their id took the row;
* rows that moved more than ``threshold`` (L2) since they were last reported; at most
  ``max_drift`` of these per step, largest moves first (0: no cap), the rest stay
  pending for later steps so one step's drift never floods the embedding topics. A row
  outside the re-embedded set did not move, so nothing else can be due.

It also keeps, per row, the newest event time among the row's own events, which the
publisher stamps on each record. Everything lives in tensors, so :meth:`state_dict` is
the complete image a checkpoint needs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from models.ids import KINDS

NEVER_SPAN = 1 << 16  # rows read at a time looking for never-reported ones


class PublishPolicy:
    """Per-kind reported vectors, reported flags and newest own event times, by row.

    Args:
        dim: vector width.
        device: where the reported vectors live (event times stay on the CPU).
        threshold: L2 move since the last report that counts as changed.
        max_drift: rows reported per step for drift alone at most (0: no cap).
    """

    def __init__(self, dim: int, device: torch.device, threshold: float, max_drift: int) -> None:
        self.device = device
        self.threshold = threshold
        self.max_drift = max_drift
        self._reported = {k: torch.zeros(0, dim, device=device) for k in KINDS}
        self._published = {k: torch.zeros(0, dtype=torch.bool, device=device) for k in KINDS}
        # moved past the threshold, left for a later step by the drift cap
        self._pending = {k: torch.zeros(0, dtype=torch.bool, device=device) for k in KINDS}
        # each pending row's distance when it was last compared (NaN: not known, compare
        # again): its vector and reported vector have not changed since, unless it is a
        # candidate again, so a call compares only its candidates, not every pending row
        self._distance = {k: torch.zeros(0, device=device) for k in KINDS}
        # kinds whose pending rows have no known distance (restored: distances are not
        # saved), compared on their next call
        self._unknown: set[str] = set()
        # no row below this one is pending and never reported: a loaded graph's backlog is
        # found from here, not by scanning every row each call
        self._never_from = dict.fromkeys(KINDS, 0)
        self._event_ms = {k: torch.zeros(0, dtype=torch.long) for k in KINDS}

    def grow(self, kind: str, size: int) -> None:
        """Make room for ``size`` rows (new rows: never reported, no event yet)."""
        missing = size - self._event_ms[kind].numel()
        if missing > 0:
            times = self._event_ms[kind]
            self._event_ms[kind] = torch.cat([times, times.new_zeros(missing)])
        extra = size - self._published[kind].numel()
        if extra > 0:
            reported = self._reported[kind]
            self._reported[kind] = torch.cat(
                [reported, reported.new_zeros(extra, reported.shape[1])]
            )
            self._published[kind] = torch.cat(
                [self._published[kind], self._published[kind].new_zeros(extra)]
            )
        extra = size - self._pending[kind].numel()
        if extra > 0:
            self._pending[kind] = torch.cat(
                [self._pending[kind], self._pending[kind].new_zeros(extra)]
            )
        extra = size - self._distance[kind].numel()
        if extra > 0:
            distance = self._distance[kind]
            self._distance[kind] = torch.cat([distance, distance.new_full((extra,), math.nan)])

    def forget(self, kind: str, rows: Tensor) -> None:
        """Rows handed to new ids: never reported, no event yet."""
        self._published[kind][rows.to(self.device)] = False
        self._pending[kind][rows.to(self.device)] = False
        self._distance[kind][rows.to(self.device)] = math.nan
        self._event_ms[kind][rows] = 0

    def reported_rows(self, kind: str, live: int) -> Tensor:
        """The rows among the first ``live`` reported so far (sorted, on the CPU)."""
        return self._published[kind][:live].nonzero().flatten().cpu()

    def mark_reported(self, kind: str, rows: Tensor, vectors: Tensor) -> None:
        """``vectors`` of ``rows`` were given downstream again (a topic that lost them)."""
        at = rows.to(self.device)
        reported = self._reported[kind]
        reported.index_copy_(0, at, vectors.to(reported.device, reported.dtype))
        self._pending[kind][at] = False
        self._distance[kind][at] = 0.0

    def note_event_times(self, kind: str, rows: Tensor, times: Tensor) -> None:
        """Raise each row's newest own event time (refused ids, row -1, are skipped)."""
        known = rows >= 0
        self._event_ms[kind].scatter_reduce_(0, rows[known].cpu(), times[known], "amax")

    def event_times(self, kind: str, rows: Tensor) -> list[int]:
        """Newest own event time (ms) of each row (0: none yet)."""
        return self._event_ms[kind][rows.cpu().clamp(min=0)].tolist() if rows.numel() else []

    def select(
        self,
        kind: str,
        vectors: Tensor,
        touched: Tensor | None = None,
        candidates: Tensor | None = None,
    ) -> Tensor:
        """Rows to report (sorted) given the current ``vectors`` of every live row; marks
        them reported.

        ``touched`` rows (with new events) are always reported. ``candidates``: the rows
        re-embedded since the last call (None: all); only they and the pending rows can
        have moved, so only they are compared.
        """
        n = vectors.shape[0]
        reported, published = self._reported[kind][:n], self._published[kind][:n]
        pending, cached = self._pending[kind][:n], self._distance[kind][:n]
        if candidates is None:
            candidates = torch.arange(n, device=self.device)
        elif kind in self._unknown:  # and, once restored, every pending row
            candidates = torch.unique(
                torch.cat([candidates.to(self.device), pending.nonzero()[:, 0]])
            )
        else:
            candidates = torch.unique(candidates.to(self.device))
        self._unknown.discard(kind)
        # any other pending row kept its vector, reported vector and distance since it was
        # compared: only the candidates are compared again
        distance = (
            vectors.index_select(0, candidates) - reported.index_select(0, candidates)
        ).norm(dim=1)
        never = ~published[candidates]
        distance[never] = math.inf  # never reported: first in line
        if bool(never.any()):
            lowest = int(candidates[never].min())
            self._never_from[kind] = min(self._never_from[kind], lowest)
        cached[candidates] = distance
        pending[candidates] = distance > self.threshold
        chosen = self._over_threshold(kind, pending, published, cached)
        if touched is not None and touched.numel():
            chosen = torch.unique(torch.cat([chosen, touched.to(self.device)]))
        reported.index_copy_(0, chosen, vectors.index_select(0, chosen))
        published[chosen] = True
        pending[chosen] = False
        return chosen

    def _over_threshold(
        self, kind: str, pending: Tensor, published: Tensor, distance: Tensor
    ) -> Tensor:
        """The pending rows to report now (sorted): all of them, or the ``max_drift`` with
        the largest distances. Rows never reported (distance inf) come first; while at
        least ``max_drift`` of them wait (a loaded graph's backlog) those are the lowest
        of them, found from the last call's lowest without reading every row."""
        if self.max_drift:
            never = self._lowest_never(kind, pending, published)
            if never.numel() >= self.max_drift:
                return never
        rows = pending.nonzero().flatten()
        if not self.max_drift or rows.numel() <= self.max_drift:
            return rows
        top = distance.index_select(0, rows).topk(self.max_drift).indices
        return torch.sort(rows.index_select(0, top)).values

    def _lowest_never(self, kind: str, pending: Tensor, published: Tensor) -> Tensor:
        """The lowest ``max_drift`` pending rows never reported (fewer: all there are),
        read in spans from :attr:`_never_from`, which moves up to the first of them."""
        n, start = pending.numel(), self._never_from[kind]
        span = max(16 * self.max_drift, NEVER_SPAN)
        found: list[Tensor] = []
        count, end = 0, start
        while end < n and count < self.max_drift:
            begin, end = end, min(end + span, n)
            rows = (pending[begin:end] & ~published[begin:end]).nonzero().flatten() + begin
            found.append(rows)
            count += rows.numel()
        never = (
            torch.cat(found)[: self.max_drift] if found else pending.new_zeros(0, dtype=torch.long)
        )
        self._never_from[kind] = int(never[0]) if never.numel() else end
        return never

    def state_dict(self) -> dict[str, Any]:
        return {
            "reported": self._reported,
            "published": self._published,
            "pending": self._pending,
            "event_ms": self._event_ms,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume; a state without event times or pending rows (older checkpoints) starts
        them at zero / none."""
        self._reported = {k: state["reported"][k].to(self.device) for k in KINDS}
        self._published = {k: state["published"][k].to(self.device) for k in KINDS}
        pending = state.get("pending") or {}
        self._pending = {
            k: pending[k].to(self.device) if k in pending else torch.zeros_like(self._published[k])
            for k in KINDS
        }
        self._distance = {
            k: torch.full((self._published[k].numel(),), math.nan, device=self.device)
            for k in KINDS
        }
        self._unknown = set(KINDS)
        self._never_from = dict.fromkeys(KINDS, 0)
        event_ms = state.get("event_ms") or {}
        self._event_ms = {
            k: event_ms[k].clone() if k in event_ms else torch.zeros(0, dtype=torch.long)
            for k in KINDS
        }
