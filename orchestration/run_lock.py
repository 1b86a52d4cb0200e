"""One platform run at a time per warehouse, by design.

Two runs on one warehouse would race for the same Delta commits, the DuckDB file and the summary's
batches (on S3 the Delta log is committed without a lock table: one writer is the platform's rule). So
`yiwang run` takes a lock first, and a second run refuses in one line, saying who holds it (pid, host,
command) and since when (CST), with exit code `LOCKED`.

- **Local warehouse:** an exclusive `flock` on `<warehouse>/ops/run.lock`. The kernel releases it when
  its process ends, however it ends, so a killed run leaves no stale lock.
- **Object store (`s3://`):** a lease object `<warehouse>/ops/run.lock`, created with a conditional put
  (`If-None-Match: *`, atomic on S3 and S3-compatible stores) so that one run wins across machines. The
  holder renews it every third of `YIWANG_RUN_LOCK_TTL_S` (120 s) with `If-Match` on its own version; a
  killed run stops renewing, and once its lease has expired the next run takes it over with `If-Match`
  on the expired version, so two runs taking over at once cannot both win.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from ingestion.keys import CST

LOCKED = 3  # exit code of a run that found another one holding the warehouse


class RunLockHeld(RuntimeError):
    """Another live run holds the warehouse."""


def lock_path(warehouse: str) -> Path:
    return Path(warehouse.removeprefix("file://")) / "ops" / "run.lock"


def _me() -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": datetime.now(CST).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def _held_message(warehouse: str, holder: dict) -> str:
    return (
        f"another run holds the warehouse {warehouse}: pid {holder.get('pid', '?')} on {holder.get('host', '?')} "
        f"since {holder.get('since', '?')} ({holder.get('command', 'yiwang run')}); wait for it to finish"
    )


def _holder(handle) -> dict:
    handle.seek(0)
    try:
        return json.loads(handle.read() or "{}")
    except ValueError:
        return {}


_HELD: set[str] = set()  # warehouses whose lock this process holds: taking it again is a no-op


@contextlib.contextmanager
def run_lock(warehouse: str) -> Iterator[str]:
    """Hold the warehouse's run lock for the block; RunLockHeld (one line) when another run has it.

    Re-entrant within a process: `yiwang run` takes it before the Dagster run, whose platform resource
    takes it again (the same lock guards runs started from the Dagster UI, sensor or schedule)."""
    if warehouse in _HELD:
        yield warehouse
        return
    _HELD.add(warehouse)
    try:
        with _acquire(warehouse) as where:
            yield where
    finally:
        _HELD.discard(warehouse)


@contextlib.contextmanager
def _acquire(warehouse: str) -> Iterator[str]:
    if warehouse.startswith(("s3://", "s3a://")):
        with _s3_lease(warehouse) as where:
            yield where
        return
    path = lock_path(warehouse)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held open for the whole block)
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLockHeld(_held_message(warehouse, _holder(handle))) from None
        handle.seek(0)
        handle.truncate()
        json.dump(_me(), handle, ensure_ascii=False)
        handle.flush()
        yield str(path)
    finally:
        handle.close()  # releases the lock


def lease_seconds() -> float:
    return float(os.environ.get("YIWANG_RUN_LOCK_TTL_S", "120"))


@contextlib.contextmanager
def _s3_lease(warehouse: str) -> Iterator[str]:
    import boto3
    from botocore.exceptions import ClientError

    bucket, _, prefix = warehouse.split("://", 1)[1].partition("/")
    key = f"{prefix.rstrip('/')}/ops/run.lock".lstrip("/")
    client = boto3.client("s3")
    ttl = lease_seconds()

    def body() -> bytes:
        return json.dumps({**me, "expires": time.time() + ttl}, ensure_ascii=False).encode()

    def refused(error: ClientError) -> bool:
        return error.response.get("Error", {}).get("Code") in (
            "PreconditionFailed",
            "412",
            "ConditionalRequestConflict",
        )

    me = _me()
    try:
        etag = client.put_object(Bucket=bucket, Key=key, Body=body(), IfNoneMatch="*")["ETag"]
    except ClientError as error:
        if not refused(error):
            raise
        current = client.get_object(Bucket=bucket, Key=key)
        holder = json.loads(current["Body"].read() or b"{}")
        if float(holder.get("expires", 0)) > time.time():
            raise RunLockHeld(_held_message(warehouse, holder)) from None
        try:  # the holder stopped renewing (killed): take the lease over, only if nobody did first
            etag = client.put_object(Bucket=bucket, Key=key, Body=body(), IfMatch=current["ETag"])["ETag"]
        except ClientError as lost:
            if not refused(lost):
                raise
            raise RunLockHeld(_held_message(warehouse, holder)) from None
    stop = threading.Event()
    state = {"etag": etag}

    def renew() -> None:
        while not stop.wait(ttl / 3):
            with contextlib.suppress(ClientError):
                state["etag"] = client.put_object(Bucket=bucket, Key=key, Body=body(), IfMatch=state["etag"])["ETag"]

    renewer = threading.Thread(target=renew, name="run-lock-lease", daemon=True)
    renewer.start()
    try:
        yield f"s3://{bucket}/{key}"
    finally:
        stop.set()
        renewer.join()
        with contextlib.suppress(ClientError):
            if client.head_object(Bucket=bucket, Key=key)["ETag"] == state["etag"]:
                client.delete_object(Bucket=bucket, Key=key)
