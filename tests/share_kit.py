"""What the sharing tests share: a small real warehouse, a running sharing server, department profiles, plain
HTTP helpers and the official Delta Sharing client run in its own environment.

Stable helpers (the web page test may use them too): `member_rows`, `write_members`, `grid_rows`,
`write_grids`, `resource_rows`, `write_resources`, `small_warehouse`, `share_state`, `running_server`
(-> `RunningServer`), `share_world` (-> `ShareWorld`: all of it at once), `issue_profile`, `order_and_approve`,
`wait_for`, `wait_active`, `api`, `raw_request`, `access_rows`, `require_client`, `run_client`,
`start_client`, `client_results`.
"""

from __future__ import annotations

import http.client
import json
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
import requests
import uvicorn
from deltalake import write_deltalake
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from ingestion.contract import get_contract
from ingestion.pseudonym import Pseudonymiser
from ingestion.warehouse import Warehouse
from tests.conftest import resident_id
from thematic_libs.sharing.access_log import AccessLog, read_access_log
from thematic_libs.sharing.orders import Order, change_order, request_order
from thematic_libs.sharing.server import PREFIX, create_app
from thematic_libs.sharing.state import ShareState
from thematic_libs.sharing.tokens import issue_token, write_profile

ROOT = Path(__file__).resolve().parent.parent
CLIENT_PYTHON = ROOT / ".venv-share-client" / "bin" / "python"
MEMBERS = "minzheng.assistance_members"
GRIDS = "zhengshu.grid_registry"
RESOURCES = "yingji.emergency_resources"


# --- the warehouse ------------------------------------------------------------------------------


def member_rows(people: int, start: int = 0) -> list[dict]:
    """Raw members (ID numbers in the clear, as bronze has them): three to a case."""
    return [
        {
            "case_id": f"MZC{i // 3:05d}",
            "member_id_number": resident_id(i),
            "member_name": f"成员{i:04d}",
            "relation_to_head": ("head", "spouse", "child")[i % 3],
            "disability_level": "2" if i % 4 == 0 else None,
        }
        for i in range(start, start + people)
    ]


def _batch() -> dict:
    now = datetime.now(UTC)
    return {"_batch_id": "b0001", "_extracted_at": now, "_ingested_at": now}


def write_members(warehouse: Warehouse, pseudonymiser: Pseudonymiser, rows: list[dict]) -> None:
    """Bronze (raw ID numbers) and silver (their pseudonyms) of the members, as the pipeline leaves them;
    each call replaces both (a new version of each)."""
    contract = get_contract(MEMBERS)
    batch = _batch()
    origin = {"_source_level": "district", "_department": "minzheng", "_source_file": "members.csv"}
    bronze = [row | batch | origin | {"_row_number": i} for i, row in enumerate(rows)]
    silver = [
        {
            "case_id": row["case_id"],
            "member_id_number_key": pseudonymiser.pseudonym(row["member_id_number"]),
            "member_name": row["member_name"],
            "relation_to_head": row["relation_to_head"],
            "disability_level_key": row["disability_level"] and pseudonymiser.pseudonym(row["disability_level"]),
        }
        | batch
        for row in rows
    ]
    for layer, frame, schema in (
        ("bronze", bronze, contract.bronze_schema()),
        ("silver", silver, contract.silver_schema()),
    ):
        table = pa.Table.from_pylist(frame, schema=schema)
        write_deltalake(warehouse.uri(f"{layer}/{contract.table_path}"), table, mode="overwrite")


def grid_rows(count: int, start: int = 0) -> list[dict]:
    return [
        {
            "grid_code": f"G{i:04d}",
            "grid_name": f"网格{i:04d}",
            "community_code": f"4406050010{i % 5:02d}",
            "community_name": f"社区{i % 5}",
            "street_code": f"44060500{1 + i % 2}",
            "street_name": "桂城街道" if i % 2 == 0 else "大沥镇",
            "district_code": "440605",
            "district_name": "南海区",
            "center_lon": 113.1 + i / 1000,
            "center_lat": 23.0 + i / 1000,
            "polygon_wkt": None,
            "grid_worker_id": f"W{i:04d}",
        }
        for i in range(start, start + count)
    ]


def _write_silver(warehouse: Warehouse, dataset_id: str, rows: list[dict]) -> None:
    contract = get_contract(dataset_id)
    table = pa.Table.from_pylist([row | _batch() for row in rows], schema=contract.silver_schema())
    write_deltalake(warehouse.uri(f"silver/{contract.table_path}"), table, mode="overwrite")


def write_grids(warehouse: Warehouse, rows: list[dict]) -> None:
    _write_silver(warehouse, GRIDS, rows)


