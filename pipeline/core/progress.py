"""Progress of a long loop: tqdm on a terminal, one log line every ~30 s without one.

Without a terminal (a notebook's `!make all`, Kaggle's "Save & Run", a CI log) tqdm turns
itself off and a two-hour run would say nothing between evaluations; there each long loop logs
done/total, its rate and the time left instead.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

log = logging.getLogger("pipeline.progress")
T = TypeVar("T")
EVERY_S = 30.0


def progress(items: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it",
             every_s: float = EVERY_S, terminal: bool | None = None) -> Iterator[T]:
    """``items``, reporting as they go (``terminal``: None asks stderr)."""
    if sys.stderr.isatty() if terminal is None else terminal:
        from tqdm.auto import tqdm

        yield from tqdm(items, total=total, desc=desc, unit=unit, leave=False)
        return
    t0 = last = time.monotonic()
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= every_s:
            last = now
            rate = done / max(now - t0, 1e-9)
            if total:
                log.info("%s: %d/%d %s (%.0f%%), %.2f %s/s, about %.0fs left", desc, done, total, unit,
                         100 * done / total, rate, unit, (total - done) / max(rate, 1e-9))
            else:
                log.info("%s: %d %s, %.2f %s/s", desc, done, unit, rate, unit)
