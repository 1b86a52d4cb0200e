"""Share orders, tokens, row filters and deliveries on real Delta tables (the server has its own tests)."""

from __future__ import annotations

import contextlib
import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ingestion.contract import get_contract
from ingestion.keys import CST
from ingestion.pseudonym import Pseudonymiser
from ingestion.warehouse import Warehouse
from orchestration.cli import app
from tests.conftest import resident_id
from thematic_libs.sharing.deliveries import (
    delivery_table,
    drop_delivery,
    refresh_deliveries,
    refresh_delivery,
)
from thematic_libs.sharing.filters import FilterError, parse_filter
from thematic_libs.sharing.orders import (
    AUDIT,
    OrderError,
    change_order,
    expire_due,
    get_order,
    list_orders,
    read_audit,
    request_order,
)
from thematic_libs.sharing.tokens import TOKENS, TokenError, TokenIndex, issue_token, read_tokens, revoke_tokens

MEMBERS = "minzheng.assistance_members"
GRIDS = "zhengshu.grid_registry"
NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


def _lineage(rows: int) -> dict[str, list]:
    return {"_batch_id": ["B1"] * rows, "_extracted_at": [NOW] * rows, "_ingested_at": [NOW] * rows}


def write_members(warehouse: Warehouse, pseudonymiser: Pseudonymiser, rows: int = 60, changed: int = 0) -> None:
    """silver and bronze minzheng/assistance_members: `rows` members, the first `changed` relabelled."""
    ids = [resident_id(i) for i in range(rows)]
    relation = ["head" if i % 3 == 0 else "child" for i in range(rows)]
    relation = ["spouse" if i < changed else r for i, r in enumerate(relation)]
    contract = get_contract(MEMBERS)
    silver = pl.DataFrame(
        {
            "case_id": [f"JZ{i // 3:04d}" for i in range(rows)],
            "member_id_number_key": pseudonymiser.pseudonymise(pl.Series(ids)).to_list(),
            "member_name": [f"成员{i}" for i in range(rows)],
            "relation_to_head": relation,
            "disability_level_key": [None] * rows,
            **_lineage(rows),
        }
    )
    write_deltalake(
        warehouse.uri(f"silver/{contract.table_path}"),
        silver.to_arrow().cast(contract.silver_schema()),
        mode="overwrite",
    )
    bronze = pl.DataFrame({"member_id_number": ids})
    write_deltalake(warehouse.uri(f"bronze/{contract.table_path}"), bronze.to_arrow(), mode="overwrite")


def write_grids(warehouse: Warehouse, rows: int = 12) -> None:
    contract = get_contract(GRIDS)
    frame = pl.DataFrame(
        {
            "grid_code": [f"G{i:03d}" for i in range(rows)],
            "grid_name": [f"网格{i}" for i in range(rows)],
            "community_code": ["440605001001"] * rows,
            "community_name": ["社区"] * rows,
            "street_code": ["440605001" if i % 2 else "440605002" for i in range(rows)],
            "street_name": ["街道"] * rows,
            "district_code": ["440605"] * rows,
            "district_name": ["南海区"] * rows,
            "center_lon": [113.1] * rows,
            "center_lat": [23.0] * rows,
            "polygon_wkt": [None] * rows,
            "grid_worker_id": [f"W{i}" for i in range(rows)],
            **_lineage(rows),
        }
    )
    write_deltalake(
        warehouse.uri(f"silver/{contract.table_path}"),
        frame.to_arrow().cast(contract.silver_schema()),
        mode="overwrite",
    )


@pytest.fixture
def shared(warehouse: Warehouse, pseudonymiser: Pseudonymiser) -> Warehouse:
    write_members(warehouse, pseudonymiser)
    write_grids(warehouse)
    return warehouse


def _request(warehouse: Warehouse, **changes) -> object:
    order = {
        "dataset_id": MEMBERS,
        "department": "weijian",
        "columns": ["case_id", "member_id_number", "relation_to_head"],
        "purpose": "核对死亡信息 check deaths against assistance",
    } | changes
    return request_order(warehouse, **order)


# -- the state machine -----------------------------------------------------------------------------


