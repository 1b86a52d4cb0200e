"""Freed memory goes back to the operating system after each step of a run (glibc's `malloc_trim`).

Why: the platform job runs its ~150 steps in one process (`in_process_executor`: dbt and the gold exports share
one DuckDB file). glibc keeps what a step freed in its per-thread arenas (DuckDB, delta-rs and polars allocate
from many threads), and the next large step works on that fragmented heap, slower and larger. Measured at 1 M
residents (bench/RESULTS.md, issue 16): `silver__renshe__social_insurance` run after three bronze steps in the
same process took 45.4 s and raised the peak to 4.08 GB; with the heap trimmed after those steps, 27.9 s and
2.85 GB (in a fresh process: 27.2 s, 2.5 GB).

`malloc_trim` is glibc's public API (there is no Python or library call for it); on a C library without it
(musl, macOS) `release_freed_memory` does nothing and says so.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from functools import cache

from dagster import HookContext, success_hook


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # the process's own symbols: glibc's on Linux
    except (AttributeError, OSError):
        return None


def release_freed_memory() -> bool:
    """Return the free pages of every malloc arena to the system; False where the C library cannot."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


@success_hook(name="release_freed_memory")
def release_freed_memory_after_step(context: HookContext) -> None:
    """After each successful step (a failed run ends anyway)."""
    release_freed_memory()
