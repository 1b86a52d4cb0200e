"""Security of the Delta Sharing server, against a real server and real deliveries: departments are isolated, a
revoked or expired order stops at once (pre-signed URLs and running clients included), tokens and file URLs
cannot be forged or outlive their time, masked columns never come out raw, paths cannot leave a delivery,
filters cannot inject, every refusal is metered with its reason, and no input makes the server answer 5xx."""

from __future__ import annotations

import io
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
from deltalake import write_deltalake
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestion.keys import CST
from tests.share_kit import (
    GRIDS,
    MEMBERS,
    ShareWorld,
    access_rows,
    api,
    client_results,
    member_rows,
    order_and_approve,
    raw_request,
    require_client,
    run_client,
    share_world,
    start_client,
    wait_active,
    wait_for,
    write_members,
)
from thematic_libs.sharing.deliveries import delivery_table
from thematic_libs.sharing.orders import OrderError, change_order, request_order
from thematic_libs.sharing.server import PREFIX, signed_file_url
from thematic_libs.sharing.tokens import issue_token, revoke_tokens

MEMBER_PATH = "/shares/weijian/schemas/minzheng/tables/assistance_members"
RAW_IDS = [row["member_id_number"] for row in member_rows(200)]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> ShareWorld:
    with share_world(tmp_path_factory.mktemp("share_security")) as built:
        yield built


@pytest.fixture(scope="module")
def weijian(world: ShareWorld) -> dict:
    """weijian reads the members with the ID number masked (it asked for it, without a legal basis)."""
    profile, token = world.profile("weijian")
    order = order_and_approve(
        world.warehouse, MEMBERS, "weijian", ["case_id", "member_id_number", "member_name", "relation_to_head"]
    )
    wait_active(world.state, order.order_id)
    return {"profile": profile, "token": token, "order": order}


@pytest.fixture(scope="module")
def chengguan(world: ShareWorld) -> dict:
    profile, token = world.profile("chengguan")
    order = order_and_approve(world.warehouse, GRIDS, "chengguan", ["grid_code", "grid_name"])
    wait_active(world.state, order.order_id)
    return {"profile": profile, "token": token, "order": order}


def refusal_reasons(world: ShareWorld, **where: str) -> list[str]:
    """The reasons of the refused requests matching `where` (column=value), as metered."""
    rows = access_rows(world.state).filter(pl.col("outcome") == "refused")
    for column, value in where.items():
        rows = rows.filter(pl.col(column) == value)
    return [r or "" for r in rows["reason"].to_list()]


def file_urls(world: ShareWorld, token: str, path: str) -> list[str]:
    response = api(world.server, token, "POST", f"{path}/query", body={})
    assert response.status_code == 200, response.text
    return [json.loads(line)["file"]["url"] for line in response.text.splitlines()[2:]]