def resource_rows(count: int) -> list[dict]:
    return [
        {
            "resource_id": f"R{i:04d}",
            "resource_type": ("shelter", "pump", "boat")[i % 3],
            "name": f"物资点{i:04d}",
            "lon": 113.1 + i / 1000,
            "lat": 23.0 + i / 1000,
            "capacity": float(10 * (i % 7)),
            "owner_department": "yingji",
        }
        for i in range(count)
    ]


def write_resources(warehouse: Warehouse, rows: list[dict]) -> None:
    _write_silver(warehouse, RESOURCES, rows)


def small_warehouse(root: Path, pseudonymiser: Pseudonymiser, *, people: int = 30, grids: int = 40) -> Warehouse:
    """Members (bronze and silver) and grids in silver; no emergency resources (tests add them when needed)."""
    warehouse = Warehouse.at(root / "warehouse")
    write_members(warehouse, pseudonymiser, member_rows(people))
    write_grids(warehouse, grid_rows(grids))
    return warehouse


def share_state(warehouse: Warehouse, pseudonymiser: Pseudonymiser, *, url_seconds: int = 900) -> ShareState:
    return ShareState(
        warehouse=warehouse,
        pseudonymiser=pseudonymiser,
        signing_key=secrets.token_bytes(32),
        access_log=AccessLog(warehouse, flush_seconds=0.5),
        url_seconds=url_seconds,
    )


# --- the server ---------------------------------------------------------------------------------


@dataclass
class RunningServer:
    app: Starlette
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> str:
        """What a profile names: the protocol's prefix on this server."""
        return f"{self.url}{PREFIX}"


@contextmanager
def running_server(
    state: ShareState,
    *,
    refresh_seconds: float = 0.2,
    extra_routes: list[BaseRoute] | None = None,
) -> Iterator[RunningServer]:
    """The real app (lifespan included: access log and delivery refresher) under uvicorn on a free loopback
    port, in a thread, for as long as the block runs; the access log is flushed when it stops."""
    app = create_app(state, refresh_seconds=refresh_seconds, extra_routes=extra_routes)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test sharing server did not start")
        time.sleep(0.02)
    try:
        yield RunningServer(app, sock.getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@dataclass
class ShareWorld:
    """A small warehouse with its sharing server running: what most sharing tests start from."""

    root: Path
    pseudonymiser: Pseudonymiser
    warehouse: Warehouse
    state: ShareState
    server: RunningServer

    def profile(self, department: str) -> tuple[Path, str]:
        """A new profile file (and its bearer token) of `department` for this server."""
        return issue_profile(self.warehouse, department, self.server.endpoint, self.root / "profiles")


@contextmanager
def share_world(
    root: Path,
    *,
    people: int = 30,
    grids: int = 40,
    refresh_seconds: float = 0.2,
    extra_routes: Callable[[ShareState], list[BaseRoute]] | None = None,
) -> Iterator[ShareWorld]:
    """`small_warehouse` + `share_state` + `running_server`; `extra_routes` builds routes from the state."""
    pseudonymiser = Pseudonymiser(secrets.token_bytes(32))
    warehouse = small_warehouse(root, pseudonymiser, people=people, grids=grids)
    state = share_state(warehouse, pseudonymiser)
    routes = extra_routes(state) if extra_routes else None
    with running_server(state, refresh_seconds=refresh_seconds, extra_routes=routes) as server:
        yield ShareWorld(root, pseudonymiser, warehouse, state, server)


def issue_profile(warehouse: Warehouse, department: str, endpoint: str, directory: Path) -> tuple[Path, str]:
    """A fresh token of `department` and its profile file; returns (profile path, bearer token)."""
    issued = issue_token(warehouse, department)
    path = write_profile(issued, endpoint, directory / f"{department}-{issued.token_id}.share")
    return path, issued.token


def order_and_approve(
    warehouse: Warehouse,
    dataset_id: str,
    department: str,
    columns: list[str],
    *,
    row_filter: str | None = None,
    until: date | None = None,
    legal_basis: str | None = None,
    now: datetime | None = None,
) -> Order:
    """Request an order and approve it as the owner would (an unconditional dataset approves itself)."""
    order = request_order(
        warehouse,
        dataset_id=dataset_id,
        department=department,
        columns=columns,
        purpose="测试核对",
        row_filter=row_filter,
        until=until,
        legal_basis=legal_basis,
        now=now,
    )
    if order.state == "requested":
        order = change_order(warehouse, order.order_id, "approve", order.owner_department, "ok", now=now)
    return order


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, what: str = "it") -> Any:
    """The first value of `condition()` that is neither None nor False, polling; fails the test after `timeout`
    seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:.0f} s for {what}")
        time.sleep(interval)


def wait_active(state: ShareState, order_id: str, timeout: float = 20.0) -> Order:
    """The order once the server's refresher has built its delivery and activated it."""

    def active() -> Order | None:
        order = state.orders().get(order_id)
        return order if order is not None and order.state == "active" else None

    return wait_for(active, timeout, what=f"{order_id} to become active")


