"""The Delta Sharing server (一网共享接口): the open Delta Sharing REST protocol over the share orders' deliveries.

Any Delta Sharing client (the official Python connector, Spark, Power BI, pandas) reads a department's data
with the profile file `yiwang share profile` writes; the endpoint is `http://HOST:PORT/delta-sharing`.

Mapping: one share per department, named after its code (`weijian`); a department sees its own share
only. Its schemas and tables are the dataset ids (`<schema>.<table>`) of its ACTIVE orders, the table id
is the order id, and a table's data is the order's delivery `share/deliveries/<order_id>` (granted
columns only, rows filtered, sensitive columns masked: nothing else exists to be served).

Why the server reads the Delta log itself instead of asking deltalake for a snapshot: the protocol hands
out the log's own actions (`add`, `remove`, `cdc` with their stats) and commit timestamps, which
deltalake does not expose as they are; and a snapshot is immutable per version, so it is read once and
cached, while "has the table moved?" is one stat() of the next commit file. That keeps a metadata
request well under a millisecond of server time.

Security: every protocol request needs the department's bearer token (`ops/share_tokens`, re-read as soon
as it moves, so a revoked token stops at the next request); a share, schema or table the department may
not see answers exactly like one that does not exist. Data files are fetched through pre-signed URLs
`/delta-sharing/files/<order_id>/<path>?exp=..&sig=..` (HMAC over order, path and expiry): the URL needs
no token, as the protocol's clients expect, but it stops working the moment its order is revoked or
expired, and it only ever opens a Parquet data or change-data file inside that order's delivery folder.

Metering: every request, refusals included, is one row of `ops/share_access_log` (`AccessLog.record`).
Errors: the protocol's JSON `{"errorCode", "message"}`; client input never causes a 5xx.

A background thread keeps the deliveries current (`refresh_deliveries`): approved orders become active,
deliveries follow their sources, revoked and expired ones are dropped.

Response formats: `parquet` (what every client reads, and what the official Python client settles on when it
offers both), or `delta` when a client accepts only that. The Python client's own delta-format reader
(delta-kernel) fetches pre-signed URLs over https only, so behind plain http it must use parquet (its default).

The warehouse must be a local folder: data files are served from the delivery folders.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import math
import os
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

import pyarrow.parquet as pq
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from ingestion.keys import CST
from thematic_libs.sharing import DEFAULT_PORT
from thematic_libs.sharing.datasets import DatasetError, get_dataset
from thematic_libs.sharing.deliveries import delivered_columns, delivery_table, refresh_deliveries
from thematic_libs.sharing.orders import AUDIT, ORDER_ID_PATTERN, Order, expire_due
from thematic_libs.sharing.state import ShareState
from thematic_libs.sharing.tokens import TokenError, parse_token

if TYPE_CHECKING:
    from ingestion.settings import Settings

try:  # orjson comes with dagster-dbt; the standard library does the same, a little slower
    import orjson

    def _dumps(value: Any) -> bytes:
        return orjson.dumps(value)

    def _loads(text: bytes | str) -> Any:
        return orjson.loads(text)

except ImportError:  # pragma: no cover - exercised only without orjson

    def _dumps(value: Any) -> bytes:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def _loads(text: bytes | str) -> Any:
        return json.loads(text)


PREFIX = "/delta-sharing"

MAX_BODY_BYTES = 64 * 1024
MAX_RESULTS = 1000  # a page never holds more, whatever maxResults says
MAX_PREDICATE_DEPTH = 40
MAX_PREDICATE_NODES = 2000
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
NDJSON = "application/x-ndjson; charset=utf-8"
SHARE_NAMESPACE = uuid.UUID("6f1d3c4e-5b2a-4e8f-9a7d-2c1b0e9f8a7d")
_NAME = re.compile(r"^[a-z0-9_]{1,100}$")
_INTEGER = re.compile(r"^-?[0-9]{1,19}$")
_HOST = re.compile(r"^[A-Za-z0-9.\-\[\]:]{1,255}$")
_COMMIT_FILE = re.compile(r"^(\d{20})\.json$")
_CHECKPOINT_FILE = re.compile(r"^(\d{20})\.checkpoint(?:\.(\d{10})\.(\d{10}))?\.parquet$")
log = logging.getLogger(__name__)


# --- errors -------------------------------------------------------------------------------------


class Refusal(Exception):
    """A request the server answers with a 4xx: what the client is told, and the reason kept in the log."""

    def __init__(self, status: int, code: str, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.reason = reason or message


def _bad(message: str) -> Refusal:
    return Refusal(400, "INVALID_PARAMETER_VALUE", message)


def _not_found(message: str, reason: str | None = None) -> Refusal:
    return Refusal(404, "RESOURCE_DOES_NOT_EXIST", message, reason)


def _forbidden(message: str, reason: str | None = None) -> Refusal:
    return Refusal(403, "PERMISSION_DENIED", message, reason)


def _error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(
        _dumps({"errorCode": code, "message": message}),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


# --- reading a Delta log ------------------------------------------------------------------------


@dataclass(frozen=True)
class Commit:
    """One commit of a Delta table: its actions as written, and its time (ms since the epoch)."""

    version: int
    timestamp: int
    actions: tuple[dict, ...]


@dataclass
class Snapshot:
    """A table as of one version: protocol, metadata and the live `add` actions (by path, in log order)."""

    version: int
    timestamp: int
    protocol: dict
    metadata: dict
    files: dict[str, dict]
    _stats: dict[str, dict | None] = field(default_factory=dict, repr=False)

    def stats(self, add: dict) -> dict | None:
        """The parsed stats of one live file (parsed once per snapshot)."""
        path = add["path"]
        if path not in self._stats:
            self._stats[path] = _parse_stats(add)
        return self._stats[path]

    def num_records(self, add: dict) -> int | None:
        return _records_in(self.stats(add))

    @property
    def size(self) -> int:
        return sum(int(a.get("size") or 0) for a in self.files.values())

    @property
    def column_names(self) -> list[str]:
        return [f["name"] for f in _loads(self.metadata.get("schemaString") or "{}").get("fields", [])]

    @property
    def change_data_feed(self) -> bool:
        return (self.metadata.get("configuration") or {}).get("delta.enableChangeDataFeed") == "true"


def _parse_stats(add: dict) -> dict | None:
    text = add.get("stats")
    try:
        parsed = _loads(text) if isinstance(text, str) and text else None
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _records_in(stats: dict | None) -> int | None:
    value = stats.get("numRecords") if stats else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _num_records(add: dict) -> int | None:
    return _records_in(_parse_stats(add))


class LogGap(Exception):
    """A version whose commit file is gone (log clean-up) or was never written."""


class DeltaLog:
    """The Delta log of one local table, read incrementally.

    Commits and snapshots never change once written, so both are cached; whether the table moved is one
    stat() of the next commit file. A table that was dropped and rebuilt is noticed (its latest commit
    file vanishes) and read again from scratch.
    """

    def __init__(self, root: Path, keep_snapshots: int = 4, keep_commits: int = 512) -> None:
        self.root = root
        self.log_dir = root / "_delta_log"
        self.keep_snapshots, self.keep_commits = keep_snapshots, keep_commits
        self._latest = -1
        self._marker: Path | None = None
        self._commits: OrderedDict[int, Commit] = OrderedDict()
        self._snapshots: OrderedDict[int, Snapshot] = OrderedDict()
        self._timestamps: dict[int, int] = {}
        self._lock = threading.RLock()

    def _commit_path(self, version: int) -> Path:
        return self.log_dir / f"{version:020d}.json"

    def latest_version(self) -> int:
        """The table's current version; -1 when it does not exist."""
        with self._lock:
            version = self._latest
            if version >= 0 and not (self._marker and self._marker.exists()):
                self._forget()
                version = -1
            if version < 0:
                version, self._marker = self._scan_latest()
            while (following := self._commit_path(version + 1)).exists():
                version, self._marker = version + 1, following
            self._latest = version
            return version

    def _forget(self) -> None:
        self._commits.clear()
        self._snapshots.clear()
        self._timestamps.clear()
        self._latest, self._marker = -1, None

    def _scan_latest(self) -> tuple[int, Path | None]:
        """The newest version in the log folder and the file that shows it (a commit, or a checkpoint whose
        commit file was cleaned up)."""
        try:
            names = os.listdir(self.log_dir)
        except OSError:
            return -1, None
        found = [
            (int(m.group(1)), m.group(0))
            for pattern in (_COMMIT_FILE, _CHECKPOINT_FILE)
            for m in map(pattern.match, names)
            if m
        ]
        if not found:
            return -1, None
        version, name = max(found)
        return version, self.log_dir / name

    def earliest_version(self) -> int:
        """The oldest version whose commit file is still there (a snapshot may start at a checkpoint)."""
        try:
            names = os.listdir(self.log_dir)
        except OSError:
            return -1
        versions = [int(m.group(1)) for m in map(_COMMIT_FILE.match, names) if m]
        return min(versions, default=-1)

    def commit(self, version: int) -> Commit:
        with self._lock:
            cached = self._commits.get(version)
            if cached is not None:
                self._commits.move_to_end(version)
                return cached
            path = self._commit_path(version)
            try:
                text = path.read_bytes()
                modified = int(path.stat().st_mtime * 1000)
            except FileNotFoundError:
                raise LogGap(version) from None
            actions = tuple(_loads(line) for line in text.splitlines() if line.strip())
            info = next((a["commitInfo"] for a in actions if "commitInfo" in a), {})
            stamp = info.get("inCommitTimestamp") or info.get("timestamp") or modified
            commit = Commit(version, int(stamp), actions)
            self._timestamps[version] = commit.timestamp
            self._commits[version] = commit
            while len(self._commits) > self.keep_commits:
                self._commits.popitem(last=False)
            return commit

    def timestamp(self, version: int) -> int:
        with self._lock:
            if version not in self._timestamps:
                self.commit(version)
            return self._timestamps[version]

    def snapshot(self, version: int) -> Snapshot:
        """The table as of `version` (LogGap when neither its commits nor a checkpoint can rebuild it)."""
        with self._lock:
            cached = self._snapshots.get(version)
            if cached is not None:
                self._snapshots.move_to_end(version)
                return cached
            base = max((v for v in self._snapshots if v < version), default=None)
            snapshot = self._snapshots[base] if base is not None else self._from_checkpoint(version)
            for number in range(snapshot.version + 1, version + 1):
                snapshot = _apply(snapshot, self.commit(number))
            if snapshot.version != version or not snapshot.metadata:
                raise LogGap(version)
            self._snapshots[version] = snapshot
            while len(self._snapshots) > self.keep_snapshots:
                self._snapshots.popitem(last=False)
            return snapshot

    def _from_checkpoint(self, version: int) -> Snapshot:
        """The newest complete checkpoint at or before `version`, or an empty table before version 0."""
        empty = Snapshot(-1, 0, {}, {}, {})
        if self._commit_path(0).exists():
            return empty
        try:
            names = os.listdir(self.log_dir)
        except OSError:
            raise LogGap(version) from None
        parts: dict[int, list[tuple[str, int]]] = {}
        for name in names:
            match = _CHECKPOINT_FILE.match(name)
            if match and int(match.group(1)) <= version:
                parts.setdefault(int(match.group(1)), []).append((name, int(match.group(3) or 1)))
        complete = [v for v, files in parts.items() if len(files) == files[0][1]]
        if not complete:
            raise LogGap(version)
        at = max(complete)
        table = pq.read_table([str(self.log_dir / name) for name, _ in sorted(parts[at])])
        protocol, metadata, files = {}, {}, {}
        for row in table.to_pylist(maps_as_pydicts="strict"):
            if row.get("protocol"):
                protocol = _plain(row["protocol"])
            if row.get("metaData"):
                metadata = _plain(row["metaData"])
            if row.get("add"):
                add = _plain(row["add"])
                files[add["path"]] = add
        try:
            stamp = self.timestamp(at)
        except LogGap:
            stamp = int((self.log_dir / sorted(parts[at])[0][0]).stat().st_mtime * 1000)
        return Snapshot(at, stamp, protocol, metadata, files)

    def version_at(self, timestamp_ms: int, *, starting: bool) -> int:
        """The version a timestamp names: with `starting`, the first commit at or after it; otherwise the
        last commit at or before it (Delta's time travel)."""
        latest = self.latest_version()
        first = self.earliest_version()
        if latest < 0 or first < 0:
            raise LogGap(0)
        stamps = [(v, self.timestamp(v)) for v in range(first, latest + 1)]
        if starting:
            later = [v for v, stamp in stamps if stamp >= timestamp_ms]
            if not later:
                raise _bad("the timestamp is after the table's latest commit")
            return later[0]
        earlier = [v for v, stamp in stamps if stamp <= timestamp_ms]
        if not earlier:
            raise _bad("the timestamp is before the table's earliest available commit")
        return earlier[-1]


