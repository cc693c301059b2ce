"""Progress bars on stderr for the commands that run a while (``eval``, ``produce``).

tqdm is an optional extra (``pip install 'streamgnn[progress]'``): without it the
commands run the same, without a bar, and say so once.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

log = logging.getLogger("streamgnn.progress")


def progress_bar(enabled: bool, total: int | None, unit: str, **options: Any) -> Any | None:
    """A tqdm bar on stderr, or ``None`` when disabled or tqdm is not installed."""
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        log.warning("no progress bar: tqdm is not installed (pip install 'streamgnn[progress]')")
        return None
    return tqdm(total=total, unit=unit, file=sys.stderr, dynamic_ncols=True, **options)
