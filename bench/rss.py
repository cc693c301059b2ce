"""Readings sampled over time (a process's resident memory, a worker's gauge): their trend
(least squares) and, for memory, the peak.

>>> rss = RssSeries(pid=0)
>>> rss.samples = [(0.0, 100 * 2**20), (60.0, 110 * 2**20), (120.0, 120 * 2**20)]
>>> rss.slope_mb_per_min(since_s=0.0), rss.peak_mb
(10.0, 120.0)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import numpy as np
import psutil

# Samples a median slope uses at most: its pairs grow with the square.
MEDIAN_SLOPE_POINTS = 1_500


class Series(threading.Thread):
    """Samples ``read()`` every ``interval_s`` as (seconds since start, value) until
    :meth:`stop`. A read raising one of ``skip`` is left out (the next may work); one raising
    one of ``end`` ends the series (what it reads is gone). ``at_start``: a first sample as
    it starts (at 0 s), for a series of totals whose first interval counts too."""

    def __init__(
        self,
        read: Callable[[], float],
        interval_s: float,
        skip: tuple[type[Exception], ...] = (),
        end: tuple[type[Exception], ...] = (),
        at_start: bool = False,
    ) -> None:
        super().__init__(daemon=True)
        self._at_start = at_start
        self.samples: list[tuple[float, float]] = []
        self._read = read
        self._interval_s = interval_s
        self._skip, self._end = skip, end
        self._halt = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        wait = 0.0 if self._at_start else self._interval_s
        while not self._halt.wait(wait):
            wait = self._interval_s
            try:
                value = self._read()
            except self._skip:
                continue
            except self._end:
                return
            self.samples.append((time.monotonic() - start, value))

    def stop(self) -> None:
        self._halt.set()
        self.join(10)

    def slope_per_min(self, since_s: float, until_s: float = float("inf")) -> float | None:
        """Least-squares slope (value per minute) over the samples in the window."""
        window = [(t, value) for t, value in self.samples if since_s <= t <= until_s]
        if len(window) < 3:
            return None
        minutes = np.array([t for t, _ in window]) / 60.0
        return float(np.polyfit(minutes, np.array([value for _, value in window]), 1)[0])

    def median_slope_per_min(self, since_s: float, until_s: float = float("inf")) -> float | None:
        """Theil-Sen slope (value per minute) over the window: the median of the slopes
        between every two samples (at most ``MEDIAN_SLOPE_POINTS``, evenly spaced). Unlike
        least squares it is not moved by short excursions (a learn call's temporaries lift
        RSS by hundreds of MB for a second and give them back) wherever they fall, as long
        as they are under ~29 % of the samples."""
        window = [(t, value) for t, value in self.samples if since_s <= t <= until_s]
        if len(window) < 3:
            return None
        step = max(1, -(-len(window) // MEDIAN_SLOPE_POINTS))
        t, v = (np.array(column, dtype=float) for column in zip(*window[::step], strict=True))
        first, second = np.triu_indices(len(t), k=1)
        apart = t[second] - t[first]
        slopes = (v[second] - v[first])[apart > 0] / apart[apart > 0]
        return float(np.median(slopes)) * 60.0 if slopes.size else None


def summed_over(
    pids: Sequence[int], measure: Callable[[psutil.Process], float]
) -> Callable[[], float]:
    """A reading of ``measure`` summed over the processes, for a :class:`Series`; the
    ``psutil.Process`` objects are made on the first read, in the sampling thread."""
    processes: list[psutil.Process] = []

    def read() -> float:
        if not processes:
            processes.extend(psutil.Process(p) for p in pids)
        return float(sum(measure(process) for process in processes))

    return read


def kernel_seconds(pids: Sequence[int], interval_s: float = 5.0) -> Series:
    """The processes' CPU seconds in the kernel so far (page faults, syscalls), summed, every
    ``interval_s``; the series ends when a process does."""
    system = summed_over(pids, lambda process: process.cpu_times().system)
    return Series(system, interval_s, end=(psutil.Error,))


def cpu_seconds(pids: Sequence[int], interval_s: float = 5.0) -> Series:
    """The processes' CPU seconds (user and kernel) so far, summed, every ``interval_s``;
    the series ends when a process does."""
    used = summed_over(pids, lambda process: sum(process.cpu_times()[:2]))
    return Series(used, interval_s, end=(psutil.Error,), at_start=True)


class RssSeries(Series):
    """``pid``'s RSS (bytes) every ``interval_s``, or the sum of several processes' (one
    deployment's); the series ends when a process does."""

    def __init__(self, pid: int | Sequence[int], interval_s: float = 0.5) -> None:
        pids = [pid] if isinstance(pid, int) else list(pid)
        rss = summed_over(pids, lambda process: process.memory_info().rss)
        super().__init__(rss, interval_s, end=(psutil.Error,))

    @property
    def peak_mb(self) -> float:
        return round(max((rss for _, rss in self.samples), default=0) / 2**20, 1)

    def slope_mb_per_min(self, since_s: float, until_s: float = float("inf")) -> float | None:
        """Least-squares slope of RSS (MB per minute) over the samples in the window."""
        slope = self.slope_per_min(since_s, until_s)
        return None if slope is None else round(slope / 2**20, 3)

    def median_slope_mb_per_min(
        self, since_s: float, until_s: float = float("inf")
    ) -> float | None:
        """Theil-Sen slope of RSS (MB per minute): the trend of what is kept, not of the
        transient peaks (see :meth:`Series.median_slope_per_min`)."""
        slope = self.median_slope_per_min(since_s, until_s)
        return None if slope is None else round(slope / 2**20, 3)

    def every(self, step_s: float) -> list[tuple[float, float]]:
        """The series thinned to one sample per ``step_s`` (seconds, MB), for a report."""
        out: list[tuple[float, float]] = []
        for t, rss in self.samples:
            if not out or t - out[-1][0] >= step_s:
                out.append((round(t, 1), round(rss / 2**20, 1)))
        return out
