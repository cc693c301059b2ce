"""A process's resident memory sampled over time: its peak, and its trend (least squares).

>>> rss = RssSeries(pid=0)
>>> rss.samples = [(0.0, 100 * 2**20), (60.0, 110 * 2**20), (120.0, 120 * 2**20)]
>>> rss.slope_mb_per_min(since_s=0.0), rss.peak_mb
(10.0, 120.0)
"""

from __future__ import annotations

import threading
import time

import numpy as np
import psutil


class RssSeries(threading.Thread):
    """Samples ``pid``'s RSS every ``interval_s`` as (seconds since start, bytes)."""

    def __init__(self, pid: int, interval_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, int]] = []
        self._pid = pid
        self._interval_s = interval_s
        self._halt = threading.Event()

    def run(self) -> None:
        process = psutil.Process(self._pid)
        start = time.monotonic()
        while not self._halt.wait(self._interval_s):
            try:
                self.samples.append((time.monotonic() - start, process.memory_info().rss))
            except psutil.Error:
                return

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    @property
    def peak_mb(self) -> float:
        return round(max((rss for _, rss in self.samples), default=0) / 2**20, 1)

    def slope_mb_per_min(self, since_s: float, until_s: float = float("inf")) -> float | None:
        """Least-squares slope of RSS (MB per minute) over the samples in the window."""
        window = [(t, rss) for t, rss in self.samples if since_s <= t <= until_s]
        if len(window) < 3:
            return None
        minutes = np.array([t for t, _ in window]) / 60.0
        megabytes = np.array([rss for _, rss in window]) / 2**20
        slope = np.polyfit(minutes, megabytes, 1)[0]
        return round(float(slope), 3)

    def every(self, step_s: float) -> list[tuple[float, float]]:
        """The series thinned to one sample per ``step_s`` (seconds, MB), for a report."""
        out: list[tuple[float, float]] = []
        for t, rss in self.samples:
            if not out or t - out[-1][0] >= step_s:
                out.append((round(t, 1), round(rss / 2**20, 1)))
        return out
