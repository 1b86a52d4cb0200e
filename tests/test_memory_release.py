"""The platform job hands memory its steps freed back to the system (orchestration/memory.py)."""

from __future__ import annotations

import threading

import psutil
import pytest

from orchestration.definitions import platform_build
from orchestration.memory import release_freed_memory, release_freed_memory_after_step

CHUNKS = 4000  # 4,000 x 64 KiB = 250 MiB, each below glibc's mmap threshold: they come from a malloc arena


def _fragment_an_arena() -> list[bytearray]:
    """Allocate the chunks in another thread (its own arena), free all but every 200th: the kept ones pin the
    freed pages between them, so glibc's automatic trim of the heap top cannot return them."""
    kept: list[bytearray] = []

    def work() -> None:
        chunks = [bytearray(64 * 1024) for _ in range(CHUNKS)]
        for chunk in chunks:  # touch every page so that it counts as resident
            chunk[::4096] = b"\x01" * len(chunk[::4096])
        kept.extend(chunks[::200])
        chunks.clear()

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    return kept


def test_freed_pages_go_back_to_the_system() -> None:
    process = psutil.Process()
    kept = _fragment_an_arena()
    before = process.memory_info().rss
    if not release_freed_memory():
        pytest.skip("this C library has no malloc_trim (not glibc)")
    after = process.memory_info().rss
    assert before - after > 150 * 1024 * 1024, (before, after)  # most of the 250 MiB freed
    assert len(kept) == CHUNKS // 200


def test_the_platform_job_releases_memory_after_every_step() -> None:
    assert release_freed_memory_after_step in platform_build.hooks
