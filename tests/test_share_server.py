"""The Delta Sharing server against real Delta tables: the official client reads what an order delivers and follows
its changes; the protocol's shapes, pagination, time travel, file skipping, signed file downloads, metering, the
delivery refresher and `serve()` itself. No mocks: a real uvicorn on loopback, real deliveries."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
import requests
from deltalake import DeltaTable, write_deltalake
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from ingestion.pseudonym import Pseudonymiser
from tests.share_kit import (
    GRIDS,
    MEMBERS,
    RESOURCES,
    ShareWorld,
    access_rows,
    api,
    issue_profile,
    member_rows,
    order_and_approve,
    require_client,
    resource_rows,
    run_client,
    running_server,
    share_state,
    share_world,
    small_warehouse,
    wait_active,
    wait_for,
    write_members,
    write_resources,
)
from thematic_libs.sharing.deliveries import delivery_table
from thematic_libs.sharing.server import DeltaLog, file_may_match, limit_files, parse_json_predicate, share_id

MEMBER_COLUMNS = ["case_id", "member_id_number", "member_name", "relation_to_head"]
DELIVERED = ["case_id", "member_id_number_key", "member_name", "relation_to_head"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> ShareWorld:
    with share_world(tmp_path_factory.mktemp("share_server")) as built:
        yield built


@pytest.fixture(scope="module")
def chengguan(world: ShareWorld) -> dict:
    """chengguan with two active tables: grids (unconditional, approved on request) and members."""
    _, token = world.profile("chengguan")
    grids = order_and_approve(world.warehouse, GRIDS, "chengguan", ["grid_code", "grid_name", "center_lat"])
    members = order_and_approve(world.warehouse, MEMBERS, "chengguan", ["case_id", "member_name"])
    wait_active(world.state, grids.order_id)
    wait_active(world.state, members.order_id)
    return {"token": token, "grids": grids, "members": members}


def delivery(world: ShareWorld, order_id: str) -> DeltaTable:
    return DeltaTable(world.warehouse.uri(delivery_table(order_id)))


def lines(response: requests.Response) -> list[dict]:
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def table_path(share: str, dataset_id: str) -> str:
    schema, table = dataset_id.split(".")
    return f"/shares/{share}/schemas/{schema}/tables/{table}"


# --- the official client ------------------------------------------------------------------------


def test_official_client_reads_a_delivery_and_follows_its_changes(world: ShareWorld):
    require_client()
    profile, token = world.profile("weijian")
    order = order_and_approve(world.warehouse, MEMBERS, "weijian", MEMBER_COLUMNS)
    assert order.state == "approved"  # a sensitive column: the owner approved it
    wait_active(world.state, order.order_id)
    first = delivery(world, order.order_id).version()
    url = "weijian.minzheng.assistance_members"
    out = world.root / "client"
    out.mkdir(exist_ok=True)
    results = run_client(
        profile,
        [
            {"op": "list_all_tables"},
            {"op": "load", "table": url, "out": str(out / "all.parquet")},
            {"op": "load", "table": url, "limit": 5, "out": str(out / "five.parquet")},
            {"op": "version", "table": url},
            {"op": "metadata", "table": url},
        ],
        out,
    )
    assert all(r["ok"] for r in results), results
    assert results[0]["tables"] == [url]
    expected = pl.from_arrow(delivery(world, order.order_id).to_pyarrow_table()).sort("member_id_number_key")
    loaded = pl.read_parquet(out / "all.parquet").sort("member_id_number_key")
    assert loaded.columns == DELIVERED
    assert loaded.to_dicts() == expected.to_dicts() and loaded.height == 30
    assert pl.read_parquet(out / "five.parquet").height == 5
    assert results[3]["version"] == first
    assert [f["name"] for f in json.loads(results[4]["schema"])["fields"]] == DELIVERED

    # the source changes: two rows updated, one deleted, one inserted
    rows = member_rows(30)
    rows[0]["member_name"] = "改名甲"
    rows[1]["relation_to_head"] = "head"
    deleted = rows.pop(5)
    rows += member_rows(1, start=100)
    write_members(world.warehouse, world.pseudonymiser, rows)
    path = table_path("weijian", MEMBERS)

    def moved() -> int | None:
        version = int(api(world.server, token, "GET", f"{path}/version").headers["Delta-Table-Version"])
        return version if version > first else None

    second = wait_for(moved, what="the delivery to follow its source")
    results = run_client(
        profile,
        [
            {"op": "changes", "table": url, "start": second, "end": second, "out": str(out / "changes.parquet")},
            {"op": "changes", "table": url, "start": 0, "out": str(out / "history.parquet")},
            {"op": "load", "table": url, "out": str(out / "after.parquet")},
            {"op": "load", "table": url, "version": first, "out": str(out / "before.parquet")},
        ],
        out,
    )
    assert all(r["ok"] for r in results), results
    changes = pl.read_parquet(out / "changes.parquet")
    assert changes.columns == [*DELIVERED, "_change_type", "_commit_version", "_commit_timestamp"]
    assert Counter(changes["_change_type"]) == {"update_preimage": 2, "update_postimage": 2, "insert": 1, "delete": 1}
    assert set(changes["_commit_version"]) == {second}
    post = changes.filter(pl.col("_change_type") == "update_postimage")
    assert set(post["member_name"]) == {"改名甲", "成员0001"} and "head" in set(post["relation_to_head"])
    assert changes.filter(pl.col("_change_type") == "delete")["member_name"].to_list() == [deleted["member_name"]]
    assert changes.filter(pl.col("_change_type") == "insert")["member_name"].to_list() == ["成员0100"]
    history = pl.read_parquet(out / "history.parquet")
    assert history.filter(pl.col("_commit_version") == first)["_change_type"].to_list() == ["insert"] * 30
    after = pl.read_parquet(out / "after.parquet").sort("member_id_number_key")
    current = pl.from_arrow(delivery(world, order.order_id).to_pyarrow_table()).sort("member_id_number_key")
    assert after.to_dicts() == current.to_dicts() and "改名甲" in set(after["member_name"])
    assert pl.read_parquet(out / "before.parquet").sort("member_id_number_key").to_dicts() == expected.to_dicts()


# --- listings -----------------------------------------------------------------------------------


def test_listings_and_signed_pagination(world: ShareWorld, chengguan: dict):
    token, server = chengguan["token"], world.server
    shares = api(server, token, "GET", "/shares").json()
    assert shares == {"items": [{"name": "chengguan", "id": share_id("chengguan")}]}
    empty = api(server, token, "GET", "/shares", params={"maxResults": 0}).json()
    assert empty["items"] == [] and empty["nextPageToken"]
    assert api(server, token, "GET", "/shares/ChengGuan").json() == {
        "share": {"name": "chengguan", "id": share_id("chengguan")}
    }
    schemas = api(server, token, "GET", "/shares/chengguan/schemas").json()["items"]
    assert schemas == [{"name": "minzheng", "share": "chengguan"}, {"name": "zhengshu", "share": "chengguan"}]
    tables = api(server, token, "GET", "/shares/chengguan/schemas/zhengshu/tables").json()["items"]
    assert [(t["name"], t["id"]) for t in tables] == [("grid_registry", chengguan["grids"].order_id)]
    assert api(server, token, "GET", "/shares/chengguan/schemas/gongan/tables").status_code == 404

    first = api(server, token, "GET", "/shares/chengguan/all-tables", params={"maxResults": 1}).json()
    assert len(first["items"]) == 1 and first["nextPageToken"]
    second = api(
        server,
        token,
        "GET",
        "/shares/chengguan/all-tables",
        params={"maxResults": 1, "pageToken": first["nextPageToken"]},
    ).json()
    assert "nextPageToken" not in second
    names = [t["schema"] + "." + t["name"] for t in first["items"] + second["items"]]
    assert names == ["minzheng.assistance_members", "zhengshu.grid_registry"]
    assert all(t["share"] == "chengguan" and t["shareId"] == share_id("chengguan") for t in first["items"])

    _, other = world.profile("gongan")
    bad = {
        "forged": (token, {"pageToken": first["nextPageToken"][:-2] + "AA"}),
        "garbage": (token, {"pageToken": "%%%"}),
        "another department's": (other, {"pageToken": first["nextPageToken"]}),
        "negative": (token, {"maxResults": -1}),
        "not a number": (token, {"maxResults": "ten"}),
        "unknown parameter": (token, {"limit": 3}),
    }
    for what, (who, params) in bad.items():
        response = api(server, who, "GET", "/shares/chengguan/all-tables" if who == token else "/shares", params=params)
        assert response.status_code == 400, what
        assert set(response.json()) == {"errorCode", "message"}, what


# --- table endpoints ----------------------------------------------------------------------------


def test_version_metadata_query_and_changes_shapes(world: ShareWorld, chengguan: dict):
    token, server, order = chengguan["token"], world.server, chengguan["grids"]
    path = table_path("chengguan", GRIDS)
    latest = delivery(world, order.order_id).version()

    version = api(server, token, "GET", f"{path}/version")
    assert version.status_code == 200 and version.headers["Delta-Table-Version"] == str(latest) and not version.text
    assert api(server, token, "HEAD", f"{path}/version").headers["Delta-Table-Version"] == str(latest)
    assert api(server, token, "HEAD", path).headers["Delta-Table-Version"] == str(latest)  # the deprecated form
    early = api(server, token, "GET", f"{path}/version", params={"startingTimestamp": "2000-01-01T00:00:00Z"})
    assert early.headers["Delta-Table-Version"] == "0"
    for stamp in ("2999-01-01T00:00:00Z", "yesterday", ""):
        assert api(server, token, "GET", f"{path}/version", params={"startingTimestamp": stamp}).status_code == 400

    metadata = api(server, token, "GET", f"{path}/metadata")
    assert metadata.headers["content-type"].startswith("application/x-ndjson")
    assert metadata.headers["delta-sharing-capabilities"] == "responseformat=parquet"
    protocol, meta = lines(metadata)
    assert protocol == {"protocol": {"minReaderVersion": 1}}
    fields = json.loads(meta["metaData"]["schemaString"])["fields"]
    assert [f["name"] for f in fields] == ["grid_code", "grid_name", "center_lat"]
    assert meta["metaData"]["format"] == {"provider": "parquet"} and meta["metaData"]["partitionColumns"] == []
    assert meta["metaData"]["configuration"] == {"enableChangeDataFeed": "true"}
    # the official client's format negotiation: it offers both and reads parquet
    both = {"delta-sharing-capabilities": "responseformat=delta,parquet;readerfeatures=deletionvectors"}
    assert api(server, token, "GET", f"{path}/metadata", headers=both).headers["delta-sharing-capabilities"] == (
        "responseformat=parquet"
    )
    delta_only = api(
        server, token, "GET", f"{path}/metadata", headers={"delta-sharing-capabilities": "responseformat=delta"}
    )
    head = lines(delta_only)
    assert head[0]["protocol"]["deltaProtocol"]["minReaderVersion"] == 1
    assert head[1]["metaData"]["deltaMetadata"]["schemaString"] == meta["metaData"]["schemaString"]
    unknown_format = {"delta-sharing-capabilities": "responseformat=csv"}
    assert api(server, token, "GET", f"{path}/metadata", headers=unknown_format).status_code == 400

    query = api(server, token, "POST", f"{path}/query", body={}, headers={"fileidhash": "Parquet"})
    assert query.headers["fileidhash"] == "parquet" and query.headers["Delta-Table-Version"] == str(latest)
    files = [line["file"] for line in lines(query)[2:]]
    assert files and all(f["url"].startswith(f"{server.endpoint}/files/{order.order_id}/") for f in files)
    assert all(
        json.loads(f["stats"])["numRecords"] > 0 and f["expirationTimestamp"] > time.time() * 1000 for f in files
    )
    travel = lines(api(server, token, "POST", f"{path}/query", body={"version": 0}))
    assert travel[1]["metaData"]["version"] == 0 and all(line["file"]["version"] == 0 for line in travel[2:])
    stream = lines(api(server, token, "POST", f"{path}/query", body={"startingVersion": 0}))
    assert stream[2]["add"]["version"] == 0 and stream[2]["add"]["timestamp"] > 0
    delta_query = lines(
        api(
            server,
            token,
            "POST",
            f"{path}/query",
            body={},
            headers={"delta-sharing-capabilities": "responseformat=delta"},
        )
    )
    assert delta_query[2]["file"]["deltaSingleAction"]["add"]["path"].startswith(server.endpoint)

    refused_bodies = [
        {"version": latest + 5},
        {"version": 0, "timestamp": "2020-01-01T00:00:00Z"},
        {"limitHint": "ten"},
        {"limitHint": True},
        {"version": -1},
        {"version": 1.5},
        {"predicateHints": "a = 1"},
        {"jsonPredicateHints": {"op": "equal"}},
        {"endingVersion": 3},
        {"select": "*"},
        [1, 2],
        "not json {",
    ]
    for body in refused_bodies:
        raw = body if isinstance(body, str) else json.dumps(body)
        response = api(server, token, "POST", f"{path}/query", body=raw)
        assert response.status_code == 400, body
        assert set(response.json()) == {"errorCode", "message"}
    assert api(server, token, "POST", f"{path}/query", body=b"{" + b" " * 70_000 + b"}").status_code == 413
    assert api(server, token, "POST", f"{path}/query", headers={"fileidhash": "md5"}).status_code == 400
    assert api(server, token, "GET", f"{path}/query").status_code == 405

    changes = api(server, token, "GET", f"{path}/changes", params={"startingVersion": 0})
    assert changes.headers["Delta-Table-Version"] == "0"
    assert {next(iter(line)) for line in lines(changes)[2:]} <= {"add", "cdf", "remove"}
    for params in (
        {},
        {"startingVersion": latest + 1},
        {"startingVersion": 1, "endingVersion": 0},
        {"startingVersion": 0, "startingTimestamp": "2020-01-01T00:00:00Z"},
        {"startingVersion": 0, "includeHistoricalMetadata": "maybe"},
        {"startingVersion": "x"},
        {"startingVersion": 0, "version": 1},
    ):
        assert api(server, token, "GET", f"{path}/changes", params=params).status_code == 400, params
    by_time = api(server, token, "GET", f"{path}/changes", params={"startingTimestamp": "2000-01-01T00:00:00Z"})
    assert by_time.status_code == 200 and by_time.headers["Delta-Table-Version"] == "0"


def test_json_predicates_skip_files_only_when_stats_prove_it():
    stats = {
        "numRecords": 10,
        "minValues": {"code": "G0010", "lat": 23.1, "day": "2026-01-01", "at": "2026-01-01T00:00:00.000Z"},
        "maxValues": {"code": "G0019", "lat": 23.9, "day": "2026-01-31", "at": "2026-01-01T00:00:00.000Z"},
        "nullCount": {"code": 0, "lat": 2, "day": 0, "at": 0, "gone": 10},
    }

    def leaf(op: str, name: str, value: object, value_type: str) -> dict:
        return {
            "op": op,
            "children": [
                {"op": "column", "name": name, "valueType": value_type},
                {"op": "literal", "value": value, "valueType": value_type},
            ],
        }

    def join(op: str, *children: dict) -> dict:
        return {"op": op, "children": list(children)}

    def isnull(name: str) -> dict:
        return {"op": "isNull", "children": [{"op": "column", "name": name, "valueType": "string"}]}

    cases = [
        (leaf("equal", "code", "G0015", "string"), True),
        (leaf("equal", "code", "G0020", "string"), False),
        (leaf("lessThan", "lat", "23.1", "double"), False),
        (leaf("lessThanOrEqual", "lat", "23.1", "double"), True),
        (leaf("greaterThan", "lat", "23.9", "double"), False),
        (leaf("greaterThanOrEqual", "lat", "23.9", "double"), True),
        (leaf("equal", "day", "2026-02-01", "date"), False),
        (leaf("equal", "day", "2026-01-15", "date"), True),
        # timestamps are kept to the millisecond: 00:00:00.000500 may be in the file
        (leaf("equal", "at", "2026-01-01T00:00:00.0005+00:00", "timestamp"), True),
        (leaf("greaterThan", "at", "2026-01-01T00:00:01Z", "timestamp"), False),
        (join("and", leaf("equal", "code", "G0015", "string"), leaf("lessThan", "lat", "1", "double")), False),
        (join("or", leaf("equal", "code", "G0099", "string"), leaf("lessThan", "lat", "24", "double")), True),
        ({"op": "not", "children": [leaf("lessThan", "lat", "30", "double")]}, False),  # every non-null lat < 30
        ({"op": "not", "children": [leaf("equal", "code", "G0015", "string")]}, True),
        (isnull("lat"), True),
        (isnull("code"), False),
        ({"op": "not", "children": [isnull("gone")]}, False),
        (leaf("equal", "gone", "x", "string"), False),  # all NULL: a comparison is never true
        (leaf("equal", "missing", "x", "string"), True),  # no stats: kept
        (leaf("equal", "lat", "not a number", "double"), True),  # cannot compare: kept
        ({"op": "like", "children": []}, True),  # an op the protocol does not define: kept
        ({"op": "equal", "children": [{"op": "literal", "value": "G0099", "valueType": "string"},
                                      {"op": "column", "name": "code", "valueType": "string"}]}, False),
    ]  # fmt: skip
    for predicate, expected in cases:
        assert file_may_match(predicate, stats) is expected, predicate
    assert file_may_match(cases[1][0], None) is True
    assert parse_json_predicate("not json") is None and parse_json_predicate("[1]") is None
    deep = '{"op":"not","children":[' * 200 + '{"op":"isNull"}' + "]}" * 200
    assert parse_json_predicate(deep) is None  # too deep: every file kept
    files = [{"path": str(i), "n": n} for i, n in enumerate([5, 5, None, 5])]
    assert [f["path"] for f in limit_files(files, 6, lambda f: f["n"])] == ["0", "1"]
    assert [f["path"] for f in limit_files(files, 11, lambda f: f["n"])] == ["0", "1", "2", "3"]
    assert limit_files(files, 0, lambda f: f["n"]) == []


def test_query_skips_files_by_stats_and_limit(world: ShareWorld, chengguan: dict):
    """Three more files in the grid delivery, with distinct ranges: the hints choose among them."""
    token, server, order = chengguan["token"], world.server, chengguan["grids"]
    uri = world.warehouse.uri(delivery_table(order.order_id))
    for block in (1, 2, 3):
        rows = [
            {"grid_code": f"X{block}{i:03d}", "grid_name": f"块{block}", "center_lat": 30.0 + block} for i in range(4)
        ]
        write_deltalake(uri, pa.Table.from_pylist(rows), mode="append")
    path = table_path("chengguan", GRIDS)

    def files(body: dict) -> list[dict]:
        response = api(server, token, "POST", f"{path}/query", body=body)
        assert response.status_code == 200, response.text
        return [json.loads(line["file"]["stats"]) for line in lines(response)[2:]]

    every = files({})
    assert len(every) == 4
    equal = {"op": "equal", "children": [{"op": "column", "name": "grid_code", "valueType": "string"},
                                         {"op": "literal", "value": "X2001", "valueType": "string"}]}  # fmt: skip
    assert [f["minValues"]["grid_code"] for f in files({"jsonPredicateHints": json.dumps(equal)})] == ["X2000"]
    above = {"op": "greaterThan", "children": [{"op": "column", "name": "center_lat", "valueType": "double"},
                                               {"op": "literal", "value": "31.5", "valueType": "double"}]}  # fmt: skip
    assert sorted(f["minValues"]["center_lat"] for f in files({"jsonPredicateHints": json.dumps(above)})) == [
        32.0,
        33.0,
    ]
    assert len(files({"jsonPredicateHints": "{not json"})) == 4  # best effort: a hint it cannot read keeps all
    assert len(files({"jsonPredicateHints": json.dumps({"op": "someday"})})) == 4
    assert len(files({"limitHint": 1})) == 1
    assert len(files({"limitHint": every[0]["numRecords"] + 1})) == 2
    assert files({"limitHint": 0}) == []
    # the SQL predicateHints are accepted and, as the protocol allows, not used
    assert len(files({"predicateHints": ["grid_code = 'X2001'"]})) == 4


# --- files --------------------------------------------------------------------------------------


def test_file_urls_serve_ranges_and_are_metered(world: ShareWorld, chengguan: dict):
    token, server, order = chengguan["token"], world.server, chengguan["members"]
    path = table_path("chengguan", MEMBERS)
    query = api(server, token, "POST", f"{path}/query", body={})
    (file,) = [line["file"] for line in lines(query)[2:]]
    content = Path(world.warehouse.uri(delivery_table(order.order_id))) / file["url"].split("/")[-1].split("?")[0]
    data = content.read_bytes()
    head = requests.head(file["url"], timeout=10)
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(data) == file["size"]
    assert head.headers["accept-ranges"] == "bytes"
    part = requests.get(file["url"], headers={"Range": "bytes=0-9"}, timeout=10)
    assert part.status_code == 206 and part.content == data[:10]
    whole = requests.get(file["url"], timeout=10)
    assert whole.status_code == 200 and whole.content == data
    records = json.loads(file["stats"])["numRecords"]

    def logged() -> pl.DataFrame | None:  # a row is recorded just after its answer went out
        rows = access_rows(world.state).filter(pl.col("order_id") == order.order_id).sort("at")
        return rows if rows.filter(pl.col("endpoint") == "file").height >= 3 else None

    log = wait_for(logged, what="the file requests in the access log")
    queried = log.filter(pl.col("endpoint") == "query").row(-1, named=True)
    assert (queried["files"], queried["rows"], queried["department"], queried["dataset_id"]) == (
        1,
        records,
        "chengguan",
        MEMBERS,
    )
    assert queried["token_id"] and queried["outcome"] == "ok" and queried["status"] == 200 and queried["bytes"] > 0
    served = log.filter(pl.col("endpoint") == "file").select("method", "status", "files", "rows", "bytes").rows()
    assert served[-3:] == [("HEAD", 200, 0, 0, 0), ("GET", 206, 1, records, 10), ("GET", 200, 1, records, len(data))]


# --- the refresher ------------------------------------------------------------------------------


def test_refresher_survives_a_delivery_it_cannot_build(world: ShareWorld):
    """An approved order whose source does not exist yet: logged, retried, and built once the source appears;
    the server answers all along."""
    _, token = world.profile("gongan")
    order = order_and_approve(world.warehouse, RESOURCES, "gongan", ["resource_id", "resource_type", "capacity"])
    refresher = world.server.app.state.refresher
    wait_for(lambda: any(order.order_id in e for e in refresher.errors), what="the refresher to report the error")
    assert api(world.server, token, "GET", "/shares/gongan/all-tables").json() == {"items": []}
    write_resources(world.warehouse, resource_rows(12))
    wait_active(world.state, order.order_id)
    tables = api(world.server, token, "GET", "/shares/gongan/all-tables").json()["items"]
    assert [t["id"] for t in tables] == [order.order_id]


# --- the application ----------------------------------------------------------------------------


def test_extra_routes_sit_beside_the_protocol_and_the_root_leads_to_the_catalog(world: ShareWorld):
    async def catalog(request: Request) -> PlainTextResponse:
        return PlainTextResponse("catalog")

    state = share_state(world.warehouse, world.pseudonymiser)
    with running_server(state, refresh_seconds=0, extra_routes=[Route("/catalog", catalog)]) as server:
        root = requests.get(server.url + "/", allow_redirects=False, timeout=10)
        assert root.status_code == 307 and root.headers["location"] == "/catalog"
        assert requests.get(server.url + "/", timeout=10).text == "catalog"
        assert api(server, None, "GET", "/shares").status_code == 401
        assert server.app.state.share is state


# --- the Delta log ------------------------------------------------------------------------------


def test_delta_log_reads_checkpoints_and_times(tmp_path: Path):
    uri = str(tmp_path / "table")
    for i in range(3):
        write_deltalake(uri, pa.table({"x": [i, i + 10]}), mode="append")
    table = DeltaTable(uri)
    table.create_checkpoint()
    write_deltalake(uri, pa.table({"x": [99]}), mode="append")
    for version in (0, 1):  # the log before the checkpoint is cleaned up
        (tmp_path / "table" / "_delta_log" / f"{version:020d}.json").unlink()
    log = DeltaLog(tmp_path / "table")
    assert log.latest_version() == 3 and log.earliest_version() == 2
    expected = sorted(os.path.basename(u) for u in DeltaTable(uri).file_uris())
    snapshot = log.snapshot(3)
    assert sorted(snapshot.files) == expected and snapshot.metadata["schemaString"]
    assert sum(snapshot.num_records(a) for a in snapshot.files.values()) == 7
    assert log.snapshot(2).version == 2 and len(log.snapshot(2).files) == 3
    assert log.version_at(log.timestamp(3), starting=False) == 3
    assert log.version_at(0, starting=True) == 2

    # a partitioned table whose only record left is its checkpoint
    uri = str(tmp_path / "partitioned")
    write_deltalake(uri, pa.table({"x": [1, 2], "day": ["2026-01-01", "2026-01-02"]}), partition_by=["day"])
    DeltaTable(uri).create_checkpoint()
    (tmp_path / "partitioned" / "_delta_log" / f"{0:020d}.json").unlink()
    log = DeltaLog(tmp_path / "partitioned")
    assert log.latest_version() == 0
    snapshot = log.snapshot(0)
    assert sorted(a["partitionValues"]["day"] for a in snapshot.files.values()) == ["2026-01-01", "2026-01-02"]
    assert snapshot.metadata["partitionColumns"] == ["day"] and snapshot.protocol["minReaderVersion"] >= 1
    assert all(isinstance(a["stats"], str) and "stats_parsed" not in a for a in snapshot.files.values())


# --- serve() ------------------------------------------------------------------------------------


def test_serve_runs_logs_to_a_file_and_flushes_the_access_log_on_sigint(tmp_path: Path):
    home = tmp_path / "home"
    warehouse = small_warehouse(tmp_path, Pseudonymiser(b"k" * 32), people=3, grids=3)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = os.environ | {
        "YIWANG_HOME": str(home),
        "YIWANG_WAREHOUSE": warehouse.root,
        "YIWANG_PSEUDONYM_KEY_FILE": str(tmp_path / "pseudonym.key"),
    }
    code = (
        "from ingestion.settings import Settings; from thematic_libs.sharing.server import serve; "
        f"serve(Settings.from_env(), '127.0.0.1', {port})"
    )
    server = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=Path(__file__).parent.parent)
    try:
        _, token = issue_profile(warehouse, "weijian", f"http://127.0.0.1:{port}/delta-sharing", tmp_path)
        endpoint = f"http://127.0.0.1:{port}/delta-sharing/shares"

        def answers() -> requests.Response | None:
            try:
                return requests.get(endpoint, headers={"Authorization": f"Bearer {token}"}, timeout=2)
            except requests.ConnectionError:
                return None

        assert wait_for(answers, timeout=30, what="the server to start").json()["items"][0]["name"] == "weijian"
        assert requests.get(endpoint, timeout=5).status_code == 401
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=30) == 0
    log = pl.from_arrow(DeltaTable(warehouse.uri("ops/share_access_log")).to_pyarrow_table())
    assert {"ok", "refused"} <= set(log["outcome"])
    assert (home / "logs" / "share.log").read_text(encoding="utf-8").count("sharing server st") >= 2
    assert (home / "secrets" / "share_signing.key").exists()