def _plain(value: Any) -> Any:
    """A checkpoint row as the JSON commit would have it: nulls dropped, and the typed copies of the stats and
    partition values that some writers add left out (the JSON strings are the protocol's)."""
    if isinstance(value, dict):
        return {
            k: _plain(v)
            for k, v in value.items()
            if v is not None and k not in ("stats_parsed", "partitionValues_parsed")
        }
    return value


def _apply(snapshot: Snapshot, commit: Commit) -> Snapshot:
    protocol, metadata, files = snapshot.protocol, snapshot.metadata, dict(snapshot.files)
    for action in commit.actions:
        if "add" in action:
            files[action["add"]["path"]] = action["add"]
        elif "remove" in action:
            files.pop(action["remove"]["path"], None)
        elif "metaData" in action:
            metadata = action["metaData"]
        elif "protocol" in action:
            protocol = action["protocol"]
    return Snapshot(commit.version, commit.timestamp, protocol, metadata, files)


# --- file skipping ------------------------------------------------------------------------------

_UNKNOWN = (True, True)  # (some row may satisfy it, some row may contradict it)
_FLIPPED = {
    "equal": "equal",
    "lessThan": "greaterThan",
    "lessThanOrEqual": "greaterThanOrEqual",
    "greaterThan": "lessThan",
    "greaterThanOrEqual": "lessThanOrEqual",
}


class _Unsupported(Exception):
    """A predicate or value the file skipping does not understand: the file is kept."""


def parse_json_predicate(text: str) -> dict | None:
    """The jsonPredicateHints tree, or None when it is not one (then every file is kept, as the protocol says)."""
    try:
        tree = _loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(tree, dict):
        return None
    try:
        _check_tree(tree, 0, [0])
    except _Unsupported:
        return None
    return tree


def _check_tree(node: Any, depth: int, count: list[int]) -> None:
    count[0] += 1
    if depth > MAX_PREDICATE_DEPTH or count[0] > MAX_PREDICATE_NODES or not isinstance(node, dict):
        raise _Unsupported("predicate too deep, too large or not an object")
    if not isinstance(node.get("op"), str):
        raise _Unsupported("a predicate node without an op")
    children = node.get("children", [])
    if not isinstance(children, list):
        raise _Unsupported("children is not a list")
    for child in children:
        _check_tree(child, depth + 1, count)


def file_may_match(predicate: dict | None, stats: dict | None) -> bool:
    """False only when the file's stats prove that no row satisfies the predicate (best effort: anything
    not understood keeps the file)."""
    if predicate is None or not stats:
        return True
    try:
        return _evaluate(predicate, stats)[0]
    except (_Unsupported, TypeError, ValueError, KeyError, AttributeError, OverflowError, RecursionError):
        return True