def test_conditional_order_waits_for_its_owner_and_every_change_is_audited(shared: Warehouse) -> None:
    order = _request(shared)
    assert order.state == "requested" and order.owner_department == "minzheng"
    assert order.sensitive_columns == ("member_id_number",) and order.raw_columns == ()
    with pytest.raises(OrderError, match="only the owning department"):
        change_order(shared, order.order_id, "approve", "weijian")
    approved = change_order(shared, order.order_id, "approve", "minzheng", "对口业务")
    assert approved.state == "approved"
    with pytest.raises(OrderError, match="is approved"):
        change_order(shared, order.order_id, "reject", "minzheng", "too late")
    revoked = change_order(shared, order.order_id, "revoke", "data_officer", "audit finding")
    assert revoked.state == "revoked"
    trail = read_audit(shared).filter(pl.col("order_id") == order.order_id).sort("seq")
    assert trail["event"].to_list() == ["request", "approve", "revoke"]
    assert trail["actor"].to_list() == ["weijian", "minzheng", "data_officer"]
    assert trail["reason"].to_list()[1:] == ["对口业务", "audit finding"]


def test_unconditional_datasets_approve_themselves_unless_sensitive_or_none(shared: Warehouse) -> None:
    order = request_order(shared, dataset_id=GRIDS, department="gongan", columns=["all"], purpose="底图 base map")
    assert order.state == "approved"
    assert read_audit(shared).filter(pl.col("order_id") == order.order_id)["actor"].to_list()[-1] == "system"
    with pytest.raises(OrderError, match="cannot be ordered"):
        request_order(
            shared, dataset_id="social_assistance.crosscheck_flags", department="gongan", columns=["all"], purpose="x"
        )
    with pytest.raises(OrderError, match="already has order"):
        request_order(shared, dataset_id=GRIDS, department="gongan", columns=["grid_code"], purpose="again")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dataset_id": "nope.table"}, "unknown dataset"),
        ({"department": "Weijian; drop"}, "not a department code"),
        ({"columns": ["no_such_column"]}, "has no column"),
        ({"columns": []}, "--columns is required"),
        ({"purpose": "  "}, "--purpose is required"),
        ({"until": date(2020, 1, 1)}, "in the past"),
        ({"columns": ["case_id"], "legal_basis": "法"}, "only for raw values"),
        ({"row_filter": "member_id_number = '1'"}, "not a column the filter may use"),
        ({"row_filter": "relation_to_head = 'head'; drop table x"}, "cannot read"),
        ({"row_filter": "relation_to_head > 3"}, "does not fit"),
    ],
)
def test_refused_requests_say_which_rule(shared: Warehouse, changes: dict, message: str) -> None:
    with pytest.raises(OrderError, match=message):
        _request(shared, **changes)
    assert not shared.exists(AUDIT) or read_audit(shared).is_empty()