def api(
    server: RunningServer,
    token: str | None,
    method: str,
    path: str,
    *,
    body: Any = None,
    headers: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
) -> requests.Response:
    """One protocol request (`path` under /delta-sharing) with the department's bearer token."""
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
    return requests.request(
        method, f"{server.endpoint}{path}", data=data, headers=sent, params=params, timeout=30, allow_redirects=False
    )


def raw_request(
    port: int, method: str, target: str, headers: dict[str, str] | None = None, body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    """A request whose target goes out byte for byte (no client normalises `..` or percent-escapes)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest(method, target, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def access_rows(state: ShareState) -> pl.DataFrame:
    """Every access-log row so far (what the server buffered is written first)."""
    state.access_log.flush()
    return read_access_log(state.warehouse)


# --- the official client ------------------------------------------------------------------------

# Runs in .venv-share-client (delta-sharing 1.4.2 pins pyarrow <= 23): argv = profile, ops JSON, results file.
CLIENT_SCRIPT = r"""
import json, sys, time, traceback
from pathlib import Path
import delta_sharing

profile, ops, results = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3])
client = delta_sharing.SharingClient(profile)

def run(op):
    kind = op["op"]
    url = f"{profile}#{op.get('table', '')}"
    if kind == "list_all_tables":
        return {"tables": sorted(f"{t.share}.{t.schema}.{t.name}" for t in client.list_all_tables())}
    if kind == "list_shares":
        return {"shares": [s.name for s in client.list_shares()]}
    if kind == "version":
        return {"version": delta_sharing.get_table_version(url)}
    if kind == "metadata":
        meta = delta_sharing.get_table_metadata(url)
        return {"schema": meta.schema_string, "id": meta.id}
    if kind == "load":
        frame = delta_sharing.load_as_pandas(
            url, limit=op.get("limit"), version=op.get("version"), jsonPredicateHints=op.get("predicate"),
            use_delta_format=op.get("delta"),
        )
    elif kind == "changes":
        frame = delta_sharing.load_table_changes_as_pandas(
            url, starting_version=op.get("start"), ending_version=op.get("end"), use_delta_format=op.get("delta")
        )
    elif kind == "wait_file":
        deadline = time.monotonic() + op.get("timeout", 60)
        while not Path(op["path"]).exists():
            if time.monotonic() > deadline:
                raise TimeoutError(op["path"])
            time.sleep(0.02)
        return {}
    else:
        raise ValueError(kind)
    frame.to_parquet(op["out"], index=False)
    return {"rows": len(frame), "columns": list(frame.columns)}

with results.open("a", encoding="utf-8") as out:
    for op in ops:
        try:
            result = {"ok": True, **run(op)}
        except Exception as error:
            result = {"ok": False, "error": type(error).__name__, "message": str(error)[:2000],
                      "trace": traceback.format_exc()[-2000:]}
        out.write(json.dumps({"op": op["op"], **result}, ensure_ascii=False) + "\n")
        out.flush()
"""


def require_client() -> Path:
    """The official client's interpreter, or a skip saying how to get it."""
    if not CLIENT_PYTHON.exists():
        pytest.skip(f"{CLIENT_PYTHON} is missing: `make setup` creates .venv-share-client (delta-sharing 1.4.2)")
    return CLIENT_PYTHON


def start_client(profile: Path, ops: list[dict], results: Path) -> subprocess.Popen:
    """The official client running `ops` in order, one JSON line per op appended to `results`."""
    return subprocess.Popen(
        [str(require_client()), "-c", CLIENT_SCRIPT, str(profile), json.dumps(ops), str(results)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def client_results(results: Path) -> list[dict]:
    if not results.exists():
        return []
    return [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines() if line.strip()]


def run_client(profile: Path, ops: list[dict], work: Path, timeout: float = 180) -> list[dict]:
    """Run `ops` with the official client and return one result per op (`ok`, and what the op returned)."""
    work.mkdir(parents=True, exist_ok=True)
    results = work / f"results-{secrets.token_hex(4)}.jsonl"
    process = start_client(profile, ops, results)
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(f"the official client did not finish in {timeout:.0f} s")
    found = client_results(results)
    if len(found) != len(ops):
        pytest.fail(f"the official client stopped after {len(found)} of {len(ops)} ops: {stderr[-3000:]}")
    return found