def get_target(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


# --- isolation ----------------------------------------------------------------------------------


def test_a_department_sees_only_its_own_share(world: ShareWorld, weijian: dict, chengguan: dict):
    token, server = weijian["token"], world.server
    assert [s["name"] for s in api(server, token, "GET", "/shares").json()["items"]] == ["weijian"]
    theirs = "/shares/chengguan/schemas/zhengshu/tables/grid_registry"
    grids_in_mine = "/shares/weijian/schemas/zhengshu/tables/grid_registry"
    for path, method in [
        ("/shares/chengguan", "GET"),
        ("/shares/chengguan/schemas", "GET"),
        ("/shares/chengguan/all-tables", "GET"),
        ("/shares/chengguan/schemas/zhengshu/tables", "GET"),
        (f"{theirs}/metadata", "GET"),
        (f"{theirs}/version", "GET"),
        (f"{theirs}/query", "POST"),
        (f"{theirs}/changes?startingVersion=0", "GET"),
        (f"{grids_in_mine}/metadata", "GET"),
        (f"{grids_in_mine}/query", "POST"),
        (f"{grids_in_mine}/changes?startingVersion=0", "GET"),
    ]:
        response = api(server, token, method, path)
        assert response.status_code == 404, path
        assert response.json()["errorCode"] == "RESOURCE_DOES_NOT_EXIST"
        assert chengguan["order"].order_id not in response.text
    # another department's share answers exactly like one that does not exist
    existing = api(server, token, "GET", "/shares/chengguan/schemas").json()
    missing = api(server, token, "GET", "/shares/nobodyhere/schemas").json()
    assert existing["message"].replace("chengguan", "X") == missing["message"].replace("nobodyhere", "X")
    existing = api(server, token, "GET", f"{grids_in_mine}/metadata").json()
    missing = api(server, token, "GET", "/shares/weijian/schemas/zhengshu/tables/no_such_table/metadata").json()
    assert existing["message"].replace("grid_registry", "X") == missing["message"].replace("no_such_table", "X")
    reasons = refusal_reasons(world, department="weijian")
    assert "share chengguan of another department" in reasons
    assert "table ordered by another department (chengguan)" in reasons
    # and chengguan's file URLs name nothing weijian could use: they are signed per order and need no token,
    # but weijian never learns them; chengguan's own listing does not show weijian's table either
    tables = api(server, chengguan["token"], "GET", "/shares/chengguan/all-tables").json()["items"]
    assert [t["id"] for t in tables] == [chengguan["order"].order_id]


# --- revocation and expiry ----------------------------------------------------------------------


def test_a_revoked_order_stops_at_once_even_mid_session(world: ShareWorld):
    require_client()
    profile, token = world.profile("gongan")
    order = order_and_approve(world.warehouse, GRIDS, "gongan", ["grid_code", "street_code"])
    wait_active(world.state, order.order_id)
    path = "/shares/gongan/schemas/zhengshu/tables/grid_registry"
    (url,) = file_urls(world, token, path)
    assert requests.get(url, timeout=10).status_code == 200

    work = world.root / "midsession"
    work.mkdir()
    results, go = work / "results.jsonl", work / "go"
    table = "gongan.zhengshu.grid_registry"
    client = start_client(
        profile,
        [
            {"op": "load", "table": table, "out": str(work / "before.parquet")},
            {"op": "wait_file", "path": str(go), "timeout": 60},
            {"op": "load", "table": table, "out": str(work / "after.parquet")},
            {"op": "list_all_tables"},
        ],
        results,
    )
    try:
        wait_for(lambda: len(client_results(results)) >= 1 or None, timeout=60, what="the client's first read")
        change_order(world.warehouse, order.order_id, "revoke", "zhengshu", "purpose ended")
        # the very next requests are refused: the URL signed before the revoke, and the protocol
        assert requests.get(url, timeout=10).status_code == 403
        assert api(world.server, token, "GET", f"{path}/metadata").status_code == 404
        assert api(world.server, token, "POST", f"{path}/query", body={}).status_code == 404
        go.touch()
        client.communicate(timeout=120)
    finally:
        client.kill()
    first, _, second, listing = client_results(results)
    assert first["ok"] and first["rows"] == 40
    assert not second["ok"] and "404" in second["message"]
    assert listing["ok"] and listing["tables"] == []
    reasons = refusal_reasons(world, order_id=order.order_id)
    assert f"order {order.order_id} is revoked" in reasons
    assert any(r == f"order {order.order_id} is revoked" for r in refusal_reasons(world, endpoint="file"))
    # the refresher removes the revoked delivery
    wait_for(lambda: not Path(world.warehouse.uri(delivery_table(order.order_id))).exists(), what="the drop")


def test_an_order_past_its_until_date_is_refused(world: ShareWorld):
    _, token = world.profile("shuiwu")
    days_ago = datetime.now(UTC) - timedelta(days=3)
    yesterday = datetime.now(CST).date() - timedelta(days=1)
    order = order_and_approve(world.warehouse, GRIDS, "shuiwu", ["grid_code"], until=yesterday, now=days_ago)
    assert order.state == "approved" and order.effective_state() == "expired"
    path = "/shares/shuiwu/schemas/zhengshu/tables/grid_registry"
    for method, endpoint in (("GET", "metadata"), ("POST", "query"), ("GET", "version")):
        assert api(world.server, token, method, f"{path}/{endpoint}").status_code == 404
    assert api(world.server, token, "GET", "/shares/shuiwu/all-tables").json()["items"] == []
    # even a validly signed URL (as if handed out before the date) is refused
    url = signed_file_url(world.state, world.server.url, order.order_id, "part-0.parquet", int(time.time()) + 60)
    assert requests.get(url, timeout=10).status_code == 403
    assert f"order {order.order_id} is expired" in refusal_reasons(world, order_id=order.order_id)
    # the refresher records the expiry in the audit
    wait_for(lambda: world.state.orders()[order.order_id].state == "expired", what="the expired audit row")


# --- tokens and URLs ----------------------------------------------------------------------------


def test_tampered_expired_revoked_and_missing_tokens_are_refused(world: ShareWorld, weijian: dict):
    token, warehouse = weijian["token"], world.warehouse
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    unknown = "ysh_000000000000_" + token.split("_", 2)[2]
    expired = issue_token(warehouse, "weijian", days=1, now=datetime.now(UTC) - timedelta(days=5)).token
    revoked = issue_token(warehouse, "weijian").token
    assert revoke_tokens(warehouse, "weijian", revoked.split("_")[1]) == 1
    variants = {
        "malformed": {"Authorization": "Bearer not-a-token"},
        "tampered": {"Authorization": f"Bearer {tampered}"},
        "unknown": {"Authorization": f"Bearer {unknown}"},
        "expired": {"Authorization": f"Bearer {expired}"},
        "revoked": {"Authorization": f"Bearer {revoked}"},
        "basic": {"Authorization": f"Basic {token}"},
        "empty": {"Authorization": "Bearer "},
        "none": {},
    }
    for what, headers in variants.items():
        for method, path in (("GET", "/shares"), ("GET", f"{MEMBER_PATH}/metadata"), ("POST", f"{MEMBER_PATH}/query")):
            response = api(world.server, None, method, path, headers=headers)
            assert response.status_code == 401, (what, path)
            assert response.json()["errorCode"] == "UNAUTHENTICATED"
            assert response.headers["www-authenticate"].startswith("Bearer")
    reasons = refusal_reasons(world, endpoint="metadata")
    for expected in ("token: malformed bearer token", "token: unknown bearer token", "no bearer token"):
        assert expected in reasons
    assert any(r.startswith("token: bearer token") and r.endswith("expired") for r in reasons)
    assert any(r.startswith("token: bearer token") and r.endswith("was revoked") for r in reasons)
    # rotating revokes the department's earlier tokens at once
    rotated = issue_token(warehouse, "weijian", rotate=True).token
    assert api(world.server, token, "GET", "/shares").status_code == 401
    assert api(world.server, rotated, "GET", "/shares").status_code == 200
    weijian["token"] = rotated


def test_tampered_or_expired_file_urls_are_refused(world: ShareWorld, weijian: dict, chengguan: dict):
    (url,) = file_urls(world, weijian["token"], MEMBER_PATH)
    assert requests.get(url, timeout=10).status_code == 200
    base, query = url.split("?")
    params = dict(p.split("=") for p in query.split("&"))
    order_id = weijian["order"].order_id
    path = base.split(f"/files/{order_id}/")[1]
    flipped = params["sig"][:-1] + ("0" if params["sig"][-1] != "0" else "1")
    other_order = chengguan["order"].order_id
    forged = {
        "tampered signature": f"{base}?exp={params['exp']}&sig={flipped}",
        "longer validity": f"{base}?exp={int(params['exp']) + 3600}&sig={params['sig']}",
        "another file": f"{base.replace(path, 'part-00000-other.snappy.parquet')}?{query}",
        "another order": f"{base.replace(order_id, other_order)}?{query}",
        "no signature": f"{base}?exp={params['exp']}",
        "no expiry": f"{base}?sig={params['sig']}",
        "expired": signed_file_url(world.state, world.server.url, order_id, path, int(time.time()) - 1),
    }
    for what, forged_url in forged.items():
        response = requests.get(forged_url, timeout=10)
        assert response.status_code == 403, what
        assert response.json()["errorCode"] == "PERMISSION_DENIED"
    assert requests.post(url, timeout=10).status_code == 405
    reasons = refusal_reasons(world, endpoint="file")
    assert {"bad file URL signature", "file URL expired", "unsigned file URL"} <= set(reasons)


# --- masking ------------------------------------------------------------------------------------


def test_masked_columns_never_come_out_raw(world: ShareWorld, weijian: dict):
    token, server = weijian["token"], world.server

    def version() -> int:
        return int(api(server, token, "GET", f"{MEMBER_PATH}/version").headers["Delta-Table-Version"])

    before = version()
    rows = member_rows(30)
    rows[2]["member_name"] = "改名乙"
    write_members(world.warehouse, world.pseudonymiser, rows)  # an update, so change-data files exist too
    wait_for(lambda: version() > before, what="the delivery to follow its source")
    capability = {"delta-sharing-capabilities": "responseformat=delta"}
    answers = [
        api(server, token, "GET", "/shares/weijian/all-tables"),
        api(server, token, "GET", f"{MEMBER_PATH}/metadata"),
        api(server, token, "GET", f"{MEMBER_PATH}/metadata", headers=capability),
        api(server, token, "POST", f"{MEMBER_PATH}/query", body={}),
        api(server, token, "POST", f"{MEMBER_PATH}/query", body={}, headers=capability),
        api(server, token, "POST", f"{MEMBER_PATH}/query", body={"startingVersion": 0}),
        api(server, token, "GET", f"{MEMBER_PATH}/changes", params={"startingVersion": 0}),
        api(server, token, "GET", f"{MEMBER_PATH}/changes", params={"startingVersion": 0}, headers=capability),
    ]
    urls = set()
    for answer in answers:
        assert answer.status_code == 200
        assert not any(raw in answer.text for raw in RAW_IDS)
        assert '\\"member_id_number\\"' not in answer.text and '"member_id_number"' not in answer.text
        for line in answer.text.splitlines():
            urls |= {v["url"] for v in json.loads(line).values() if isinstance(v, dict) and "url" in v}
    assert any("/_change_data/" in u for u in urls) and len(urls) >= 3
    for url in urls:
        response = requests.get(url, timeout=10)
        assert response.status_code == 200
        table = pq.read_table(io.BytesIO(response.content))
        assert set(table.column_names) <= {"case_id", "member_id_number_key", "member_name", "relation_to_head",
                                           "_change_type"}  # fmt: skip
        values = {str(v) for column in table.columns for v in column.to_pylist()}
        assert not values & set(RAW_IDS)
        assert not any(raw.encode() in response.content for raw in RAW_IDS)


def test_a_delivery_that_differs_from_its_order_is_never_served(world: ShareWorld):
    """Defence in depth: were a delivery ever written with a raw sensitive column, the server refuses it."""
    _, token = world.profile("renshe")
    order = order_and_approve(world.warehouse, MEMBERS, "renshe", ["case_id", "member_id_number"])
    wait_active(world.state, order.order_id)
    path = "/shares/renshe/schemas/minzheng/tables/assistance_members"
    assert api(world.server, token, "GET", f"{path}/metadata").status_code == 200
    bad = pa.table({"case_id": ["MZC00000"], "member_id_number": [RAW_IDS[0]]})
    uri = world.warehouse.uri(delivery_table(order.order_id))
    write_deltalake(uri, bad, mode="overwrite", schema_mode="overwrite")
    for method, endpoint, params in (
        ("GET", "metadata", None),
        ("POST", "query", None),
        ("GET", "changes", {"startingVersion": 0}),
    ):
        response = api(world.server, token, method, f"{path}/{endpoint}", params=params)
        assert response.status_code == 403, endpoint
        assert RAW_IDS[0] not in response.text and 'member_id_number\\"' not in response.text
    assert "delivery columns differ from the order's" in refusal_reasons(world, order_id=order.order_id)
    change_order(world.warehouse, order.order_id, "revoke", "renshe", "test over")


# --- paths --------------------------------------------------------------------------------------


def test_path_traversal_is_refused(world: ShareWorld, weijian: dict):
    token = weijian["token"]
    port = world.server.port
    bearer = {"Authorization": f"Bearer {token}"}
    for target in [
        "/delta-sharing/shares/../shares",
        "/delta-sharing/shares/%2e%2e/schemas",
        "/delta-sharing/shares/weijian/schemas/..%2F..%2Fops/tables",
        "/delta-sharing/shares/weijian%2Fschemas%2Fminzheng/tables",
        "/delta-sharing/shares/weijian/schemas/minzheng/tables/assistance_members%2F..%2F..%2Fshare_tokens/metadata",
        "/delta-sharing/shares/weijian/schemas/minzheng/tables/..%2Fassistance_members/metadata",
        "/delta-sharing/shares/weijian/schemas/%2Fetc%2Fpasswd/tables",
        "/delta-sharing/shares/weijian/schemas/minzheng/tables/assistance_members%00/metadata",
        "/delta-sharing/shares//weijian",
        "/delta-sharing/shares/weijian/schemas/minzheng/tables/assistance_members/metadata/..",
        "/delta-sharing/shares/weijian/schemas/minzheng/tables/assistance_members/%2e%2e/version",
        "/delta-sharing/shares/%77eijian/schemas/minzheng/tables/%ff/metadata",
    ]:
        status, _, body = raw_request(port, "GET", target, bearer)
        assert 400 <= status < 500, target
        assert b"member_id_number" not in body

    order_id = weijian["order"].order_id
    folder = Path(world.warehouse.uri(delivery_table(order_id)))
    outside = next(Path(world.warehouse.uri("ops/share_tokens")).glob("*.parquet"))
    (folder / "escape.parquet").symlink_to(outside)
    (folder / "_change_data" / "escape.parquet").symlink_to(outside)
    log_file = next((folder / "_delta_log").glob("*.json"))
    expires = int(time.time()) + 60
    # signed with the server's own key, so only the path checks stand between them and the disk
    for path in [
        "../../ops/share_tokens/" + outside.name,
        "%2e%2e/%2e%2e/ops/share_tokens/" + outside.name,
        str(outside),
        "/" + outside.name,
        "escape.parquet",
        "_change_data/escape.parquet",
        "_delta_log/" + log_file.name,
        "_delta_log/../escape.parquet",
        "./" + next(folder.glob("part-*.parquet")).name,
        "part-does-not-exist.parquet",
        "..\\..\\ops\\x.parquet",
    ]:
        signature = world.state.sign(f"file\n{order_id}\n{path}\n{expires}")
        target = f"{PREFIX}/files/{order_id}/{quote(path, safe='/%')}?exp={expires}&sig={signature}"
        status, _, body = raw_request(port, "GET", target)
        assert status in (403, 404), path
        assert b"PAR1" not in body
    for target in [
        f"{PREFIX}/files/{order_id}/..%2F..%2Fops%2Fshare_tokens%2F{outside.name}?exp={expires}&sig=00",
        f"{PREFIX}/files/../../ops/share_tokens/{outside.name}",
        f"{PREFIX}/files/{order_id}",
    ]:
        status, _, body = raw_request(port, "GET", target)
        assert status in (403, 404), target
    assert sum(r.startswith("file path refused") for r in refusal_reasons(world, endpoint="file")) >= 5


# --- filters ------------------------------------------------------------------------------------


def test_filters_cannot_inject_and_really_filter(world: ShareWorld):
    require_client()
    attempts = [
        "relation_to_head = 'head'; DROP TABLE ops.share_audit",
        "relation_to_head = '' OR 1=1 --",
        "relation_to_head = 'head' UNION SELECT * FROM bronze",
        "member_id_number = '440605198001010011'",  # a sensitive column may not be filtered on
        "1 = 1",
        "__import__('os').system('id')",
        "relation_to_head = 'head' /* */",
        "relation_to_head in (select relation_to_head from x)",
    ]
    for text in attempts:
        with pytest.raises(OrderError, match="filter"):
            request_order(
                world.warehouse,
                dataset_id=MEMBERS,
                department="jiaoyu",
                columns=["case_id", "member_name", "relation_to_head"],
                purpose="核对",
                row_filter=text,
            )
    # a quote inside a literal is a value, not SQL: it matches no name, and only the heads come out
    row_filter = "relation_to_head = 'head' or member_name = 'x'' or ''1''=''1'"
    order = order_and_approve(
        world.warehouse, MEMBERS, "jiaoyu", ["case_id", "member_name", "relation_to_head"], row_filter=row_filter
    )
    wait_active(world.state, order.order_id)
    profile, _ = world.profile("jiaoyu")
    out = world.root / "filtered.parquet"
    (result,) = run_client(profile, [{"op": "load", "table": "jiaoyu.minzheng.assistance_members", "out": str(out)}],
                           world.root / "filtered")  # fmt: skip
    assert result["ok"], result
    loaded = pl.read_parquet(out)
    source = pl.from_arrow(world.warehouse.table("silver/minzheng/assistance_members").to_pyarrow_table())
    assert loaded.height == source.filter(pl.col("relation_to_head") == "head").height > 0
    assert set(loaded["relation_to_head"]) == {"head"}


# --- fuzzing ------------------------------------------------------------------------------------

TABLE = ["shares", "{share}", "schemas", "{schema}", "tables", "{table}"]
ENDPOINTS = [
    ([], "GET"),
    (["shares"], "GET"),
    (["shares", "{share}"], "GET"),
    (["shares", "{share}", "schemas"], "GET"),
    (["shares", "{share}", "all-tables"], "GET"),
    (["shares", "{share}", "schemas", "{schema}", "tables"], "GET"),
    (TABLE, "HEAD"),
    ([*TABLE, "version"], "GET"),
    ([*TABLE, "metadata"], "GET"),
    ([*TABLE, "query"], "POST"),
    ([*TABLE, "changes"], "GET"),
    (["files", "{order}", "{file}"], "GET"),
    (["files", "{order}", "_change_data", "{file}"], "GET"),
    (["{any}"], "GET"),
]
VALID = {"{share}": "weijian", "{schema}": "minzheng", "{table}": "assistance_members", "{order}": "{order_id}",
         "{file}": "{file_name}", "{any}": "shares"}  # fmt: skip
ODD_NAMES = ["chengguan", "zhengshu", "grid_registry", "WEIJIAN", "..", "%2e%2e", "%2F", "%00", "%ff", "", "a" * 300,
             "SO-20260101-00000000", "_delta_log", "part-0.parquet"]  # fmt: skip
PARAMS = ["maxResults", "pageToken", "startingVersion", "endingVersion", "startingTimestamp", "endingTimestamp",
          "includeHistoricalMetadata", "includeHistoricalProtocol", "version", "timestamp", "exp", "sig",
          "x"]  # fmt: skip
safe_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
param_values = (
    st.integers(-5, 10**20).map(str)
    | st.sampled_from(["0", "1", "true", "False", "2026-01-01T00:00:00Z", "2000-01-01", "{exp}", "{sig}", "{token}"])
    | safe_text
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | safe_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(safe_text, inner, max_size=4),
    max_leaves=12,
)
predicate = st.sampled_from(
    [
        '{"op":"equal","children":[{"op":"column","name":"case_id","valueType":"string"},'
        '{"op":"literal","value":"MZC00001","valueType":"string"}]}',
        '{"op":"not","children":[{"op":"isNull","children":[{"op":"column","name":"member_name"}]}]}',
        '{"op":"lessThan","children":[{"op":"literal","value":"x","valueType":"timestamp"},{"op":"column"}]}',
        '{"op":"and","children":[]}',
        '{"op":"or"}',
        "[]",
        "{",
    ]
)
query_bodies = st.dictionaries(
    st.sampled_from(["predicateHints", "jsonPredicateHints", "limitHint", "version", "timestamp", "startingVersion",
                     "endingVersion", "includeHistoricalProtocol", "idempotencyKey", "other"]),
    json_values | predicate | st.integers(0, 5),
    max_size=4,
)  # fmt: skip


@st.composite
def fuzzed_requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str], bytes | None]:
    """Mostly well-formed protocol requests with one or two things wrong, and now and then plain garbage; the
    {markers} are a real token, order, file and signature, filled in by the test."""
    template, right_method = draw(st.sampled_from(ENDPOINTS))
    segments = []
    for part in template:
        if part not in VALID:
            segments.append(part)
        elif draw(st.integers(0, 9)) < 7:
            segments.append(VALID[part])
        else:
            segments.append(draw(st.sampled_from(ODD_NAMES) | safe_text))
    path = PREFIX + "/" + "/".join(quote(s, safe="%{}") for s in segments)
    params = draw(st.dictionaries(st.sampled_from(PARAMS), param_values, max_size=3))
    if template[:1] == ["files"] and draw(st.booleans()):
        params = {"exp": "{exp}", "sig": "{sig}"} | params
    target = path + ("?" + urlencode(params, safe="{}") if params else "")
    auth = draw(st.sampled_from(["token"] * 4 + ["garbage", "none"]))
    headers = {"Authorization": {"token": "Bearer {token}", "garbage": "Bearer " + draw(safe_text), "none": ""}[auth]}
    if draw(st.booleans()):
        headers["delta-sharing-capabilities"] = draw(
            st.sampled_from(["responseformat=delta", "responseformat=parquet,delta", "responseformat=", ";;=,"])
            | safe_text
        )
    if draw(st.booleans()):
        headers["fileidhash"] = draw(st.sampled_from(["parquet", "delta", "DELTA"]) | safe_text)
    if draw(st.booleans()):
        headers["Range"] = draw(st.sampled_from(["bytes=0-9", "bytes=-5", "bytes=9-0", "bytes=0-0,5-6"]) | safe_text)
    body = draw(
        st.none()
        | query_bodies.map(lambda b: json.dumps(b).encode())
        | json_values.map(lambda v: json.dumps(v).encode())
        | st.binary(max_size=64)
    )
    method = right_method if draw(st.integers(0, 9)) < 8 else draw(st.sampled_from(["GET", "POST", "PUT", "DELETE"]))
    return method, target, headers, body


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=fuzzed_requests())
def test_fuzzed_requests_never_get_a_5xx(world: ShareWorld, weijian: dict, request: tuple):
    method, target, headers, body = request
    (url,) = file_urls(world, weijian["token"], MEMBER_PATH)
    file_path, query = urlsplit(url).path, dict(p.split("=") for p in urlsplit(url).query.split("&"))
    markers = {
        "{token}": weijian["token"],
        "{order_id}": weijian["order"].order_id,
        "{file_name}": file_path.rsplit("/", 1)[1],
        "{exp}": query["exp"],
        "{sig}": query["sig"],
    }
    for marker, value in markers.items():
        target = target.replace(marker, value)
        headers = {k: v.replace(marker, value) for k, v in headers.items()}
    status, answer_headers, answer = raw_request(
        world.server.port, method, target, {k: v for k, v in headers.items() if v}, body
    )
    assert status < 500, (method, target, headers, body, answer[:300])
    if status >= 400 and method != "HEAD" and answer_headers.get("content-type", "").startswith("application/json"):
        assert set(json.loads(answer)) == {"errorCode", "message"}