def test_racing_approvals_and_a_racing_revoke_end_in_one_consistent_state(shared: Warehouse) -> None:
    for _ in range(3):
        order = _request(shared)
        outcomes: list[str] = []
        barrier = threading.Barrier(3)

        def act(event: str, actor: str, order_id: str = order.order_id, barrier=barrier, outcomes=outcomes) -> None:
            barrier.wait()
            try:
                outcomes.append(f"{event}:{change_order(shared, order_id, event, actor, 'race').state}")
            except OrderError:
                outcomes.append(f"{event}:refused")

        threads = [
            threading.Thread(target=act, args=args)
            for args in (("approve", "minzheng"), ("approve", "minzheng"), ("revoke", "weijian"))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        trail = read_audit(shared).filter(pl.col("order_id") == order.order_id).sort("seq")
        assert trail["seq"].to_list() == list(range(trail.height))  # no sequence number twice
        assert outcomes.count("approve:approved") <= 1  # never approved twice
        assert get_order(shared, order.order_id).state == trail["state"].to_list()[-1]
        assert get_order(shared, order.order_id).state in ("approved", "revoked")
        if get_order(shared, order.order_id).state != "revoked":
            change_order(shared, order.order_id, "revoke", "weijian", "next round")


def test_an_order_past_its_date_is_expired_at_once_and_then_recorded(shared: Warehouse) -> None:
    today = datetime.now(CST).date()
    order = _request(shared, until=today)
    change_order(shared, order.order_id, "approve", "minzheng")
    current = get_order(shared, order.order_id)
    assert current.effective_state(today) == "approved"
    assert current.effective_state(today + timedelta(days=1)) == "expired"
    assert [o.order_id for o in expire_due(shared, today + timedelta(days=1))] == [order.order_id]
    assert get_order(shared, order.order_id).state == "expired"
    with pytest.raises(OrderError):
        change_order(shared, order.order_id, "approve", "minzheng")


# -- deliveries ------------------------------------------------------------------------------------


def _delivery(warehouse: Warehouse, order_id: str) -> pl.DataFrame:
    return pl.DataFrame(pl.from_arrow(DeltaTable(warehouse.uri(delivery_table(order_id))).to_pyarrow_table()))


def test_a_delivery_holds_only_the_granted_columns_filtered_and_masked(
    shared: Warehouse, pseudonymiser: Pseudonymiser
) -> None:
    order = _request(shared, row_filter="relation_to_head in ('head', 'spouse')")
    change_order(shared, order.order_id, "approve", "minzheng")
    (result,) = refresh_deliveries(shared, pseudonymiser)
    delivered = _delivery(shared, order.order_id)
    assert delivered.columns == ["case_id", "member_id_number_key", "relation_to_head"]
    assert set(delivered["relation_to_head"]) == {"head"} and delivered.height == 20 == result.rows
    raw_ids = {resident_id(i) for i in range(60)}
    assert not raw_ids & set(delivered["member_id_number_key"])
    assert get_order(shared, order.order_id).state == "active"
    # nothing new at the source: nothing written
    again = refresh_delivery(shared, get_order(shared, order.order_id), pseudonymiser)
    assert again.skipped and again.version == result.version


def test_raw_values_only_with_a_legal_basis(shared: Warehouse, pseudonymiser: Pseudonymiser) -> None:
    order = _request(shared, legal_basis="《社会救助暂行办法》第五十八条", columns=["case_id", "member_id_number"])
    assert order.raw_columns == ("member_id_number",)
    change_order(shared, order.order_id, "approve", "minzheng", "basis checked")
    refresh_deliveries(shared, pseudonymiser)
    delivered = _delivery(shared, order.order_id)
    assert delivered.columns == ["case_id", "member_id_number"]
    assert set(delivered["member_id_number"]) == {resident_id(i) for i in range(60)}


def test_a_refresh_writes_only_what_changed_into_the_change_feed(
    shared: Warehouse, pseudonymiser: Pseudonymiser
) -> None:
    order = _request(shared, columns=["case_id", "member_id_number", "member_name", "relation_to_head"])
    change_order(shared, order.order_id, "approve", "minzheng")
    refresh_deliveries(shared, pseudonymiser)
    first = DeltaTable(shared.uri(delivery_table(order.order_id))).version()
    write_members(shared, pseudonymiser, rows=58, changed=4)  # 4 relabelled, 2 gone
    (result,) = refresh_deliveries(shared, pseudonymiser)
    table = DeltaTable(shared.uri(delivery_table(order.order_id)))
    assert (result.inserted, result.updated, result.deleted) == (0, 4, 2)
    feed = pl.DataFrame(pl.from_arrow(pa.table(table.load_cdf(starting_version=first + 1).read_all())))
    kinds = feed.group_by("_change_type").len().sort("_change_type")
    assert dict(kinds.iter_rows()) == {"delete": 2, "update_postimage": 4, "update_preimage": 4}
    assert _delivery(shared, order.order_id).height == 58


def test_revoked_deliveries_are_removed(shared: Warehouse, pseudonymiser: Pseudonymiser) -> None:
    order = request_order(shared, dataset_id=GRIDS, department="gongan", columns=["grid_code"], purpose="底图")
    refresh_deliveries(shared, pseudonymiser)
    path = Path(shared.uri(delivery_table(order.order_id)))
    assert path.exists()
    change_order(shared, order.order_id, "revoke", "zhengshu", "no longer needed")
    refresh_deliveries(shared, pseudonymiser)
    assert not path.exists() and not drop_delivery(shared, order.order_id)


# -- row filters -----------------------------------------------------------------------------------


def test_filters_parse_into_expressions_and_refuse_the_rest() -> None:
    frame = pl.DataFrame({"a": [1, 2, 3], "b": ["x", "y", None]})
    cases = {
        "a >= 2": [2, 3],
        "a = 1 or b = 'y'": [1, 2],
        "b is null": [3],
        "b is not null and a in (1, 3)": [1],
        "(a = 1 or a = 2) and b != 'x'": [2],
    }
    for text, expected in cases.items():
        assert frame.filter(parse_filter(text, ["a", "b"]).expression)["a"].to_list() == expected, text
    for bad in ("a = ", "c = 1", "a = 1 union select", "a = 1)", "a == 1", "a = 'x'' or 1=1 --"):
        with pytest.raises(FilterError):
            parse_filter(bad, ["a", "b"])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_filter_text_either_parses_or_is_refused_cleanly(text: str) -> None:
    with contextlib.suppress(FilterError):
        parse_filter(text, ["a", "b"])


# -- tokens ----------------------------------------------------------------------------------------


def test_tokens_are_stored_hashed_rotated_and_revoked(warehouse: Warehouse) -> None:
    first = issue_token(warehouse, "weijian")
    assert TokenIndex(read_tokens(warehouse)).department_of(first.token) == "weijian"
    stored = b"".join(p.read_bytes() for p in Path(warehouse.uri(TOKENS)).rglob("*") if p.is_file())
    assert first.token.split("_")[-1].encode() not in stored
    second = issue_token(warehouse, "weijian", rotate=True)
    index = TokenIndex(read_tokens(warehouse))
    assert index.department_of(second.token) == "weijian"
    with pytest.raises(TokenError, match="revoked"):
        index.department_of(first.token)
    tampered = second.token[:-1] + ("A" if second.token[-1] != "A" else "B")
    for bad, why in ((tampered, "unknown"), ("ysh_nothing", "malformed"), ("", "malformed")):
        with pytest.raises(TokenError, match=why):
            index.department_of(bad)
    with pytest.raises(TokenError, match="expired"):
        index.department_of(second.token, now=datetime.now(UTC) + timedelta(days=91))
    assert revoke_tokens(warehouse, "weijian") == 1
    with pytest.raises(TokenError, match="revoked"):
        TokenIndex(read_tokens(warehouse)).department_of(second.token)


# -- the command line ------------------------------------------------------------------------------


def test_share_commands_walk_an_order_and_refuse_in_one_line(
    shared: Warehouse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("YIWANG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("YIWANG_PSEUDONYM_KEY", "ab" * 32)
    runner = CliRunner()
    base = ["--warehouse", shared.root]
    requested = runner.invoke(
        app,
        [
            "share",
            "request",
            "--dataset",
            MEMBERS,
            "--department",
            "weijian",
            "--columns",
            "case_id,member_name",
            "--purpose",
            "核对",
            *base,
        ],
    )
    assert requested.exit_code == 0, requested.output
    (order,) = list_orders(shared)
    approved = runner.invoke(app, ["share", "approve", order.order_id, "--by", "minzheng", *base])
    assert approved.exit_code == 0 and "approved" in approved.output
    refreshed = runner.invoke(app, ["share", "refresh", *base])
    assert refreshed.exit_code == 0 and "60 rows" in refreshed.output
    shown = runner.invoke(app, ["share", "show", order.order_id, *base])
    assert "activate" in shown.output and "case_id, member_name" in shown.output
    profile = runner.invoke(app, ["share", "profile", "--department", "weijian", *base])
    assert profile.exit_code == 0
    assert (tmp_path / "home" / "profiles" / "weijian.share").stat().st_mode & 0o077 == 0
    for args, message in (
        (["share", "approve", order.order_id, "--by", "minzheng", *base], "cannot be approved"),
        (["share", "reject", "SO-1", "--by", "minzheng", "--reason", "x", *base], "not a share order id"),
        (["share", "list", "--format", "xml", *base], "--format"),
        (["share", "list", "--warehouse", str(tmp_path / "missing")], "does not exist"),
        (
            [
                "share",
                "request",
                "--dataset",
                MEMBERS,
                "--department",
                "weijian",
                "--columns",
                "case_id",
                "--purpose",
                "x",
                "--until",
                "2026-13-45",
                *base,
            ],
            "not a date",
        ),
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output