def _evaluate(node: dict, stats: dict) -> tuple[bool, bool]:
    """(may be true, may be false) for some row of the file, in SQL's three-valued logic (NULL is neither)."""
    op, children = node["op"], node.get("children", [])
    if op == "and":
        results = [_evaluate(c, stats) for c in children] or [_UNKNOWN]
        return all(r[0] for r in results), any(r[1] for r in results)
    if op == "or":
        results = [_evaluate(c, stats) for c in children] or [_UNKNOWN]
        return any(r[0] for r in results), all(r[1] for r in results)
    if op == "not":
        if len(children) != 1:
            raise _Unsupported("not takes one child")
        may_true, may_false = _evaluate(children[0], stats)
        return may_false, may_true
    if op == "isNull":
        if len(children) != 1 or children[0].get("op") != "column":
            raise _Unsupported("isNull takes one column")
        nulls, rows = _null_count(stats, children[0]), stats.get("numRecords")
        if not isinstance(nulls, int) or not isinstance(rows, int):
            return _UNKNOWN
        return nulls > 0, nulls < rows
    if op in _FLIPPED:
        if len(children) != 2:
            raise _Unsupported(f"{op} takes two children")
        left, right = children
        if left.get("op") == "literal" and right.get("op") == "column":
            left, right, op = right, left, _FLIPPED[op]
        if left.get("op") != "column" or right.get("op") != "literal":
            return _UNKNOWN
        return _compare(op, left, right, stats)
    return _UNKNOWN


def _stat(stats: dict, kind: str, name: str) -> Any:
    values = stats.get(kind)
    if not isinstance(values, dict):
        return None
    if name in values:
        return values[name]
    for part in name.split("."):  # a nested column's stats mirror the struct
        if not isinstance(values, dict) or part not in values:
            return None
        values = values[part]
    return values


def _null_count(stats: dict, column: dict) -> Any:
    return _stat(stats, "nullCount", str(column.get("name")))


def _compare(op: str, column: dict, literal: dict, stats: dict) -> tuple[bool, bool]:
    name = str(column.get("name"))
    value_type = literal.get("valueType") or column.get("valueType")
    value = _typed(literal.get("value"), value_type)
    rows, nulls = stats.get("numRecords"), _null_count(stats, column)
    if isinstance(rows, int) and isinstance(nulls, int) and rows == nulls:
        return False, False  # every value is NULL: the comparison is never true nor false
    low, high = _stat(stats, "minValues", name), _stat(stats, "maxValues", name)
    if low is None or high is None:
        return _UNKNOWN
    low, high = _typed(low, value_type), _typed(high, value_type, upper=True)
    if any(isinstance(v, float) and math.isnan(v) for v in (low, high, value)):
        return _UNKNOWN
    if op == "equal":
        return low <= value <= high, not (low == high == value)
    if op == "lessThan":
        return low < value, high >= value
    if op == "lessThanOrEqual":
        return low <= value, high > value
    if op == "greaterThan":
        return high > value, low <= value
    return high >= value, low < value  # greaterThanOrEqual


def _typed(value: Any, value_type: Any, upper: bool = False) -> Any:
    """A literal or a stats bound as the protocol's valueType; timestamp bounds are kept to the millisecond
    by the writers, so an upper bound is widened by one."""
    if value is None or isinstance(value, (dict, list)):
        raise _Unsupported("no scalar value")
    if value_type in ("int", "long"):
        if isinstance(value, float):
            return value
        return int(str(value))
    if value_type in ("float", "double"):
        return float(value)
    if value_type == "string":
        return str(value)
    if value_type == "bool":
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "false"):
            return str(value).lower() == "true"
        raise _Unsupported("not a boolean")
    if value_type == "date":
        return date.fromisoformat(str(value)[:10])
    if value_type == "timestamp":
        moment = datetime.fromisoformat(str(value))
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        return moment + timedelta(milliseconds=1) if upper else moment
    raise _Unsupported(f"valueType {value_type!r}")


def limit_files(files: list[dict], limit: int | None, num_records: Callable[[dict], int | None]) -> list[dict]:
    """The first files whose numRecords cover `limit` rows (a file without stats cannot be counted)."""
    if limit is None:
        return files
    kept, rows = [], 0
    for add in files:
        if rows >= limit:
            break
        kept.append(add)
        rows += num_records(add) or 0
    return kept


# --- request parsing ----------------------------------------------------------------------------


def _query_params(request: Request, allowed: Iterable[str]) -> dict[str, str]:
    """The query parameters, each at most once and all known to the endpoint."""
    allowed = set(allowed)
    params: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        if key not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise _bad(f"unknown query parameter {key[:50]!r} (this endpoint takes: {known})")
        if key in params:
            raise _bad(f"query parameter {key!r} is given twice")
        params[key] = value
    return params


def _integer(value: Any, name: str, *, maximum: int = INT64_MAX) -> int:
    """A non-negative integer from a query string or a JSON body (JSON booleans and floats are refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _bad(f"{name} must be an integer")
    if isinstance(value, str):
        if not _INTEGER.match(value):
            raise _bad(f"{name} must be an integer, not {value[:30]!r}")
        value = int(value)
    if not 0 <= value <= maximum:
        raise _bad(f"{name} must be between 0 and {maximum}")
    return value


def _boolean(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise _bad(f"{name} must be true or false")


def _timestamp_ms(value: Any, name: str) -> int:
    """A timestamp in the protocol's format (ISO 8601, UTC, e.g. 2022-01-01T00:00:00Z) as ms since the epoch."""
    if not isinstance(value, str) or not 0 < len(value) <= 64:
        raise _bad(f"{name} must be an ISO 8601 timestamp such as 2022-01-01T00:00:00Z")
    try:
        moment = datetime.fromisoformat(value.strip())
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        return int(moment.timestamp() * 1000)
    except (ValueError, OverflowError, OSError):
        raise _bad(f"{name} {value[:40]!r} is not an ISO 8601 timestamp such as 2022-01-01T00:00:00Z") from None


def _response_format(request: Request) -> str:
    """parquet unless the client accepts delta only (the tables need no advanced reader feature)."""
    header = request.headers.get("delta-sharing-capabilities")
    if not header:
        return "parquet"
    formats: list[str] = []
    for part in header.split(";"):
        key, _, value = part.partition("=")
        if key.strip().lower() == "responseformat":
            formats = [v.strip().lower() for v in value.split(",") if v.strip()]
    if not formats or "parquet" in formats:
        return "parquet"
    if "delta" in formats:
        return "delta"
    raise _bad(f"responseformat {','.join(formats)[:40]!r} is not supported: parquet or delta")


def _file_id_scheme(request: Request) -> str | None:
    value = request.headers.get("fileidhash")
    if value is None:
        return None
    if value.strip().lower() not in ("parquet", "delta"):
        raise _bad("fileidhash must be parquet or delta")
    return value.strip().lower()


def _name(value: str, what: str) -> str:
    """A share, schema or table name as the server compares it (names are case-insensitive)."""
    lowered = value.lower()
    if not _NAME.match(lowered):
        raise _not_found(f"{what} {value[:60]!r} does not exist or is not shared with you", f"invalid {what} name")
    return lowered


def share_id(department: str) -> str:
    """A share's stable id (the protocol's `id`: unique and immutable over the share's life)."""
    return str(uuid.uuid5(SHARE_NAMESPACE, f"share:{department}"))


def _file_id(path: str) -> str:
    return hashlib.md5(path.encode("utf-8"), usedforsecurity=False).hexdigest()


# --- signed URLs and page tokens ----------------------------------------------------------------


def _file_message(order_id: str, path: str, expires: int) -> str:
    return f"file\n{order_id}\n{path}\n{expires}"


def signed_file_url(state: ShareState, base_url: str, order_id: str, path: str, expires: int) -> str:
    """The pre-signed URL of one file of an order's delivery (`path` relative to the delivery folder,
    not URL-encoded), valid until `expires` (unix seconds)."""
    signature = state.sign(_file_message(order_id, path, expires))
    return f"{base_url}{PREFIX}/files/{order_id}/{quote(path, safe='/')}?exp={expires}&sig={signature}"


def _page_token(state: ShareState, scope: str, offset: int) -> str:
    signature = state.sign(f"page\n{scope}\n{offset}")[:32]
    return base64.urlsafe_b64encode(f"{offset}.{signature}".encode()).decode().rstrip("=")


