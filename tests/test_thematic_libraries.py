"""The thematic libraries as dbt marts (智慧党建, 重点企业, 智慧应急), built on a small demo warehouse.

One demo landing zone (scale 0.05) is generated, the contracts the libraries read are landed and
turned into silver, and `dbt build` runs the marts of `models/marts/{party,enterprises,emergency}` and
everything upstream of them, three times:

- with no gold urban events at all (the Python builder of `gold/urban/events` has not run): every
  mart still builds, the waterlogging history is empty;
- with urban events (a projection of the grid reports, which carry their own grid and event code) and
  `as_of` = 8 November 2026, the evening of the demo's rainstorm;
- with the same events and the default `as_of` (the latest data date), a week after the storm.

The assertions recompute what each mart claims from the staging views (the marts' own inputs) or
from first principles (haversine distances), so that a wrong join or a wrong window fails them.
"""

from __future__ import annotations

import math
from pathlib import Path

import duckdb
import polars as pl
import pytest
import yaml
from deltalake import DeltaTable, write_deltalake

from ingestion.contract import batch_contracts
from ingestion.pipeline import ingest_contract
from ingestion.pseudonym import Pseudonymiser
from ingestion.silver import apply_silver
from ingestion.warehouse import Warehouse
from tests.test_dbt_project import DBT_DIR, DbtRun, DbtWorkspace

SCALE = 0.05
SEED = 3
DOMAINS = ("party", "enterprises", "emergency")
MARTS_DIR = DBT_DIR / "models" / "marts"
CONTRACTS = (
    "zuzhibu.party_organizations",
    "zuzhibu.party_members",
    "zuzhibu.household_links",
    "zhengshu.grid_registry",
    "gongan.household_registration",
    "shichang.enterprise_registration",
    "shichang.shareholders",
    "shuiwu.enterprise_tax",
    "shengtai.environment_penalties",
    "xiaofang.fire_inspections",
    "fagai.investment_projects",
    "zhengshu.enterprise_appeals",
    "yingji.sensor_devices",
    "yingji.emergency_resources",
    "qixiang.rainfall_forecast",
    "chengguan.grid_reports",
)
STORM_DAY = "2026-11-08"
FORBIDDEN_COLUMNS = {"name", "legal_rep_name", "shareholder_name", "address", "content", "caller_phone"}
EARTH_RADIUS_M = 6_371_008.8


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from demo_data import generate_landing_zone

    root = tmp_path_factory.mktemp("thematic")
    generate_landing_zone(root / "landing", scale=SCALE, seed=SEED, progress=False)
    store = Warehouse.at(root / "warehouse")
    pseudonymiser = Pseudonymiser(b"t" * 32)
    contracts = batch_contracts()
    for contract_id in CONTRACTS:
        ingest_contract(contracts[contract_id], root / "landing", store)
        apply_silver(contracts[contract_id], store, pseudonymiser)
    return root / "warehouse"


