"""The resource catalog (ops/catalog), the open-data export and `yiwang catalog`, on a small real warehouse.

One demo landing zone (scale 0.025) is generated and four contracts are landed and turned into silver:
the hourly rainfall forecast, the daily enterprise register (open, with a personal and a sensitive
column), the weekly grid registry and the monthly assistance members (sensitive, not open). A gold
product and a stream table are written directly with deltalake, with a pseudonym and a lineage column
that must never reach the open data. Lineage is checked on a small hand-made Dagster asset graph and
through the real catalog asset materialised by Dagster.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from dagster import AssetKey, AssetSpec, Definitions, asset, materialize
from deltalake import DeltaTable, write_deltalake
from rich.cells import cell_len
from rich.console import Console
from typer.testing import CliRunner

from ingestion.contract import batch_contracts
from ingestion.ledger import read_ledger
from ingestion.pipeline import ingest_contract
from ingestion.pseudonym import Pseudonymiser
from ingestion.silver import apply_silver
from ingestion.warehouse import Warehouse
from orchestration import catalog_cli
from orchestration.catalog_cli import catalog_app
from orchestration.dbt_assets import gold_product
from orchestration.ingestion_assets import bronze_key, build_bronze_asset, build_silver_asset, silver_key
from orchestration.resources import PlatformResource
from orchestration.sharing_assets import CATALOG_KEY, OPEN_DATA_KEY, sharing_assets
from quality.scorecard import build_scorecard
from thematic_libs.sharing import datasets as datasets_module
from thematic_libs.sharing.asset_metadata import dataset_metadata
from thematic_libs.sharing.catalog import (
    CATALOG,
    CatalogError,
    build_catalog,
    lineage_from_graph,
    read_catalog,
    search_catalog,
    write_catalog,
)
from thematic_libs.sharing.datasets import all_datasets
from thematic_libs.sharing.open_data import GENERATOR, LICENCE, UTF8_BOM, export_open_data, refresh_open_data

CONTRACTS = (
    "qixiang.rainfall_forecast",
    "shichang.enterprise_registration",
    "zhengshu.grid_registry",
    "minzheng.assistance_members",
)
GOLD = "gold/emergency/waterlogging_summary"
STREAM = "bronze/stream/iot_sensor_readings"


def _gold_rows(n: int) -> pa.Table:
    return pa.table(
        {
            "grid_code": [f"44060512400{i:04d}" for i in range(n)],
            "grid_name": [f"第{i}网格" for i in range(n)],
            "waterlogging_events": list(range(n)),
            "last_occurred_at": [datetime(2026, 11, 8, 12, tzinfo=UTC)] * n,
            "person_key": [f"k{i}" for i in range(n)],
            "_built_from": ["test"] * n,
        }
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Warehouse:
    from demo_data import generate_landing_zone

    root = tmp_path_factory.mktemp("catalog")
    summary = generate_landing_zone(root / "landing", scale=0.025, seed=3, progress=False)
    store = Warehouse.at(root / "warehouse")
    pseudonymiser = Pseudonymiser(b"c" * 32)
    for contract_id in CONTRACTS:
        contract = batch_contracts()[contract_id]
        ingest_contract(contract, root / "landing", store, as_of=summary.as_of)
        apply_silver(contract, store, pseudonymiser)
    build_scorecard(store, summary.as_of)
    write_deltalake(store.uri(GOLD), _gold_rows(3))
    stream = pa.table(
        {
            "device_id": ["D1", "D1", "D2"],
            "ts": [datetime(2026, 11, 8, 12, tzinfo=UTC)] * 3,
            "metric": ["water_level"] * 3,
            "value": [0.1, 0.2, 0.3],
            "battery_pct": [90.0] * 3,
            "seq": [1, 2, 1],
            "_topic": ["iot.sensor-readings"] * 3,
        }
    )
    write_deltalake(store.uri(STREAM), stream)
    return store


@pytest.fixture
def warehouse(built: Warehouse, tmp_path: Path) -> Warehouse:
    """A private copy of the built warehouse, for a test that writes."""
    shutil.copytree(built.root, tmp_path / "warehouse")
    return Warehouse.at(tmp_path / "warehouse")


def _loaded_at(store: Warehouse) -> datetime:
    return read_ledger(store).filter(pl.col("status") == "loaded")["processed_at"].max()


def _rows(store: Warehouse, now: datetime | None = None) -> dict[str, dict]:
    return {r["dataset_id"]: r for r in build_catalog(store, now=now).to_pylist()}


# --- the catalog ---------------------------------------------------------------------------------


def test_one_row_per_contract_topic_and_product(built: Warehouse) -> None:
    rows = _rows(built)
    assert set(rows) == set(all_datasets(built))
    layers = pl.DataFrame(list(rows.values())).group_by("layer").len()
    assert dict(layers.iter_rows()) == {"silver": len(batch_contracts()), "stream": 3, "gold": 33}
    assert {"minzheng.assistance_members", "stream.iot_sensor_readings", "party.grid_coverage"} <= set(rows)
    assert rows["social_assistance.case_review"]["restricted"] is True
    assert rows["emergency.waterlogging_summary"]["sharing_type"] == "unconditional"


def test_row_counts_versions_and_load_times_come_from_the_log_and_the_ledger(built: Warehouse) -> None:
    rows = _rows(built)
    ledger = read_ledger(built).filter(pl.col("status") == "loaded")
    for contract_id in CONTRACTS:
        row = rows[contract_id]
        table = DeltaTable(built.uri(row["source_table"]))
        assert row["row_count"] == table.to_pyarrow_table().num_rows > 0
        assert row["table_version"] == table.version()
        assert row["last_loaded_at"] == ledger.filter(pl.col("contract_id") == contract_id)["processed_at"].max()
    assert rows["emergency.waterlogging_summary"]["row_count"] == 3
    assert rows["stream.iot_sensor_readings"]["row_count"] == 3
    assert rows["stream.iot_sensor_readings"]["last_loaded_at"] is not None
    never = rows["gongan.household_registration"]
    assert (never["row_count"], never["table_version"], never["last_loaded_at"]) == (None, None, None)


def test_freshness_follows_the_cadence_with_a_grace(built: Warehouse) -> None:
    loaded = _loaded_at(built)
    soon = _rows(built, now=loaded + timedelta(minutes=30))
    assert soon["qixiang.rainfall_forecast"]["freshness"] == "fresh"  # hourly, 30 minutes later
    later = _rows(built, now=loaded + timedelta(days=2))
    assert later["qixiang.rainfall_forecast"]["freshness"] == "stale"  # hourly
    assert later["shichang.enterprise_registration"]["freshness"] == "stale"  # daily: 1.25 days allowed
    assert later["zhengshu.grid_registry"]["freshness"] == "fresh"  # weekly
    assert later["minzheng.assistance_members"]["freshness"] == "fresh"  # monthly
    assert later["gongan.household_registration"]["freshness"] == "never"
    assert later["emergency.waterlogging_summary"]["freshness"] == "fresh"  # gold: fresh once it exists
    assert later["stream.iot_sensor_readings"]["freshness"] == "fresh"
    assert later["stream.hotline_appeals"]["freshness"] == "never"
    assert later["party.grid_coverage"]["freshness"] == "never"


def test_classifications_sensitive_columns_and_quality(built: Warehouse) -> None:
    rows = _rows(built)
    register = rows["shichang.enterprise_registration"]
    classes = {c["name"]: c["classification"] for c in register["columns"]}
    assert classes["legal_rep_id_number"] == "sensitive" and classes["legal_rep_name"] == "personal"
    assert classes["uscc"] == "public"
    assert register["sensitive_columns"] == ["legal_rep_id_number"]
    assert register["primary_key"] == ["uscc"]
    assert rows["minzheng.assistance_members"]["sensitive_columns"] == ["member_id_number", "disability_level"]
    gold = {c["name"]: c["classification"] for c in rows["emergency.waterlogging_summary"]["columns"]}
    assert gold["person_key"] == "personal" and gold["grid_code"] == "internal"

    card = pl.from_arrow(built.table("ops/quality_scorecard").to_pyarrow_table())
    scores = dict(card.filter(pl.col("grain") == "contract").select("contract_id", "overall_score").iter_rows())
    for contract_id in CONTRACTS:
        assert rows[contract_id]["quality_score"] == pytest.approx(scores[contract_id])
        assert 0 <= rows[contract_id]["quality_score"] <= 1
    assert rows["emergency.waterlogging_summary"]["quality_score"] is None
    assert rows["stream.iot_sensor_readings"]["quality_score"] is None


def test_search_in_chinese_and_english(built: Warehouse) -> None:
    frame = pl.from_arrow(build_catalog(built))
    assert isinstance(frame, pl.DataFrame)

    def ids(*words: str) -> set[str]:
        return set(search_catalog(frame, list(words))["dataset_id"])

    assert {"minzheng.assistance_members", "minzheng.assistance_cases", "social_assistance.case_review"} <= ids("救助")
    assert "qixiang.rainfall_forecast" in ids("降雨")
    assert "qixiang.rainfall_forecast" in ids("气象局")  # the owner's label
    assert ids("RAIN") >= {"qixiang.rainfall_forecast", "emergency.rainfall_outlook"}
    assert "qixiang.rainfall_forecast" in ids("rain", "DISTRICT")
    assert "shichang.enterprise_registration" in ids("legal representative")  # a column description
    assert "zhengshu.grid_registry" in ids("polygon_wkt")  # a column name
    assert ids("救助", "rainfall") == set()
    assert search_catalog(frame, "rain District").height == len(ids("rain", "district"))


def test_write_catalog_adds_a_version_only_when_something_changed(warehouse: Warehouse) -> None:
    now = _loaded_at(warehouse) + timedelta(hours=3)
    assert write_catalog(warehouse, build_catalog(warehouse, now=now)) == 0
    # built again a minute later: only built_at differs
    assert write_catalog(warehouse, build_catalog(warehouse, now=now + timedelta(minutes=1))) == 0
    assert DeltaTable(warehouse.uri(CATALOG)).version() == 0
    write_deltalake(warehouse.uri(GOLD), _gold_rows(2), mode="append")
    assert write_catalog(warehouse, build_catalog(warehouse, now=now)) == 1
    lineage = {GOLD: (["zhengshu.grid_registry"], [])}
    assert write_catalog(warehouse, build_catalog(warehouse, lineage, now=now)) == 2
    frame = read_catalog(warehouse)
    row = frame.filter(pl.col("dataset_id") == "emergency.waterlogging_summary").row(0, named=True)
    assert row["row_count"] == 5 and row["upstream"] == ["zhengshu.grid_registry"]
    assert frame["layer"].unique(maintain_order=True).to_list() == ["silver", "stream", "gold"]


def test_read_catalog_names_what_to_run_when_it_is_missing(built: Warehouse, tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="yiwang catalog build"):
        read_catalog(Warehouse.at(tmp_path / "empty"))


# --- lineage -------------------------------------------------------------------------------------


def test_lineage_walks_through_models_to_the_nearest_datasets() -> None:
    @asset(key=["bronze", "dep", "things"])
    def bronze() -> None: ...

    @asset(key=["silver", "dep", "things"], deps=[bronze])
    def silver() -> None: ...

    @asset(key=["silver", "dep", "unread"])
    def unread() -> None: ...

    @asset(key=["staging", "stg_dep__unread"], deps=[unread])
    def staging_unread() -> None: ...

    @asset(key=["staging", "stg_dep__things"], deps=[silver])
    def staging() -> None: ...

    @asset(key=["reference", "codes"])
    def seed() -> None: ...

    @asset(key=["marts", "things_by_grid"], deps=[staging, seed])
    def mart() -> None: ...

    @asset(key=["gold", "dom", "things_by_grid"], deps=[mart])
    def product() -> None: ...

    @asset(key=["gold", "dom", "later"], deps=[product, AssetKey(["bronze", "stream", "topic"])])
    def later() -> None: ...

    stream = AssetSpec(["bronze", "stream", "topic"])
    keys = [bronze, silver, unread, staging_unread, staging, seed, mart, product, later]

    @asset(key=["ops", "catalog"], deps=[k.key for k in keys[1:]], group_name="sharing")
    def catalog() -> None: ...

    graph = Definitions(assets=[*keys, stream, catalog]).resolve_asset_graph()
    tables = {
        "silver/dep/things": "dep.things",
        "silver/dep/unread": "dep.unread",
        "gold/dom/things_by_grid": "dom.things_by_grid",
        "gold/dom/later": "dom.later",
        "bronze/stream/topic": "stream.topic",
        "gold/dom/not_an_asset": "dom.not_an_asset",
    }
    lineage = lineage_from_graph(graph, tables, ignore=[CATALOG_KEY])
    assert lineage["silver/dep/things"] == (["bronze/dep/things"], ["dom.things_by_grid"])
    assert lineage["silver/dep/unread"] == ([], ["staging/stg_dep__unread"])
    assert lineage["gold/dom/things_by_grid"] == (["dep.things", "reference/codes"], ["dom.later"])
    assert lineage["gold/dom/later"] == (["dom.things_by_grid", "stream.topic"], [])
    assert lineage["bronze/stream/topic"] == ([], ["dom.later"])
    assert "gold/dom/not_an_asset" not in lineage
    # without `ignore`, the catalog would be everybody's downstream
    assert "ops/catalog" in lineage_from_graph(graph, tables)["gold/dom/later"][1]


def test_the_catalog_asset_reads_lineage_off_the_definitions(
    warehouse: Warehouse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("YIWANG_OPEN_DATA", str(tmp_path / "open"))
    upstream = [
        AssetSpec(["silver", "zhengshu", "grid_registry"]),
        AssetSpec(["staging", "stg_zhengshu__grid_registry"], deps=[["silver", "zhengshu", "grid_registry"]]),
        AssetSpec(["marts", "emergency_waterlogging_summary"], deps=[["staging", "stg_zhengshu__grid_registry"]]),
        AssetSpec(GOLD.split("/"), deps=[["marts", "emergency_waterlogging_summary"]]),
    ]
    catalog, open_data, *_ = sharing_assets(upstream)
    assert set(catalog.asset_deps[CATALOG_KEY]) == {
        AssetKey(["silver", "zhengshu", "grid_registry"]),
        AssetKey(GOLD.split("/")),
    }
    platform = PlatformResource(
        landing=str(tmp_path / "landing"),
        warehouse=warehouse.root,
        reports_dir=str(tmp_path / "reports"),
        key_file=str(tmp_path / "key"),
    )
    result = materialize([*upstream, catalog, open_data], resources={"platform": platform})
    assert result.success
    row = read_catalog(warehouse).filter(pl.col("dataset_id") == "zhengshu.grid_registry").row(0, named=True)
    assert row["downstream"] == ["emergency.waterlogging_summary"]
    assert row["upstream"] == []  # the bronze asset is not among these definitions
    [materialization] = result.asset_materializations_for_node(open_data.op.name)
    assert materialization.asset_key == OPEN_DATA_KEY
    assert (tmp_path / "open" / "zhengshu.grid_registry" / "data.csv").is_file()


# --- the same facts on the Dagster assets ----------------------------------------------------------


def test_assets_carry_the_catalog_metadata(built: Warehouse, monkeypatch: pytest.MonkeyPatch) -> None:
    contract = batch_contracts()["minzheng.assistance_members"]
    silver = build_silver_asset(contract).specs_by_key[silver_key(contract)]
    classes = {c.name: c.tags["classification"] for c in silver.metadata["dagster/column_schema"].columns}
    assert classes["member_id_number_key"] == "personal" and "member_id_number" not in classes
    assert classes["member_name"] == "personal" and classes["case_id"] == "internal"
    assert silver.metadata["sharing_type"].value == "conditional"
    assert "民政局" in silver.metadata["owner"].value and silver.metadata["cadence"].value == "monthly full snapshot"
    assert silver.owners == ["team:minzheng"] and silver.tags["sharing"] == "conditional"
    bronze = build_bronze_asset(contract).specs_by_key[bronze_key(contract)]
    raw = {c.name: c.tags["classification"] for c in bronze.metadata["dagster/column_schema"].columns}
    assert raw["member_id_number"] == "sensitive" and bronze.tags["sharing"] == "none"

    monkeypatch.setenv("YIWANG_WAREHOUSE", built.root)
    product = gold_product({"resource_type": "model", "meta": {"gold_table": "emergency/waterlogging_summary"}})
    assert product is not None and product.sharing_type == "unconditional"
    gold = {c.name: c.tags["classification"] for c in dataset_metadata(product)["dagster/column_schema"].columns}
    assert gold["person_key"] == "personal" and gold["grid_code"] == "internal"
    assert gold_product({"resource_type": "model", "meta": {}}) is None


# --- open data -----------------------------------------------------------------------------------


def _csv_header(path: Path) -> list[str]:
    raw = path.read_bytes()
    assert raw.startswith(UTF8_BOM)
    return next(csv.reader(io.StringIO(raw[len(UTF8_BOM) :].decode("utf-8"))))


def test_open_data_holds_only_public_and_internal_columns(built: Warehouse, tmp_path: Path) -> None:
    out = tmp_path / "open"
    exported = {e.dataset_id: e for e in export_open_data(built, out)}
    assert set(exported) == {
        "qixiang.rainfall_forecast",
        "shichang.enterprise_registration",
        "zhengshu.grid_registry",
        "emergency.waterlogging_summary",
    }
    datasets = all_datasets(built)
    for dataset_id, item in exported.items():
        classes = {c.name: c.classification for c in datasets[dataset_id].columns}
        folder = out / dataset_id
        header = _csv_header(folder / "data.csv")
        parquet = pq.read_table(folder / "data.parquet")
        metadata = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
        assert header == parquet.column_names == [c["name"] for c in metadata["columns"]] == list(item.columns)
        for name in header:
            assert classes[name] in ("public", "internal"), (dataset_id, name)
            assert not name.endswith("_key") and not name.startswith("_"), (dataset_id, name)
        source = DeltaTable(built.uri(datasets[dataset_id].table))
        assert parquet.num_rows == metadata["rows"] == item.rows == source.to_pyarrow_table().num_rows
        assert metadata["source_version"] == source.version()
        assert metadata["licence"] == LICENCE and metadata["generator"] == GENERATOR
        assert metadata["exported_at"].endswith("+08:00")
    register = _csv_header(out / "shichang.enterprise_registration" / "data.csv")
    assert "legal_rep_name" not in register and not any(n.startswith("legal_rep_id") for n in register)
    assert _csv_header(out / "emergency.waterlogging_summary" / "data.csv") == [
        "grid_code",
        "grid_name",
        "waterlogging_events",
        "last_occurred_at",
    ]
    text = (out / "emergency.waterlogging_summary" / "data.csv").read_text(encoding="utf-8-sig")
    assert "第1网格" in text and "2026-11-08 20:00:00" in text  # Chinese as is, times in CST
    index = json.loads((out / "index.json").read_text(encoding="utf-8"))
    assert sorted(d["id"] for d in index["datasets"]) == sorted(exported)


def test_open_data_refreshes_with_its_source_and_drops_what_closed(
    warehouse: Warehouse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "open"
    first = {e.dataset_id: e for e in export_open_data(warehouse, out)}
    assert all(e.written for e in first.values())
    stamps = {d: (out / d / "data.parquet").stat().st_mtime_ns for d in first}
    (out / ".zhengshu.grid_registry.tmp-dead").mkdir()  # what a crash mid-export leaves behind

    again = {e.dataset_id: e for e in export_open_data(warehouse, out)}
    assert not any(e.written for e in again.values())
    assert {d: (out / d / "data.parquet").stat().st_mtime_ns for d in again} == stamps
    assert not (out / ".zhengshu.grid_registry.tmp-dead").exists()

    write_deltalake(warehouse.uri(GOLD), _gold_rows(2), mode="append")
    third = {e.dataset_id: e for e in export_open_data(warehouse, out)}
    assert [d for d, e in third.items() if e.written] == ["emergency.waterlogging_summary"]
    assert third["emergency.waterlogging_summary"].rows == 5
    assert json.loads((out / "emergency.waterlogging_summary" / "metadata.json").read_text())["source_version"] == 1

    # products.yaml no longer shares the summary unconditionally: its export goes
    products = yaml.safe_load(datasets_module.PRODUCTS_FILE.read_text(encoding="utf-8"))
    products["products"]["emergency/waterlogging_summary"] = {"title": "内涝汇总 Waterlogging summary by grid"}
    edited = tmp_path / "products.yaml"
    edited.write_text(yaml.safe_dump(products, allow_unicode=True), encoding="utf-8")
    monkeypatch.setattr(datasets_module, "PRODUCTS_FILE", edited)
    datasets_module._products.cache_clear()
    try:
        exported, removed = refresh_open_data(warehouse, out)
    finally:
        monkeypatch.undo()
        datasets_module._products.cache_clear()
    assert removed == ["emergency.waterlogging_summary"]
    assert not (out / "emergency.waterlogging_summary").exists()
    assert (out / "zhengshu.grid_registry").is_dir() and len(exported) == 3


# --- the command line ----------------------------------------------------------------------------


@pytest.fixture
def cli(built: Warehouse, monkeypatch: pytest.MonkeyPatch):
    """Run `yiwang catalog ...` in an 80-column terminal against the built warehouse (catalog built once)."""
    monkeypatch.setattr(catalog_cli, "console", Console(width=80))
    runner = CliRunner()
    if not built.exists(CATALOG):
        result = runner.invoke(catalog_app, ["build", "--no-lineage", "--warehouse", built.root])
        assert result.exit_code == 0, result.output

    def run(*args: str, warehouse: str | None = built.root):
        return runner.invoke(catalog_app, [*args, *(["--warehouse", warehouse] if warehouse else [])])

    return run


def _fits(output: str, width: int = 80) -> None:
    assert max(cell_len(line) for line in output.splitlines()) <= width


def test_cli_list_in_three_formats(cli) -> None:
    table = cli("list")
    assert table.exit_code == 0, table.output
    _fits(table.output)
    assert "dispatch.department_monthly_ranking" in table.output and "CST" in table.output
    rows = json.loads(cli("list", "--format", "json", "--layer", "silver").stdout)
    assert {r["layer"] for r in rows} == {"silver"} and len(rows) == len(batch_contracts())
    loaded = next(r for r in rows if r["dataset_id"] == "zhengshu.grid_registry")
    assert loaded["last_loaded_at"].endswith("+08:00")
    open_rows = list(csv.DictReader(io.StringIO(cli("list", "--format", "csv", "--sharing", "unconditional").stdout)))
    assert {r["sharing_type"] for r in open_rows} == {"unconditional"}
    assert "emergency.waterlogging_summary" in {r["dataset_id"] for r in open_rows}


def test_cli_show_and_search(cli) -> None:
    shown = cli("show", "shichang.enterprise_registration")
    assert shown.exit_code == 0, shown.output
    _fits(shown.output)
    for text in ("市场监督管理局", "legal_rep_id_number", "sensitive", "personal", "CST", "unconditional"):
        assert text in shown.output
    as_json = json.loads(cli("show", "minzheng.assistance_members", "--format", "json").stdout)
    assert as_json["sensitive_columns"] == ["member_id_number", "disability_level"]
    found = cli("search", "救助")
    assert found.exit_code == 0 and "minzheng.assistance_members" in found.output
    _fits(found.output)
    assert "no dataset mentions" in cli("search", "nothing-like-this").output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("list", "--warehouse", "/nonexistent/warehouse"), "does not exist"),
        (("show", "nobody.nothing"), "unknown dataset"),
        (("list", "--format", "xml"), "--format"),
        (("show", "zhengshu.grid_registry", "--format", "csv"), "--format"),
        (("list", "--layer", "bronze"), "--layer"),
    ],
)
def test_cli_refuses_in_one_line(cli, args: tuple[str, ...], message: str) -> None:
    result = cli(*args, warehouse=None) if "--warehouse" in args else cli(*args)
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_cli_without_a_catalog_says_what_to_run(cli, tmp_path: Path) -> None:
    (tmp_path / "warehouse").mkdir()
    result = cli("list", warehouse=str(tmp_path / "warehouse"))
    assert result.exit_code == 2 and "yiwang catalog build" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