def _page_offset(state: ShareState, scope: str, token: str) -> int:
    """The offset a page token carries; tokens are signed and bound to the department and the listing."""
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
        offset_text, signature = text.split(".", 1)
        offset = int(offset_text)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise _bad("pageToken is not a page token this server issued") from None
    expected = state.sign(f"page\n{scope}\n{offset}")[:32]
    if offset < 0 or not hmac.compare_digest(expected, signature):
        raise Refusal(400, "INVALID_PARAMETER_VALUE", "pageToken is not valid here", "forged or foreign page token")
    return offset


# --- the protocol application -------------------------------------------------------------------


@dataclass
class _Call:
    """What one request did, for its access-log row."""

    method: str
    path: str
    client: str | None
    endpoint: str = "unknown"
    department: str | None = None
    token_id: str | None = None
    share: str | None = None
    schema: str | None = None
    table: str | None = None
    order_id: str | None = None
    dataset_id: str | None = None
    files: int = 0
    rows: int = 0
    bytes: int = 0
    outcome: str = "ok"
    reason: str | None = None


_TABLE_ENDPOINTS = {"version": ("GET", "HEAD"), "metadata": ("GET",), "query": ("POST",), "changes": ("GET",)}


class SharingProtocol:
    """The ASGI application mounted at `/delta-sharing`: routing, authentication, metering."""

    def __init__(self, state: ShareState, public_url: str | None = None) -> None:
        self.state = state
        self.public_url = public_url.rstrip("/") if public_url else None
        self._logs: dict[str, DeltaLog] = {}
        self._visible_cache: dict[str, tuple[object, date, dict[tuple[str, str], Order]]] = {}
        self._checked: dict[tuple[str, str], bool] = {}
        self._lines: OrderedDict[tuple, bytes] = OrderedDict()
        self._rows: OrderedDict[str, int] = OrderedDict()
        self._titles: dict[str, str] = {}

    # ASGI entry point
    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        request = Request(scope, receive)
        client = scope.get("client")
        call = _Call(method=scope["method"], path=scope.get("path", "")[:1000], client=client[0] if client else None)
        try:
            response = await self._dispatch(request, call)
        except Refusal as refusal:
            call.outcome, call.reason = "refused", refusal.reason[:500]
            headers = {"WWW-Authenticate": 'Bearer realm="yiwang"'} if refusal.status == 401 else None
            response = _error_response(refusal.status, refusal.code, refusal.message, headers)
        except Exception as error:  # a bug, never the client's input: logged, answered as the protocol says
            log.exception("%s %s failed", call.method, call.path)
            call.outcome, call.reason = "error", f"{type(error).__name__}: {error}"[:500]
            response = _error_response(500, "INTERNAL_ERROR", "the server could not answer; the error is logged")

        if not isinstance(response, FileResponse):
            # recorded before it goes out, so that whoever reads the answer finds it metered
            call.bytes = 0 if call.method == "HEAD" else len(response.body)
            self._record(call, response.status_code, started)
            await response(scope, receive, send)
            return
        await self._send_file(response, call, scope, receive, send, started)

    async def _send_file(
        self, response: FileResponse, call: _Call, scope: dict, receive: Callable, send: Callable, started: float
    ) -> None:
        """A file answer is metered after it went out: its status (200, 206, 416) and size depend on the Range
        header, and a HEAD or a GET the client dropped unread counts no file and no rows."""
        status = response.status_code

        async def counting_send(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                call.bytes += len(message.get("body", b""))
            await send(message)

        try:
            await response(scope, receive, counting_send)
        except Exception as error:  # the client went away mid-answer
            call.outcome, call.reason = "error", f"answer not completed: {type(error).__name__}"
            raise
        finally:
            if call.bytes == 0:
                call.files = call.rows = 0
            if call.outcome == "ok" and status >= 400:  # the Range header refused
                call.outcome, call.reason = "refused", f"range header refused (HTTP {status})"
                call.files = call.rows = 0
            self._record(call, status, started)

    def _record(self, call: _Call, status: int, started: float) -> None:
        try:
            self.state.access_log.record(
                department=call.department,
                token_id=call.token_id,
                method=call.method,
                endpoint=call.endpoint,
                path=call.path,
                share=call.share,
                schema=call.schema,
                table=call.table,
                order_id=call.order_id,
                dataset_id=call.dataset_id,
                status=status,
                outcome=call.outcome,
                reason=call.reason,
                files=call.files,
                rows=call.rows,
                bytes=call.bytes,
                duration_ms=(time.perf_counter() - started) * 1000,
                client=call.client,
            )
        except Exception:  # metering must not take the answer down with it
            log.exception("could not record the access of %s", call.path)

    # routing
    def _segments(self, request: Request) -> list[str]:
        """The path under the prefix, split on the raw `/` before decoding, so that an encoded slash stays
        inside its segment (and then fails the name check) instead of moving the request elsewhere."""
        raw = request.scope.get("raw_path") or request.scope["path"].encode("utf-8")
        text = raw.decode("latin-1")
        if not text.startswith(PREFIX + "/"):
            raise _not_found("no such endpoint", "path outside the prefix")
        try:
            return [unquote(part, errors="strict") for part in text[len(PREFIX) + 1 :].split("/")]
        except UnicodeDecodeError:
            raise _not_found("no such endpoint", "undecodable path") from None

    async def _dispatch(self, request: Request, call: _Call) -> Response:
        segments = self._segments(request)
        if segments and segments[0] == "files":
            call.endpoint = "file"
            return self._file(request, call, segments[1:])
        endpoint, methods, names = _route(segments)
        call.endpoint = endpoint
        if request.method not in methods:
            raise Refusal(405, "METHOD_NOT_ALLOWED", f"{request.method} is not allowed here: {', '.join(methods)}")
        department = self._authenticate(request, call)
        share = self._share(call, department, names[0]) if names else None
        if endpoint == "list_shares":
            return self._list_shares(request, call, department)
        if endpoint == "get_share":
            _query_params(request, ())
            return _json({"share": {"name": share, "id": share_id(department)}})
        if endpoint == "list_schemas":
            return self._list_schemas(request, call, department)
        if endpoint == "list_all_tables":
            return self._list_tables(request, call, department, None)
        if endpoint == "list_tables":
            return self._list_tables(request, call, department, self._schema(call, department, names[1]))
        order, delta = self._table(call, department, names[1], names[2])
        if endpoint == "version":
            return self._version(request, call, delta)
        if endpoint == "metadata":
            return self._metadata(request, call, order, delta)
        if endpoint == "query":
            return self._query(request, call, order, delta, await _read_json(request))
        return self._changes(request, call, order, delta)

    def _authenticate(self, request: Request, call: _Call) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Refusal(401, "UNAUTHENTICATED", "a bearer token is required", "no bearer token")
        try:
            call.token_id = parse_token(token)[0]
        except TokenError:
            call.token_id = None
        try:
            call.department = self.state.department_of(token)
        except TokenError as error:
            raise Refusal(401, "UNAUTHENTICATED", "the bearer token is not valid", f"token: {error}") from None
        return call.department

    def _share(self, call: _Call, department: str, name: str) -> str:
        call.share = name[:100]
        share = _name(name, "share")
        if share != department:
            raise _not_found(
                f"share {name[:60]!r} does not exist or is not shared with you", f"share {share} of another department"
            )
        return share

    def _visible(self, department: str) -> dict[tuple[str, str], Order]:
        """The department's active orders by (schema, table), rebuilt when the orders move or the day turns."""
        orders = self.state.orders()
        today = datetime.now(CST).date()
        cached = self._visible_cache.get(department)
        if cached is not None and cached[0] is orders and cached[1] == today:
            return cached[2]
        visible = {}
        for order in sorted(self.state.active_orders(department, today), key=lambda o: o.order_id):
            schema, _, table = order.dataset_id.partition(".")
            visible[(schema, table)] = order
        self._visible_cache[department] = (orders, today, visible)
        return visible

    def _schema(self, call: _Call, department: str, name: str) -> str:
        call.schema = name[:100]
        schema = _name(name, "schema")
        if not any(s == schema for s, _ in self._visible(department)):
            raise _not_found(f"schema {name[:60]!r} does not exist or is not shared with you", f"no schema {schema}")
        return schema

    def _table(self, call: _Call, department: str, schema_name: str, table_name: str) -> tuple[Order, DeltaLog]:
        call.schema, call.table = schema_name[:100], table_name[:100]
        schema, table = _name(schema_name, "schema"), _name(table_name, "table")
        order = self._visible(department).get((schema, table))
        if order is None:
            raise _not_found(
                f"table {schema_name[:60]}.{table_name[:60]} does not exist or is not shared with you",
                self._why_not_visible(department, f"{schema}.{table}"),
            )
        call.order_id, call.dataset_id = order.order_id, order.dataset_id
        delta = self._delta_log(order.order_id)
        if delta.latest_version() < 0:
            raise _not_found(f"table {schema}.{table} has no data yet", f"delivery of {order.order_id} missing")
        return order, delta

    def _why_not_visible(self, department: str, dataset_id: str) -> str:
        """The real reason a table is refused, for the log only (the client is told it does not exist)."""
        mine = [o for o in self.state.orders().values() if o.dataset_id == dataset_id and o.department == department]
        if mine:
            latest = max(mine, key=lambda o: o.requested_at or datetime.min.replace(tzinfo=UTC))
            return f"order {latest.order_id} is {latest.effective_state()}"
        others = sorted({o.department for o in self.state.orders().values() if o.dataset_id == dataset_id})
        return f"table ordered by another department ({', '.join(others)})" if others else "no such table"

    def _delta_log(self, order_id: str) -> DeltaLog:
        delta = self._logs.get(order_id)
        if delta is None:
            delta = DeltaLog(Path(self.state.warehouse.uri(delivery_table(order_id))))
            self._logs[order_id] = delta
        return delta

    def _base_url(self, request: Request) -> str:
        if self.public_url:
            return self.public_url
        host = request.headers.get("host", "")
        if not _HOST.match(host):
            server = request.scope.get("server") or ("127.0.0.1", DEFAULT_PORT)
            host = f"{server[0]}:{server[1]}"
        return f"{request.url.scheme}://{host}"

    # listings
    def _page(self, request: Request, call: _Call, items: list[dict], scope: str) -> Response:
        params = _query_params(request, ("maxResults", "pageToken"))
        limit = MAX_RESULTS
        if "maxResults" in params:
            limit = min(_integer(params["maxResults"], "maxResults", maximum=INT32_MAX), MAX_RESULTS)
        scope = f"{call.department}\n{scope}"
        offset = _page_offset(self.state, scope, params["pageToken"]) if "pageToken" in params else 0
        page = items[offset : offset + limit]
        body: dict[str, Any] = {"items": page}
        if offset + len(page) < len(items):
            body["nextPageToken"] = _page_token(self.state, scope, offset + len(page))
        return _json(body)

    def _list_shares(self, request: Request, call: _Call, department: str) -> Response:
        return self._page(request, call, [{"name": department, "id": share_id(department)}], "shares")

    def _list_schemas(self, request: Request, call: _Call, department: str) -> Response:
        schemas = sorted({schema for schema, _ in self._visible(department)})
        items = [{"name": schema, "share": department} for schema in schemas]
        return self._page(request, call, items, "schemas")

    def _list_tables(self, request: Request, call: _Call, department: str, schema: str | None) -> Response:
        items = [
            {"name": t, "schema": s, "share": department, "shareId": share_id(department), "id": order.order_id}
            for (s, t), order in sorted(self._visible(department).items())
            if schema is None or s == schema
        ]
        return self._page(request, call, items, f"tables\n{schema or '*'}")

    # table endpoints
    def _version(self, request: Request, call: _Call, delta: DeltaLog) -> Response:
        params = _query_params(request, ("startingTimestamp",))
        version = delta.latest_version()
        if "startingTimestamp" in params:
            version = self._resolve(
                delta,
                lambda: delta.version_at(
                    _timestamp_ms(params["startingTimestamp"], "startingTimestamp"), starting=True
                ),
            )
        return Response(status_code=200, headers={"Delta-Table-Version": str(version)})

    def _resolve(self, delta: DeltaLog, find: Callable[[], int]) -> int:
        try:
            return find()
        except LogGap as gap:
            raise _bad(f"version {gap.args[0]} of the table is no longer available") from None

    def _snapshot(self, order: Order, delta: DeltaLog, version: int) -> Snapshot:
        latest = delta.latest_version()
        if version > latest:
            raise _bad(f"version {version} does not exist yet: the table's latest version is {latest}")
        try:
            snapshot = delta.snapshot(version)
        except LogGap:
            raise _bad(f"version {version} of the table is no longer available") from None
        self._check_delivered(order, snapshot.metadata)
        return snapshot

    def _check_delivered(self, order: Order, metadata: dict) -> None:
        """Defence in depth: serve a delivery only if its columns are exactly what the order grants (masked
        names included), so a raw sensitive column could never go out even if a delivery were wrong."""
        schema = metadata.get("schemaString") or ""
        key = (order.order_id, schema)
        if key not in self._checked:
            try:
                names = [f["name"] for f in _loads(schema or "{}").get("fields", [])]
            except (ValueError, AttributeError, TypeError, KeyError):
                names = []
            self._checked[key] = sorted(names) == sorted(delivered_columns(order))
            if not self._checked[key]:
                log.error("delivery of %s has columns %s, not %s", order.order_id, names, delivered_columns(order))
        if not self._checked[key]:
            raise _forbidden(
                "this table cannot be served now; the data officer has been told",
                "delivery columns differ from the order's",
            )

    def _title(self, order: Order) -> str:
        if order.dataset_id not in self._titles:
            try:
                self._titles[order.dataset_id] = get_dataset(order.dataset_id).title
            except DatasetError:
                self._titles[order.dataset_id] = order.dataset_id
        return self._titles[order.dataset_id]

    def _head_lines(self, order: Order, snapshot: Snapshot, fmt: str, versioned: bool) -> bytes:
        """The protocol and metadata lines of one snapshot (cached: they never change for a version)."""
        key = (order.order_id, snapshot.version, fmt, versioned)
        cached = self._lines.get(key)
        if cached is not None:
            return cached
        extra: dict[str, Any] = {"size": snapshot.size, "numFiles": len(snapshot.files)}
        if versioned:
            extra["version"] = snapshot.version
        if fmt == "delta":
            protocol = {"protocol": {"deltaProtocol": snapshot.protocol}}
            metadata = {"metaData": {"deltaMetadata": snapshot.metadata, **extra}}
        else:
            protocol = {"protocol": {"minReaderVersion": 1}}
            metadata = {"metaData": {**self._parquet_metadata(order, snapshot.metadata), **extra}}
        lines = _dumps(protocol) + b"\n" + _dumps(metadata) + b"\n"
        self._lines[key] = lines
        while len(self._lines) > 256:
            self._lines.popitem(last=False)
        return lines

    def _parquet_metadata(self, order: Order, metadata: dict) -> dict:
        body: dict[str, Any] = {
            "id": metadata.get("id"),
            "name": order.dataset_id.partition(".")[2],
            "description": self._title(order),
            "format": {"provider": "parquet"},
            "schemaString": metadata.get("schemaString"),
            "partitionColumns": metadata.get("partitionColumns") or [],
        }
        if (metadata.get("configuration") or {}).get("delta.enableChangeDataFeed") == "true":
            body["configuration"] = {"enableChangeDataFeed": "true"}
        return body

    def _metadata(self, request: Request, call: _Call, order: Order, delta: DeltaLog) -> Response:
        params = _query_params(request, ("version", "timestamp"))
        fmt = _response_format(request)
        if "version" in params and "timestamp" in params:
            raise _bad("give version or timestamp, not both")
        version, versioned = self._requested_version(delta, params.get("version"), params.get("timestamp"))
        snapshot = self._snapshot(order, delta, version)
        return _ndjson(self._head_lines(order, snapshot, fmt, versioned), snapshot.version, fmt)

    def _requested_version(self, delta: DeltaLog, version: Any, timestamp: Any) -> tuple[int, bool]:
        if version is not None:
            return _integer(version, "version"), True
        if timestamp is not None:
            stamp = _timestamp_ms(timestamp, "timestamp")
            return self._resolve(delta, lambda: delta.version_at(stamp, starting=False)), True
        return delta.latest_version(), False

    def _query(self, request: Request, call: _Call, order: Order, delta: DeltaLog, body: dict) -> Response:
        _query_params(request, ())
        fmt, id_scheme = _response_format(request), _file_id_scheme(request)
        allowed = {
            "predicateHints", "jsonPredicateHints", "limitHint", "version", "timestamp", "startingVersion",
            "endingVersion", "includeHistoricalProtocol", "idempotencyKey", "includeRefreshToken", "refreshToken",
        }  # fmt: skip
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise _bad(f"unknown field {unknown[0][:50]!r} in the query body")
        hints = body.get("predicateHints")
        if hints is not None and (not isinstance(hints, list) or not all(isinstance(h, str) for h in hints)):
            raise _bad("predicateHints must be a list of strings")
        for name in ("jsonPredicateHints", "timestamp", "idempotencyKey", "refreshToken"):
            if body.get(name) is not None and not isinstance(body[name], str):
                raise _bad(f"{name} must be a string")
        for name in ("includeHistoricalProtocol", "includeRefreshToken"):
            if body.get(name) is not None:
                _boolean(body[name], name)
        limit = (
            _integer(body["limitHint"], "limitHint", maximum=INT32_MAX) if body.get("limitHint") is not None else None
        )
        travel = [n for n in ("version", "timestamp", "startingVersion") if body.get(n) is not None]
        if len(travel) > 1:
            raise _bad(f"give one of version, timestamp and startingVersion, not {' and '.join(travel)}")
        if body.get("endingVersion") is not None and body.get("startingVersion") is None:
            raise _bad("endingVersion needs startingVersion")
        expires = int(time.time()) + self.state.url_seconds
        if body.get("startingVersion") is not None:
            start = _integer(body["startingVersion"], "startingVersion")
            end = _integer(body["endingVersion"], "endingVersion") if body.get("endingVersion") is not None else None
            return self._stream_changes(
                request, call, order, delta, start, end, fmt, expires, cdf=False, id_scheme=id_scheme
            )
        version, versioned = self._requested_version(delta, body.get("version"), body.get("timestamp"))
        snapshot = self._snapshot(order, delta, version)
        files = list(snapshot.files.values())
        predicate = body.get("jsonPredicateHints")
        tree = parse_json_predicate(predicate) if predicate else None
        if tree is not None:
            files = [add for add in files if file_may_match(tree, snapshot.stats(add))]
        if limit is not None:
            files = limit_files(files, limit, snapshot.num_records)
        base = self._base_url(request)
        lines = [self._head_lines(order, snapshot, fmt, versioned)]
        for add in files:
            lines.append(self._file_line(base, order, add, fmt, expires, snapshot, versioned) + b"\n")
            call.rows += snapshot.num_records(add) or 0
        call.files = len(files)
        return _ndjson(b"".join(lines), snapshot.version, fmt, id_scheme)

    def _file_line(
        self, base: str, order: Order, add: dict, fmt: str, expires: int, snapshot: Snapshot, versioned: bool
    ) -> bytes:
        url = signed_file_url(self.state, base, order.order_id, unquote(add["path"]), expires)
        when = {"version": snapshot.version, "timestamp": snapshot.timestamp} if versioned else {}
        if fmt == "delta":
            action = {k: v for k, v in add.items() if v is not None} | {"path": url}
            return _dumps(
                {
                    "file": {
                        "id": _file_id(add["path"]),
                        "deltaSingleAction": {"add": action},
                        "expirationTimestamp": expires * 1000,
                        **when,
                    }
                }
            )
        file = {
            "url": url,
            "id": _file_id(add["path"]),
            "partitionValues": add.get("partitionValues") or {},
            "size": int(add.get("size") or 0),
            "expirationTimestamp": expires * 1000,
            **when,
        }
        if add.get("stats"):
            file["stats"] = add["stats"]
        return _dumps({"file": file})

    def _changes(self, request: Request, call: _Call, order: Order, delta: DeltaLog) -> Response:
        params = _query_params(
            request,
            ("startingVersion", "startingTimestamp", "endingVersion", "endingTimestamp", "includeHistoricalMetadata",
             "includeHistoricalProtocol"),
        )  # fmt: skip
        fmt, id_scheme = _response_format(request), _file_id_scheme(request)
        for pair in (("startingVersion", "startingTimestamp"), ("endingVersion", "endingTimestamp")):
            if all(p in params for p in pair):
                raise _bad(f"give {pair[0]} or {pair[1]}, not both")
        history = (
            _boolean(params["includeHistoricalMetadata"], "includeHistoricalMetadata")
            if ("includeHistoricalMetadata" in params)
            else False
        )
        if "includeHistoricalProtocol" in params:
            _boolean(params["includeHistoricalProtocol"], "includeHistoricalProtocol")
        if "startingVersion" in params:
            start = _integer(params["startingVersion"], "startingVersion")
        elif "startingTimestamp" in params:
            stamp = _timestamp_ms(params["startingTimestamp"], "startingTimestamp")
            start = self._resolve(delta, lambda: delta.version_at(stamp, starting=True))
        else:
            raise _bad("give startingVersion or startingTimestamp")
        end = None
        if "endingVersion" in params:
            end = _integer(params["endingVersion"], "endingVersion")
        elif "endingTimestamp" in params:
            stamp = _timestamp_ms(params["endingTimestamp"], "endingTimestamp")
            end = self._resolve(delta, lambda: delta.version_at(stamp, starting=False))
        expires = int(time.time()) + self.state.url_seconds
        return self._stream_changes(
            request, call, order, delta, start, end, fmt, expires, cdf=True, history=history, id_scheme=id_scheme
        )

    def _stream_changes(
        self,
        request: Request,
        call: _Call,
        order: Order,
        delta: DeltaLog,
        start: int,
        end: int | None,
        fmt: str,
        expires: int,
        *,
        cdf: bool,
        history: bool = True,
        id_scheme: str | None = None,
    ) -> Response:
        """The data change files of versions start..end: for the change data feed, a version's `cdc` files
        when it has any, else its `add`s (inserts) and `remove`s (deletes), as Delta reads its own feed."""
        latest = delta.latest_version()
        if start > latest:
            raise _bad(f"starting version {start} is after the table's latest version {latest}")
        end = latest if end is None else min(end, latest)
        if end < start:
            raise _bad(f"ending version {end} is before starting version {start}")
        snapshot = self._snapshot(order, delta, start)
        if cdf and not snapshot.change_data_feed:
            raise _bad(f"the change data feed is not recorded at version {start}")
        base = self._base_url(request)
        lines = [self._cdf_head(order, snapshot, fmt) if cdf else self._head_lines(order, snapshot, fmt, False)]
        for version in range(start, end + 1):
            try:
                commit = delta.commit(version)
            except LogGap:
                raise _bad(f"changes of version {version} are no longer kept") from None
            for kind, action in _change_actions(commit, cdf=cdf):
                if kind == "metaData":
                    self._check_delivered(order, action)
                    if history and version > start:
                        lines.append(self._metadata_line(order, action, version, fmt))
                    continue
                lines.append(self._change_line(base, order, kind, action, commit, fmt, expires) + b"\n")
                call.files += 1
                if kind == "add":
                    call.rows += _num_records(action) or 0
        return _ndjson(b"".join(lines), start, fmt, id_scheme)

    def _cdf_head(self, order: Order, snapshot: Snapshot, fmt: str) -> bytes:
        if fmt == "delta":  # the delta-format reader needs the head metadata's version
            protocol = {"protocol": {"deltaProtocol": snapshot.protocol}}
            metadata = {"metaData": {"deltaMetadata": snapshot.metadata, "version": snapshot.version}}
            return _dumps(protocol) + b"\n" + _dumps(metadata) + b"\n"
        return self._head_lines(order, snapshot, fmt, False)

    def _metadata_line(self, order: Order, metadata: dict, version: int, fmt: str) -> bytes:
        if fmt == "delta":
            return _dumps({"metaData": {"deltaMetadata": metadata, "version": version}}) + b"\n"
        return _dumps({"metaData": {**self._parquet_metadata(order, metadata), "version": version}}) + b"\n"

    def _change_line(
        self, base: str, order: Order, kind: str, action: dict, commit: Commit, fmt: str, expires: int
    ) -> bytes:
        url = signed_file_url(self.state, base, order.order_id, unquote(action["path"]), expires)
        if fmt == "delta":
            single = {k: v for k, v in action.items() if v is not None} | {"path": url}
            return _dumps(
                {
                    "file": {
                        "id": _file_id(action["path"]),
                        "deltaSingleAction": {kind: single},
                        "version": commit.version,
                        "timestamp": commit.timestamp,
                        "expirationTimestamp": expires * 1000,
                    }
                }
            )
        wrapper = {"add": "add", "cdc": "cdf", "remove": "remove"}[kind]
        body = {
            "url": url,
            "id": _file_id(action["path"]),
            "partitionValues": action.get("partitionValues") or {},
            "size": int(action.get("size") or 0),
            "timestamp": commit.timestamp,
            "version": commit.version,
            "expirationTimestamp": expires * 1000,
        }
        if kind == "add" and action.get("stats"):
            body["stats"] = action["stats"]
        return _dumps({wrapper: body})

    # files
    def _file(self, request: Request, call: _Call, segments: list[str]) -> Response:
        if request.method not in ("GET", "HEAD"):
            raise Refusal(405, "METHOD_NOT_ALLOWED", f"{request.method} is not allowed here: GET, HEAD")
        if len(segments) < 2 or not ORDER_ID_PATTERN.match(segments[0]):
            raise _not_found("no such file", "file URL without an order id")
        order_id, path = segments[0], "/".join(segments[1:])
        call.order_id = order_id
        params = _query_params(request, ("exp", "sig"))
        if "exp" not in params or "sig" not in params:
            raise _forbidden("this file URL is not signed", "unsigned file URL")
        expires = _integer(params["exp"], "exp")
        if not self.state.verify(_file_message(order_id, path, expires), params["sig"]):
            raise _forbidden("this file URL is not valid", "bad file URL signature")
        if expires < time.time():
            raise _forbidden("this file URL has expired: query the table again", "file URL expired")
        order = self.state.orders().get(order_id)
        if order is not None:
            call.department, call.dataset_id = order.department, order.dataset_id
        if order is None or order.effective_state() != "active":
            state = order.effective_state() if order else "unknown"
            raise _forbidden("this file is no longer shared", f"order {order_id} is {state}")
        target = self._delivery_file(order_id, path)
        stat = target.stat()
        if request.method == "GET":
            call.files = 1
            if _reads_start(request.headers.get("range")):
                call.rows = self._file_rows(target)
        return FileResponse(
            target, stat_result=stat, media_type="application/octet-stream", headers={"Cache-Control": "no-store"}
        )

    def _delivery_file(self, order_id: str, path: str) -> Path:
        """The file a signed URL names, only if it is a Parquet data or change-data file that really lies
        inside the order's delivery folder (no `..`, no absolute path, no symlink out, no log file)."""
        parts = path.split("/")
        refused = _not_found("no such file", f"file path refused: {path[:200]!r}")
        if (
            not path
            or "\\" in path
            or "\x00" in path
            or any(part in ("", ".", "..") or part.startswith(".") for part in parts)
            or parts[0] == "_delta_log"
            or not path.endswith(".parquet")
        ):
            raise refused
        try:
            root = Path(self.state.warehouse.uri(delivery_table(order_id))).resolve(strict=True)
            target = (root / path).resolve(strict=True)
        except (OSError, RuntimeError):
            raise _not_found("no such file", f"no file {path[:200]!r} in the delivery") from None
        if not target.is_relative_to(root) or not target.is_file():
            raise refused
        inside = target.relative_to(root).parts
        if inside[0] == "_delta_log" or inside[-1].startswith("."):
            raise refused
        return target

    def _file_rows(self, target: Path) -> int:
        key = str(target)
        if key not in self._rows:
            try:
                self._rows[key] = pq.read_metadata(target).num_rows
            except Exception:  # a file being replaced, say: metering only
                return 0
            while len(self._rows) > 4096:
                self._rows.popitem(last=False)
        return self._rows[key]


def _reads_start(range_header: str | None) -> bool:
    """Rows are metered once per download: on the request that reads the file's first bytes (readers
    fetch the footer first, then the data from byte 4)."""
    if not range_header:
        return True
    match = re.match(r"^\s*bytes\s*=\s*(\d*)\s*-", range_header)
    return bool(match) and match.group(1) != "" and int(match.group(1)) <= 4


def _change_actions(commit: Commit, *, cdf: bool) -> list[tuple[str, dict]]:
    actions = commit.actions
    kinds = [next(iter(a)) for a in actions]
    out: list[tuple[str, dict]] = [("metaData", a["metaData"]) for a in actions if "metaData" in a]
    if cdf and "cdc" in kinds:
        return out + [("cdc", a["cdc"]) for a in actions if "cdc" in a]
    info = next((a["commitInfo"] for a in actions if "commitInfo" in a), {})
    if cdf and _merge_changed_nothing(info):
        return out
    for action in actions:
        if "add" in action and action["add"].get("dataChange", True):
            out.append(("add", action["add"]))
        elif "remove" in action and action["remove"].get("dataChange", True):
            out.append(("remove", action["remove"]))
    return out


def _merge_changed_nothing(info: dict) -> bool:
    metrics = info.get("operationMetrics") or {}
    names = ("num_target_rows_inserted", "num_target_rows_updated", "num_target_rows_deleted")
    spark = ("numTargetRowsInserted", "numTargetRowsUpdated", "numTargetRowsDeleted")
    return info.get("operation") == "MERGE" and any(
        all(str(metrics.get(n)) == "0" for n in group) for group in (names, spark)
    )


_ROUTES: list[tuple[tuple[str | None, ...], str, tuple[str, ...]]] = [
    (("shares",), "list_shares", ("GET",)),
    (("shares", None), "get_share", ("GET",)),
    (("shares", None, "schemas"), "list_schemas", ("GET",)),
    (("shares", None, "all-tables"), "list_all_tables", ("GET",)),
    (("shares", None, "schemas", None, "tables"), "list_tables", ("GET",)),
    (("shares", None, "schemas", None, "tables", None), "version", ("HEAD",)),  # the deprecated HEAD form
    *[
        (("shares", None, "schemas", None, "tables", None, name), name, methods)
        for name, methods in _TABLE_ENDPOINTS.items()
    ],
]


def _route(segments: list[str]) -> tuple[str, tuple[str, ...], list[str]]:
    """(endpoint, methods, names) of a protocol path; names are the share, schema and table given."""
    for pattern, endpoint, methods in _ROUTES:
        if len(pattern) == len(segments) and all(p is None or p == s for p, s in zip(pattern, segments, strict=True)):
            return endpoint, methods, [s for p, s in zip(pattern, segments, strict=True) if p is None]
    raise _not_found("no such endpoint", "unknown endpoint")


async def _read_json(request: Request) -> dict:
    """The query body: a JSON object of at most 64 KiB (an empty body is `{}`)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        raise Refusal(413, "REQUEST_TOO_LARGE", f"the body must be at most {MAX_BODY_BYTES} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise Refusal(413, "REQUEST_TOO_LARGE", f"the body must be at most {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    try:
        body = _loads(raw)
    except (ValueError, RecursionError):
        raise Refusal(400, "MALFORMED_REQUEST", "the body is not JSON") from None
    if not isinstance(body, dict):
        raise Refusal(400, "MALFORMED_REQUEST", "the body must be a JSON object")
    return body


def _json(body: dict) -> Response:
    return Response(_dumps(body), media_type="application/json; charset=utf-8")


def _ndjson(body: bytes, version: int, fmt: str, id_scheme: str | None = None) -> Response:
    headers = {"Delta-Table-Version": str(version), "delta-sharing-capabilities": f"responseformat={fmt}"}
    if id_scheme:
        headers["fileidhash"] = id_scheme
    return Response(body, headers=headers, media_type=NDJSON)


# --- keeping deliveries current -----------------------------------------------------------------


class DeliveryRefresher:
    """The background thread that keeps deliveries current; it never lets an error out of the thread.

    Each tick looks at what `refresh_deliveries` would read (the audit's version, the day, and the version
    of every approved or active order's source and delivery: a few stat() calls) and calls it only when
    one of them moved, so a quiet server does not rebuild the dataset list every two seconds.
    """

    def __init__(self, state: ShareState, seconds: float = 2.0) -> None:
        self.state, self.seconds = state, seconds
        self.runs = 0
        self.errors: list[str] = []
        self.last_error: str | None = None
        self.last_run_at: float | None = None
        self._seen: tuple | None = None
        self._reported: set[str] = set()
        self._sources: dict[str, str | None] = {}
        self._logs: dict[str, DeltaLog] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> DeliveryRefresher:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="share-refresh", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self.seconds)

    def tick(self) -> bool:
        """One look; True when refresh_deliveries ran."""
        try:
            seen = self._fingerprint()
            if seen is not None and seen == self._seen:
                return False
            failures: list[str] = []
            warehouse = self.state.warehouse
            expire_due(warehouse)
            refresh_deliveries(
                warehouse,
                self.state.pseudonymiser,
                on_error=lambda order, error: failures.append(f"{order.order_id}: {error}"),
            )
            for failure in failures:
                if failure not in self._reported:  # retried every tick, told once
                    log.warning("delivery not refreshed: %s", failure)
            self._reported = set(failures)
            self.runs += 1
            self.last_run_at = time.time()
            self.last_error = failures[-1] if failures else None
            self.errors = (self.errors + failures)[-50:]
            self._seen = None if failures else seen
            return True
        except Exception as error:  # the server goes on serving what it has; the next tick tries again
            message = f"{type(error).__name__}: {error}"
            if message != self.last_error:  # a lasting failure is logged once, with its traceback
                log.exception("refreshing the deliveries failed")
            self.last_error = message
            self.errors = [*self.errors, message][-50:]
            self._seen = None
            return False

    def _version(self, table: str) -> int:
        delta = self._logs.get(table)
        if delta is None:
            delta = self._logs[table] = DeltaLog(Path(self.state.warehouse.uri(table)), keep_snapshots=0)
        return delta.latest_version()

    def _source(self, dataset_id: str) -> str | None:
        if dataset_id not in self._sources:
            try:
                self._sources[dataset_id] = get_dataset(dataset_id).table
            except DatasetError:
                self._sources[dataset_id] = None
        return self._sources[dataset_id]

    def _fingerprint(self) -> tuple | None:
        if not self.state.warehouse.is_local:
            return None
        today = datetime.now(CST).date()
        parts: list[tuple] = []
        for order in self.state.orders().values():
            if order.effective_state(today) not in ("approved", "active"):
                continue
            source = self._source(order.dataset_id)
            if source is None:
                return None
            parts.append((order.order_id, self._version(source), self._version(delivery_table(order.order_id))))
        return today, self._version(AUDIT), tuple(sorted(parts))


# --- the application ----------------------------------------------------------------------------


def create_app(
    state: ShareState,
    *,
    refresh_seconds: float = 2.0,
    extra_routes: list[BaseRoute] | None = None,
    public_url: str | None = None,
) -> Starlette:
    """The Delta Sharing server as a Starlette app: the protocol under `/delta-sharing`, `extra_routes`
    (the catalog web page at `/catalog`) beside it, and `/` sending a browser to the catalog.

    Its lifespan starts the access log and the delivery refresher (with `refresh_seconds` <= 0, none) and
    flushes the log on shutdown. `public_url` is the scheme and host clients reach the server at, for the
    file URLs (default: the Host the request came to). `app.state.share` is `state`, for the web page.
    """
    protocol = SharingProtocol(state, public_url)
    refresher = DeliveryRefresher(state, refresh_seconds)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        state.access_log.start()
        if refresh_seconds > 0:
            refresher.start()
        log.info("sharing server started: %s, refresh every %.1f s", PREFIX, refresh_seconds)
        try:
            yield
        finally:
            refresher.stop()
            state.access_log.close()
            log.info("sharing server stopped; access log flushed")

    routes: list[BaseRoute] = [Mount(PREFIX, app=protocol)]
    if extra_routes:
        routes += extra_routes
        routes.append(Route("/", lambda request: RedirectResponse("/catalog", status_code=307)))
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.share = state
    app.state.protocol = protocol
    app.state.refresher = refresher
    return app


def build_state(settings: Settings) -> ShareState:
    """The server's state from the settings: warehouse, pseudonym key, URL signing key, access log."""
    from ingestion.pseudonym import Pseudonymiser
    from ingestion.warehouse import Warehouse
    from thematic_libs.sharing.access_log import AccessLog
    from thematic_libs.sharing.state import signing_key

    warehouse = Warehouse.at(settings.warehouse)
    if not warehouse.is_local:
        raise ValueError(f"the sharing server serves a local warehouse only, not {settings.warehouse}")
    return ShareState(
        warehouse=warehouse,
        pseudonymiser=Pseudonymiser.from_environment(default_key_file=settings.key_file),
        signing_key=signing_key(settings.home / "secrets" / "share_signing.key"),
        access_log=AccessLog(warehouse),
    )


def configure_logging(home: Path) -> Path:
    """Library and server logs to `<home>/logs/share.log`; uvicorn's start-up lines and the library's warnings
    also to stderr. uvicorn's access log stays off: the access log is `ops/share_access_log`."""
    path = home / "logs" / "share.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    to_file = logging.FileHandler(path, encoding="utf-8")
    to_file.setFormatter(formatter)
    to_file.set_name("yiwang-share-file")
    for name, console_level in (("thematic_libs.sharing", logging.WARNING), ("uvicorn.error", logging.INFO)):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        for handler in list(logger.handlers):
            if handler.get_name() in ("yiwang-share-file", "yiwang-share-console"):
                logger.removeHandler(handler)
                handler.close()
        console = logging.StreamHandler()
        console.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        console.setLevel(console_level)
        console.set_name("yiwang-share-console")
        logger.addHandler(to_file)
        logger.addHandler(console)
    return path


def serve(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
    refresh_seconds: float = 2.0,
    extra_routes: list[BaseRoute] | Callable[[ShareState], list[BaseRoute]] | None = None,
    public_url: str | None = None,
) -> None:
    """Run the server until interrupted (SIGINT/SIGTERM stop it cleanly and flush the access log).

    `extra_routes` is a list of routes, or a function of the server's state that returns them (the catalog
    web page: `serve(settings, host, port, extra_routes=web_routes)`)."""
    configure_logging(settings.home)
    state = build_state(settings)
    routes = extra_routes(state) if callable(extra_routes) else extra_routes
    app = create_app(state, refresh_seconds=refresh_seconds, extra_routes=routes, public_url=public_url)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the SIGINT it handled, after a clean stop
        _run_uvicorn(app, host, port)


def _run_uvicorn(app: Starlette, host: str, port: int) -> None:
    import importlib.util

    import uvicorn

    uvicorn.run(
        app,
        host=host,
        port=port,
        access_log=False,
        log_config=None,
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        timeout_graceful_shutdown=10,
    )
