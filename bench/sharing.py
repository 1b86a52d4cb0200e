"""Benchmark: the Delta Sharing server on 2 cores, against a real server process.

1. A warehouse with a 1,000,000-row `silver/minzheng/assistance_members` (the contract's silver schema) and
   one active order of weijian on it, delivered masked (1M rows, `member_id_number_key`).
2. The server runs as `serve()` in its own process, with its background refresh every 2 s, as in production.
3. Metadata requests/s and latency (p50, p99) with 1, 4 and 8 concurrent clients, each a thread with its own
   keep-alive connection; then the same for query requests (the table's file list with signed URLs).
4. Refresh: 1% of the source rows change (10,000 names updated, one commit); the time from that commit until
   the delivery's new version is visible through the protocol's version endpoint. Three times.

The load generator shares the 2 cores with the server (Python threads on http.client, the lightest client
at hand), so the request rates are what one server process sustains while a client eats the rest.

Targets: >= 500 metadata requests/s with p99 < 50 ms; a delivery refreshed within 10 s of its source's change.
Run: `python -m bench.sharing [--seconds 5] [--rows 1000000]`; figures in bench/out/sharing.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import polars as pl
from deltalake import write_deltalake

from ingestion.contract import get_contract
from ingestion.pseudonym import Pseudonymiser
from ingestion.warehouse import Warehouse
from thematic_libs.sharing.orders import change_order, request_order
from thematic_libs.sharing.tokens import issue_token

ROOT = Path(__file__).resolve().parent.parent
HOME = ROOT / ".yiwang" / "bench" / "share"
OUT = ROOT / "bench" / "out"
MEMBERS = "minzheng.assistance_members"
TABLE = "/delta-sharing/shares/weijian/schemas/minzheng/tables/assistance_members"
CLIENTS = (1, 4, 8)


def members(rows: int, seed: int = 7) -> pl.DataFrame:
    """A silver members table of `rows` rows: three members to a case, pseudonymised ID numbers."""
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, 2**63, size=(rows, 2), dtype=np.int64)
    now = datetime.now(UTC)
    frame = pl.DataFrame(
        {
            "case_id": [f"MZC{i // 3:07d}" for i in range(rows)],
            "member_id_number_key": [f"{a & (2**63 - 1):016x}{b & (2**63 - 1):016x}" for a, b in keys],
            "member_name": [f"成员{i:07d}" for i in range(rows)],
            "relation_to_head": np.array(["head", "spouse", "child"])[np.arange(rows) % 3],
            "disability_level_key": None,
            "_batch_id": "b0001",
            "_extracted_at": now,
            "_ingested_at": now,
        }
    )
    schema = get_contract(MEMBERS).silver_schema()
    return pl.from_arrow(frame.to_arrow().cast(schema))  # type: ignore[return-value]


def build(home: Path, rows: int) -> tuple[Warehouse, str, dict[str, str]]:
    """The warehouse, weijian's bearer token, and the server's environment."""
    shutil.rmtree(home, ignore_errors=True)
    warehouse = Warehouse.at(home / "warehouse")
    frame = members(rows)
    write_deltalake(warehouse.uri("silver/minzheng/assistance_members"), frame.to_arrow(), mode="overwrite")
    order = request_order(
        warehouse,
        dataset_id=MEMBERS,
        department="weijian",
        columns=["case_id", "member_id_number", "member_name", "relation_to_head"],
        purpose="benchmark",
    )
    change_order(warehouse, order.order_id, "approve", "minzheng", "benchmark")
    token = issue_token(warehouse, "weijian").token
    key_file = home / "secrets" / "pseudonym.key"
    Pseudonymiser.from_environment(key_file)  # creates it
    env = os.environ | {
        "YIWANG_HOME": str(home),
        "YIWANG_WAREHOUSE": warehouse.root,
        "YIWANG_PSEUDONYM_KEY_FILE": str(key_file),
        "PYTHONUNBUFFERED": "1",
    }
    return warehouse, token, env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(env: dict[str, str], port: int) -> subprocess.Popen:
    code = (
        "from ingestion.settings import Settings; from thematic_libs.sharing.server import serve; "
        f"serve(Settings.from_env(), '127.0.0.1', {port}, refresh_seconds=2.0)"
    )
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT)


def request(connection: http.client.HTTPConnection, method: str, path: str, headers: dict, body: bytes | None):
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    response.read()
    return response


def version(port: int, token: str) -> int | None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        answer = request(connection, "GET", f"{TABLE}/version", {"Authorization": f"Bearer {token}"}, None)
        return int(answer.getheader("Delta-Table-Version")) if answer.status == 200 else None
    except OSError:
        return None
    finally:
        connection.close()


def wait_version(port: int, token: str, above: int, timeout: float) -> tuple[int, float]:
    """The first version above `above` the protocol reports, and when it was seen (perf_counter)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        seen = version(port, token)
        if seen is not None and seen > above:
            return seen, time.perf_counter()
        time.sleep(0.02)
    raise TimeoutError(f"no version above {above} within {timeout:.0f} s")


