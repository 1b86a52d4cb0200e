"""One platform run at a time per warehouse, by design.

Two runs on one warehouse would race for the same Delta commits, the DuckDB file and the summary's
batches; the data stays right (application transactions), but both fail noisily. So `yiwang run` takes
a lock first: an exclusive `flock` on a small file that also says who holds it (pid, host, command) and
since when (CST). A second run finds the lock taken and refuses in one line (exit code `LOCKED`). The
kernel releases a `flock` when its process ends, however it ends, so a killed run leaves no stale lock:
the next run simply takes it.

- A local warehouse keeps its lock at `<warehouse>/ops/run.lock`.
- An object-store warehouse (`s3://...`) keeps it under `YIWANG_HOME/locks/`, one file per warehouse
  URI: it serialises the runs started from this machine (or from machines sharing that folder). Runs
  from other machines against the same bucket are not locked out here.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from thematic_libs.dispatch.keys import CST

LOCKED = 3  # exit code of a run that found another one holding the warehouse


class RunLockHeld(RuntimeError):
    """Another live run holds the warehouse."""


def lock_path(warehouse: str, home: Path) -> Path:
    if "://" in warehouse and not warehouse.startswith("file://"):
        digest = hashlib.sha256(warehouse.encode()).hexdigest()[:16]
        return home / "locks" / f"run-{digest}.lock"
    return Path(warehouse.removeprefix("file://")) / "ops" / "run.lock"


def _holder(handle) -> dict:
    handle.seek(0)
    try:
        return json.loads(handle.read() or "{}")
    except ValueError:
        return {}


@contextlib.contextmanager
def run_lock(warehouse: str, home: Path) -> Iterator[Path]:
    """Hold the warehouse's run lock for the block; RunLockHeld (one line) when another run has it."""
    path = lock_path(warehouse, home)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held open for the whole block)
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(handle)
            raise RunLockHeld(
                f"another run holds the warehouse {warehouse}: pid {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')} since {holder.get('since', '?')} ({holder.get('command', 'yiwang run')}); "
                "wait for it to finish"
            ) from None
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now(CST).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        }
        handle.seek(0)
        handle.truncate()
        json.dump(me, handle, ensure_ascii=False)
        handle.flush()
        yield path
    finally:
        handle.close()  # releases the lock