def build(warehouse: Path, name: str, domains: tuple[str, ...], *extra: str) -> tuple[DbtWorkspace, DbtRun]:
    """`dbt build` of the domains' marts and their ancestors into a DuckDB file of its own."""
    root = warehouse.parent / name
    space = DbtWorkspace(warehouse=warehouse, duckdb_file=root / "yiwang.duckdb", target=root / "target")
    root.mkdir()
    selection = [f"+path:models/marts/{domain}" for domain in domains]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("YIWANG_WAREHOUSE", str(warehouse))
        patch.setenv("YIWANG_DUCKDB", str(space.duckdb_file))
        patch.setenv("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
        # cautious: tests of other folders' models that merely touch a shared staging view stay out
        run = space.invoke("build", "--indirect-selection", "cautious", "--select", *selection, *extra)
    return space, run


def frame(space: DbtWorkspace, sql: str) -> pl.DataFrame:
    with duckdb.connect(str(space.duckdb_file)) as connection:
        return connection.sql(sql).pl()


def assert_built(run: DbtRun) -> None:
    bad = {name: status for name, status in run.statuses.items() if status not in ("success", "pass", "warn")}
    assert bad == {}
    assert run.success


@pytest.fixture(scope="module")
def libraries(warehouse: Path) -> DbtWorkspace:
    """All three libraries, before any gold urban event exists."""
    assert not (warehouse / "gold" / "urban" / "events").exists()
    space, run = build(warehouse, "libraries", DOMAINS)
    assert_built(run)
    return space


def write_urban_events(warehouse: Path) -> pl.DataFrame:
    """gold/urban/events as the grid reports make it: own grid and event code, the columns of the source."""
    sources = yaml.safe_load((DBT_DIR / "models" / "sources" / "_gold_sources.yml").read_text(encoding="utf-8"))
    table = next(t for t in sources["sources"][0]["tables"] if t["name"] == "urban_events")
    columns: dict[str, str] = table["config"]["meta"]["table_columns"]
    values = {
        "event_id": "'GR-' || r.report_id",
        "source": "'grid_report'",
        "source_ref": "r.report_id",
        "event_code": "r.event_code",
        "occurred_at": "r.reported_at",
        "lon": "r.lon",
        "lat": "r.lat",
        "grid_code": "r.grid_code",
        "community_code": "g.community_code",
        "street_code": "g.street_code",
        "district_code": "g.district_code",
        "description": "r.description",
        "located_by": "'delivered'",
        "classified_by": "'delivered'",
    }
    select = ", ".join(f"cast({values.get(c, 'null')} as {t}) as {c}" for c, t in columns.items())
    with duckdb.connect() as connection:
        connection.register("r", DeltaTable(str(warehouse / "silver/chengguan/grid_reports")).to_pyarrow_dataset())
        connection.register("g", DeltaTable(str(warehouse / "silver/zhengshu/grid_registry")).to_pyarrow_dataset())
        events = connection.sql(f"select {select} from r left join g using (grid_code)").pl()
    write_deltalake(str(warehouse / "gold" / "urban" / "events"), events.to_arrow(), mode="overwrite")
    return events


@pytest.fixture(scope="module")
def urban_events(warehouse: Path, libraries: DbtWorkspace) -> pl.DataFrame:
    return write_urban_events(warehouse)


@pytest.fixture(scope="module")
def storm(warehouse: Path, urban_events: pl.DataFrame) -> DbtWorkspace:
    space, run = build(warehouse, "storm", ("emergency",), "--vars", f"{{as_of: '{STORM_DAY}'}}")
    assert_built(run)
    return space


@pytest.fixture(scope="module")
def after_storm(warehouse: Path, urban_events: pl.DataFrame) -> DbtWorkspace:
    space, run = build(warehouse, "after_storm", ("emergency",))
    assert_built(run)
    return space


# --- all marts ----------------------------------------------------------------------------------


def mart_models() -> dict[str, tuple[str, dict]]:
    """Mart name -> (domain, its YAML entry), for every mart SQL file of the three domains."""
    found: dict[str, tuple[str, dict]] = {}
    for domain in DOMAINS:
        entries = yaml.safe_load((MARTS_DIR / domain / f"_{domain}__models.yml").read_text(encoding="utf-8"))
        by_name = {m["name"]: m for m in entries["models"]}
        for sql in sorted((MARTS_DIR / domain).glob("*.sql")):
            assert sql.stem in by_name, f"{sql.name} has no entry in _{domain}__models.yml"
            found[sql.stem] = (domain, by_name[sql.stem])
    return found


def test_every_mart_is_published_documented_and_free_of_personal_data(libraries: DbtWorkspace) -> None:
    marts = mart_models()
    assert {"party_org_tree", "enterprise_portraits", "emergency_waterlogging_risk"} <= set(marts)
    for name, (domain, entry) in marts.items():
        table = name.removeprefix("enterprise_" if domain == "enterprises" else f"{domain}_")
        assert entry["config"]["meta"]["gold_table"] == f"{domain}/{table}", name
        assert "description" in entry and all(c.get("description") for c in entry["columns"]), name
        described = frame(libraries, f"describe marts.{name}")
        built = dict(zip(described["column_name"], described["column_type"], strict=True))
        assert set(built) == {c["name"] for c in entry["columns"]}, name
        assert not FORBIDDEN_COLUMNS & set(built) and not [c for c in built if c.endswith("_key")], name
        # Delta cannot hold DuckDB's 128-bit integers (a bare SUM of integers); lists do not belong in marts.
        assert not [t for t in built.values() if "HUGEINT" in t or "INT128" in t or t.endswith("[]")], name


# --- 智慧党建 -------------------------------------------------------------------------------------


def test_every_organisation_hangs_from_the_district_committee(libraries: DbtWorkspace) -> None:
    tree = frame(libraries, "select * from marts.party_org_tree")
    roots = tree.filter(pl.col("parent_org_code").is_null())
    assert roots["org_type"].to_list() == ["committee"] and roots["depth"].to_list() == [0]
    root = roots["org_code"][0]
    assert tree["root_org_code"].unique().to_list() == [root]
    depths = dict(tree.group_by("org_type").agg(pl.col("depth").unique().sort()).iter_rows())
    assert depths == {"committee": [0, 1], "general_branch": [2], "branch": [3]}
    for row in tree.iter_rows(named=True):
        path = row["org_path"].split("/")
        assert path[0] == root and path[-1] == row["org_code"] and len(path) == row["depth"] + 1
    assert tree["children_count"].sum() == tree.height - 1
    assert tree.filter(pl.col("org_code") == root)["descendants_count"].to_list() == [tree.height - 1]


def test_member_counts_add_up_the_tree(libraries: DbtWorkspace) -> None:
    counts = frame(libraries, "select * from marts.party_org_members")
    children = counts.group_by("parent_org_code").agg(pl.col("total_members").sum().alias("below"))
    joined = counts.join(children, left_on="org_code", right_on="parent_org_code", how="left").with_columns(
        pl.col("below").fill_null(0)
    )
    assert (joined["total_members"] == joined["direct_members"] + joined["below"]).all()
    assert (counts["total_members"] == counts["total_full_members"] + counts["total_probationary_members"]).all()
    assert (counts["direct_in_service_members"] <= counts["direct_members"]).all()
    placed = libraries.query(
        "select count(*) from marts.party_member_households m join marts.party_org_tree t using (org_code)"
    )[0][0]
    root = counts.filter(pl.col("depth") == 0)
    assert root["total_members"].to_list() == [placed] == [counts["direct_members"].sum()]
    assert placed > 20 and counts.filter(pl.col("org_type") == "branch")["direct_members"].sum() == placed


def test_household_links_per_member_follow_the_zuzhibu_links(libraries: DbtWorkspace) -> None:
    members = frame(libraries, "select * from marts.party_member_households")
    assert members["as_of_date"].unique().cast(pl.String).to_list() == ["2026-11-09"]  # the last weekly snapshot
    expected = frame(
        libraries,
        """
        select member_id, count(distinct household_id) as households,
            count(*) filter (where date '2026-11-09' - coalesce(last_visit_date, linked_date) > 90) as overdue
        from staging.stg_zuzhibu__household_links where linked_date <= date '2026-11-09' group by member_id
        """,
    )
    both = members.join(expected, on="member_id", how="left").with_columns(pl.col("households", "overdue").fill_null(0))
    assert (both["households_linked"] == both["households"]).all()
    assert (both["links_visit_overdue"] == both["overdue"]).all()
    assert (both["is_below_link_norm"] == (both["households"] < 2)).all()
    below = members["is_below_link_norm"].sum()
    assert 0 < below < members.height / 4  # most members meet 每名党员联系至少两户, a few do not


def test_grid_coverage_shares_use_the_community_households(libraries: DbtWorkspace) -> None:
    coverage = frame(libraries, "select * from marts.party_grid_coverage")
    grids = libraries.query("select count(*) from staging.stg_zhengshu__grid_registry")[0][0]
    assert coverage.height == grids == coverage["grid_code"].n_unique()
    links_in_grids = libraries.query(
        "select count(*) from intermediate.int_party__household_links l "
        "join staging.stg_zhengshu__grid_registry g using (grid_code)"
    )[0][0]
    assert coverage["links_count"].sum() == links_in_grids > 0
    assert coverage["community_link_share"].is_between(0, 1).all()
    per_community = coverage.group_by("community_code").agg(
        pl.col("community_link_share").n_unique().alias("shares"),
        pl.col("linked_registered_households").sum().alias("linked"),
        pl.col("community_linked_households").first(),
    )
    assert (per_community["shares"] == 1).all()
    # A household linked from two grids of its community counts once for the community.
    assert (per_community["linked"] >= per_community["community_linked_households"]).all()
    estimate = coverage["grid_households_est"] * coverage["grids_in_community"]
    assert ((estimate - coverage["community_registered_households"]).abs() < 1e-6).all()


# --- 重点企业 -------------------------------------------------------------------------------------


def test_one_portrait_per_registered_enterprise_with_its_score_components(libraries: DbtWorkspace) -> None:
    portraits = frame(libraries, "select * from marts.enterprise_portraits")
    registered = libraries.query("select count(*) from staging.stg_shichang__enterprise_registration")[0][0]
    assert portraits.height == registered == portraits["uscc"].n_unique() > 20
    parts = ["penalty_points", "fire_hazard_points", "revenue_decline_points", "credit_points", "open_appeal_points"]
    assert (portraits["attention_score"] == portraits.select(pl.sum_horizontal(parts)).to_series()).all()
    level = (
        pl.when(pl.col("attention_score") >= 40)
        .then(pl.lit("high"))
        .when(pl.col("attention_score") >= 25)
        .then(pl.lit("medium"))
        .otherwise(pl.lit("low"))
    )
    assert (portraits["attention_level"] == portraits.select(level).to_series()).all()
    assert portraits.filter(pl.col("penalties_recent_count") >= 3)["penalty_points"].unique().to_list() in ([], [25])
    failed = portraits.filter(pl.col("last_inspection_result") == "fail_closed")
    assert (failed["fire_hazard_points"] == 25).all()
    assert portraits["industry_section_name"].null_count() == 0


def test_revenue_trend_follows_shuiwu(libraries: DbtWorkspace) -> None:
    portraits = frame(libraries, "select uscc, tax_year_latest, revenue_growth_pct from marts.enterprise_portraits")
    tax = frame(libraries, "select uscc, tax_year, revenue_wan_cny from staging.stg_shuiwu__enterprise_tax")
    latest = tax["tax_year"].max()
    wide = (
        tax.filter(pl.col("tax_year") >= latest - 1)
        .pivot(on="tax_year", index="uscc", values="revenue_wan_cny")
        .rename({str(latest): "now", str(latest - 1): "before"})
    )
    both = portraits.join(wide, on="uscc").filter(pl.col("before") > 0, pl.col("now").is_not_null())
    assert both.height > 10
    expected = (100 * (both["now"] - both["before"]) / both["before"]).round(2)
    assert ((both["revenue_growth_pct"] - expected).abs() < 0.006).all()
    assert (both["tax_year_latest"] == latest).all()


def test_enterprises_sit_in_the_nearest_grid_of_their_community(libraries: DbtWorkspace) -> None:
    portraits = frame(
        libraries,
        "select uscc, community_code, lon, lat, grid_code, located_by from marts.enterprise_portraits",
    )
    grids = frame(
        libraries, "select grid_code, community_code, center_lon, center_lat from staging.stg_zhengshu__grid_registry"
    )
    by_community: dict[str, list[tuple[str, float, float]]] = {}
    for g in grids.iter_rows(named=True):
        by_community.setdefault(g["community_code"], []).append((g["grid_code"], g["center_lon"], g["center_lat"]))
    located = portraits.filter(pl.col("located_by") == "nearest_centroid")
    assert located.height > portraits.height / 2
    for row in located.iter_rows(named=True):
        candidates = by_community[row["community_code"]]
        nearest = min(candidates, key=lambda c: (haversine(row["lon"], row["lat"], c[1], c[2]), c[0]))
        assert row["grid_code"] == nearest[0], row["uscc"]
    rollup = frame(libraries, "select * from marts.enterprise_grid_rollup")
    assert rollup["enterprises_count"].sum() == portraits["grid_code"].is_not_null().sum()
    assert rollup.height == grids.height


# --- 智慧应急 -------------------------------------------------------------------------------------


def haversine(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle distance in metres, written independently of the SQL."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(a))


def test_emergency_marts_build_without_urban_events(libraries: DbtWorkspace) -> None:
    assert libraries.query("select count(*) from marts.emergency_waterlogging_history") == [(0,)]
    risk = frame(libraries, "select * from marts.emergency_waterlogging_risk")
    grids = libraries.query("select count(*) from staging.stg_zhengshu__grid_registry")[0][0]
    assert risk.height == grids and risk["recent_points"].sum() == 0 and risk["history_points"].sum() == 0
    sensors = frame(libraries, "select * from marts.emergency_grid_sensors")
    devices = libraries.query("select count(*) from staging.stg_yingji__sensor_devices")[0][0]
    assert sensors["devices_count"].sum() == devices > 0
    assert (
        sensors["devices_count"] == sensors["active_count"] + sensors["offline_count"] + sensors["retired_count"]
    ).all()


def test_nearest_resources_are_truly_the_nearest(libraries: DbtWorkspace) -> None:
    nearest = frame(libraries, "select * from marts.emergency_nearest_resources")
    grids = frame(libraries, "select grid_code, center_lon, center_lat from staging.stg_zhengshu__grid_registry")
    resources = frame(
        libraries, "select resource_id, resource_type, lon, lat from staging.stg_yingji__emergency_resources"
    )
    assert (nearest["distance_m"] >= 0).all()
    for grid in grids.iter_rows(named=True):
        mine = nearest.filter(pl.col("grid_code") == grid["grid_code"])
        ranked = sorted(
            (
                haversine(grid["center_lon"], grid["center_lat"], r["lon"], r["lat"]),
                r["resource_id"],
                r["resource_type"],
            )
            for r in resources.iter_rows(named=True)
        )
        top3 = mine.filter(pl.col("is_top3_overall")).sort("overall_rank")
        assert top3["resource_id"].to_list() == [r[1] for r in ranked[:3]], grid["grid_code"]
        assert [round(d, 1) for d in top3["distance_m"]] == [round(r[0], 1) for r in ranked[:3]]
        first_of_type = {}
        for distance, ident, kind in ranked:
            first_of_type.setdefault(kind, (ident, distance))
        of_type = mine.filter(pl.col("is_nearest_of_type"))
        assert dict(zip(of_type["resource_type"], of_type["resource_id"], strict=True)) == {
            k: v[0] for k, v in first_of_type.items()
        }


def test_rainfall_outlook_takes_each_districts_latest_issue(storm: DbtWorkspace) -> None:
    outlook = frame(storm, "select * from marts.emergency_rainfall_outlook")
    latest = frame(
        storm,
        f"""
        select district_code, max(issued_at) as latest from staging.stg_qixiang__rainfall_forecast
        where issued_at < timezone('Asia/Shanghai', timestamp '{STORM_DAY}' + interval 1 day) group by 1
        """,
    )
    both = outlook.join(latest, on="district_code")
    assert both.height == outlook.height > 0 and (both["issued_at"] == both["latest"]).all()
    sums = outlook.group_by("district_code").agg(
        pl.col("rain_mm").sum().round(1).alias("rain"), pl.col("district_rain_next_24h_mm").first()
    )
    assert ((sums["rain"] - sums["district_rain_next_24h_mm"]).abs() < 0.05).all()  # issues cover 6 hours


def storm_grids(space: DbtWorkspace) -> set[str]:
    """The demo's rainstorm falls on the southern 40 % of the grids (demo_data/events.py)."""
    rows = space.query(
        "select grid_code from staging.stg_zhengshu__grid_registry "
        "where center_lat < (select quantile_cont(center_lat, 0.4) from staging.stg_zhengshu__grid_registry)"
    )
    return {row[0] for row in rows}


def test_storm_grids_are_at_high_risk_on_the_evening_of_8_november(
    storm: DbtWorkspace, urban_events: pl.DataFrame
) -> None:
    risk = frame(storm, "select * from marts.emergency_waterlogging_risk")
    assert risk["as_of_date"].cast(pl.String).unique().to_list() == [STORM_DAY]
    parts = ["history_points", "recent_points", "forecast_points"]
    assert (risk["risk_score"] == risk.select(pl.sum_horizontal(parts)).to_series()).all()
    home = risk.filter(pl.col("district_code") == "440605")
    assert set(home["max_warning_level"]) <= {"orange", "red"} and (home["forecast_points"] >= 25).all()
    high = set(risk.filter(pl.col("risk_level") == "high")["grid_code"])
    assert high and high <= storm_grids(storm)
    flooded = set(
        urban_events.filter(
            pl.col("event_code").is_in(["040201", "040202"]),
            pl.col("occurred_at").dt.convert_time_zone("Asia/Shanghai").dt.date().cast(pl.String) == STORM_DAY,
        )["grid_code"]
    )
    assert flooded and flooded <= high


def test_a_week_after_the_storm_history_remains_and_no_grid_is_high(
    after_storm: DbtWorkspace, urban_events: pl.DataFrame
) -> None:
    summary = frame(after_storm, "select * from marts.emergency_waterlogging_summary")
    assert summary["as_of_date"].cast(pl.String).unique().to_list() == ["2026-11-15"]
    floods = urban_events.filter(pl.col("event_code").is_in(["040201", "040202"]))
    expected = dict(floods.group_by("grid_code").len().iter_rows())
    assert (
        dict(summary.filter(pl.col("waterlogging_events") > 0).select("grid_code", "waterlogging_events").iter_rows())
        == expected
    )
    daily = frame(
        after_storm,
        "select grid_code, sum(waterlogging_events)::bigint as n from marts.emergency_waterlogging_history group by 1",
    )
    assert dict(daily.iter_rows()) == expected
    risk = frame(after_storm, "select * from marts.emergency_waterlogging_risk")
    assert risk.filter(pl.col("risk_level") == "high").height == 0
    assert risk["history_points"].sum() > 0