# --- the log of refusals ------------------------------------------------------------------------


def test_every_refusal_is_metered_with_its_reason_and_nothing_failed(world: ShareWorld):
    """Everything sent to this module's server (the tests above, and one refusal per endpoint here) is in
    ops/share_access_log: each refusal with its status and reason, and no request failed."""
    sent = {
        "list_shares": ("GET", "/shares", None),
        "metadata": ("GET", f"{MEMBER_PATH}/metadata", None),
        "query": ("POST", f"{MEMBER_PATH}/query", {}),
        "changes": ("GET", f"{MEMBER_PATH}/changes?startingVersion=0", None),
        "file": ("GET", "/files/SO-20260101-00000000/part-0.parquet", None),
        "unknown": ("GET", "/nowhere", None),
    }
    for method, path, body in sent.values():
        assert api(world.server, "ysh_bad", method, path, body=body).status_code in (401, 403, 404)
    log = wait_for(
        lambda: (rows := access_rows(world.state)).filter(pl.col("path") == f"{PREFIX}/nowhere").height and rows,
        what="the last refusal in the access log",
    )
    refused = log.filter(pl.col("outcome") == "refused")
    assert refused["reason"].null_count() == 0 and (refused["reason"].str.len_chars() > 0).all()
    assert refused["status"].is_between(400, 499).all()
    assert log.filter(pl.col("outcome") == "ok")["status"].is_between(200, 299).all()
    assert log.filter(pl.col("outcome") == "error").height == 0
    assert set(refused["endpoint"]) >= set(sent)
    assert (log["duration_ms"] >= 0).all() and log["request_id"].n_unique() == log.height