def load(port: int, token: str, kind: str, clients: int, seconds: float) -> dict:
    """`clients` threads hammering one endpoint with keep-alive connections for `seconds`."""
    method, path, body = ("GET", f"{TABLE}/metadata", None) if kind == "metadata" else ("POST", f"{TABLE}/query", b"{}")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def worker(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        request(connection, method, path, headers, body)  # warm the connection
        start.wait()
        mine = latencies[index]
        while time.perf_counter() < stop_at[0]:
            began = time.perf_counter()
            try:
                answer = request(connection, method, path, headers, body)
                if answer.status != 200:
                    errors[index] += 1
            except OSError:
                errors[index] += 1
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            mine.append(time.perf_counter() - began)
        connection.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    start.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    every = np.array([x for chunk in latencies for x in chunk]) * 1000
    return {
        "endpoint": kind,
        "clients": clients,
        "requests": int(every.size),
        "errors": int(sum(errors)),
        "seconds": round(elapsed, 2),
        "requests_per_s": round(every.size / elapsed, 1),
        "p50_ms": round(float(np.percentile(every, 50)), 2),
        "p99_ms": round(float(np.percentile(every, 99)), 2),
    }


def change_one_percent(warehouse: Warehouse, round_: int) -> int:
    """Update the names of 1% of the members in one commit (an overwrite, as a silver apply does)."""
    uri = warehouse.uri("silver/minzheng/assistance_members")
    frame = pl.from_arrow(warehouse.table("silver/minzheng/assistance_members").to_pyarrow_table())
    step = 100
    changed = frame.with_columns(
        pl.when((pl.int_range(pl.len()) + round_) % step == 0)
        .then(pl.format("改{}_{}", pl.col("member_name"), pl.lit(round_)))
        .otherwise(pl.col("member_name"))
        .alias("member_name")
    )
    write_deltalake(uri, changed.to_arrow(), mode="overwrite")
    return frame.height // step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--refreshes", type=int, default=3)
    args = parser.parse_args()

    print(f"building a {args.rows:,}-row source and its order ...", flush=True)
    warehouse, token, env = build(HOME, args.rows)
    port = free_port()
    server = start_server(env, port)
    result: dict = {"date": date.today().isoformat(), "rows": args.rows, "cores": os.cpu_count()}
    try:
        began = time.perf_counter()
        first, _ = wait_version(port, token, -1, timeout=300)
        result["first_delivery_s"] = round(time.perf_counter() - began, 2)
        print(f"delivery {first} of {args.rows:,} rows visible after {result['first_delivery_s']} s", flush=True)
        runs = []
        for kind in ("metadata", "query"):
            for clients in CLIENTS:
                run = load(port, token, kind, clients, args.seconds)
                runs.append(run)
                print(
                    f"{kind:8} {clients} clients: {run['requests_per_s']:8.1f} req/s  p50 {run['p50_ms']:6.2f} ms  "
                    f"p99 {run['p99_ms']:6.2f} ms  errors {run['errors']}",
                    flush=True,
                )
        result["load"] = runs
        refreshes = []
        current = first
        for round_ in range(1, args.refreshes + 1):
            time.sleep(1.0)
            changed = change_one_percent(warehouse, round_)
            committed = time.perf_counter()
            current, seen = wait_version(port, token, current, timeout=120)
            refreshes.append({"changed_rows": changed, "seconds": round(seen - committed, 2), "version": current})
            print(f"refresh {round_}: {changed:,} rows changed, visible after {seen - committed:.2f} s", flush=True)
        result["refresh"] = refreshes
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    metadata8 = next(r for r in result["load"] if r["endpoint"] == "metadata" and r["clients"] == 8)
    slowest = max(r["seconds"] for r in result["refresh"])
    result["targets"] = {
        "metadata_8_clients_rps>=500": metadata8["requests_per_s"] >= 500,
        "metadata_8_clients_p99<50ms": metadata8["p99_ms"] < 50,
        "refresh<=10s": slowest <= 10,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "sharing.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    print()
    print("| endpoint | clients | req/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|")
    for run in result["load"]:
        print(
            f"| {run['endpoint']} | {run['clients']} | {run['requests_per_s']:,.0f} | {run['p50_ms']} | "
            f"{run['p99_ms']} | {run['errors']} |"
        )
    print(f"\nrefresh after a 1% change of {args.rows:,} rows: {[r['seconds'] for r in result['refresh']]} s")
    print(f"targets: {result['targets']}; load average {result['load_average']}; written to {OUT / 'sharing.json'}")


if __name__ == "__main__":
    main()
