"""The dbt project: generated from the contracts, lint-clean, and it really builds over silver Delta tables.

The build tests write a few silver tables themselves (schema = `contract.silver_schema()`), leave the
other contracts' tables missing on purpose, run `dbt build` in process, and read the staging views
back from the DuckDB file. One test puts a duplicate primary key into silver and expects dbt's
uniqueness tests to fail, so that a broken test setup cannot pass silently.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
import yaml
from deltalake import write_deltalake

from ingestion.contract import Contract, batch_contracts
from ingestion.warehouse import Warehouse
from orchestration import dbt_codegen
from orchestration.dbt_codegen import (
    check_dbt_sources,
    model_name,
    silver_key_columns,
    source_identifier,
    write_dbt_sources,
)
from orchestration.dbt_sources import StageReport

REPO_ROOT = Path(__file__).resolve().parent.parent
DBT_DIR = REPO_ROOT / "dbt_project"
STAGING_DIR = DBT_DIR / "models" / "staging"

# Written to silver: a sensitive single-column key, a composite key with integers and timestamps,
# dates and allowed values. Every other batch contract has no silver table in these tests.
PRESENT = ("gongan.household_registration", "zhihui.ticket_outcomes", "fagai.investment_projects")
ROWS_PER_TABLE = 3
WHEN = dt.datetime(2026, 11, 1, 2, 0, tzinfo=dt.UTC)


# --- generated files ----------------------------------------------------------------------------


def test_generated_files_are_in_sync_with_the_contracts() -> None:
    assert check_dbt_sources(DBT_DIR) == [], "run `python -m orchestration.dbt_codegen`"


def test_one_staging_model_and_one_source_per_batch_contract() -> None:
    contracts = batch_contracts()
    models = {p.stem for p in STAGING_DIR.glob("stg_*.sql")}
    assert models == {model_name(c) for c in contracts.values()}
    sources = yaml.safe_load((STAGING_DIR / "_sources.yml").read_text(encoding="utf-8"))["sources"]
    declared = {(s["name"], t["name"]) for s in sources for t in s["tables"]}
    assert declared == {(c.department, c.dataset) for c in contracts.values()}
    for source in sources:
        for table in source["tables"]:
            assert table["config"]["meta"]["delta_table"] == f"silver/{source['name']}/{table['name']}"


def test_staging_tests_follow_the_contracts() -> None:
    models = yaml.safe_load((STAGING_DIR / "_staging.yml").read_text(encoding="utf-8"))["models"]
    by_name = {m["name"]: m for m in models}
    household = {c["name"]: c.get("data_tests", []) for c in by_name["stg_gongan__household_registration"]["columns"]}
    assert "unique" in household["id_number_key"] and "not_null" in household["id_number_key"]
    assert "id_number" not in household  # the sensitive column exists in silver only as its pseudonym
    assert {"accepted_values": {"arguments": {"values": ["1", "2"]}}} in household["gender"]
    assert household["address"] == []  # optional, free text
    members = by_name["stg_minzheng__assistance_members"]
    assert members["data_tests"] == [{"unique_key": {"arguments": {"columns": ["case_id", "member_id_number_key"]}}}]
    disability = next(c for c in members["columns"] if c["name"] == "disability_level_key")
    assert "data_tests" not in disability  # allowed values do not apply to a pseudonym


def test_codegen_reports_and_repairs_drift(tmp_path: Path) -> None:
    project = tmp_path / "dbt_project"
    shutil.copytree(DBT_DIR / "models", project / "models")
    assert check_dbt_sources(project) == []
    edited = project / "models" / "staging" / "stg_gongan__household_registration.sql"
    edited.write_text(edited.read_text(encoding="utf-8") + "-- hand edit\n", encoding="utf-8")
    (project / "models" / "staging" / "stg_gone__away.sql").write_text(
        f"-- {dbt_codegen.GENERATED_MARKER}/gone.away.yaml\nselect 1 as x\n", encoding="utf-8"
    )
    (project / "models" / "staging" / "_sources.yml").unlink()
    drift = check_dbt_sources(project)
    assert any("stg_gongan__household_registration.sql" in d for d in drift)
    assert any(d.startswith("stale") and "stg_gone__away.sql" in d for d in drift)
    assert any(d.startswith("missing") and "_sources.yml" in d for d in drift)
    assert dbt_codegen.main(["--check", "--project-dir", str(project)]) == 1
    assert len(write_dbt_sources(project)) == 3
    assert check_dbt_sources(project) == []
    assert write_dbt_sources(project) == []


# --- SQL style ----------------------------------------------------------------------------------


def test_sqlfluff_lint_is_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlfluff.core import FluffConfig, Linter

    monkeypatch.chdir(REPO_ROOT)  # .sqlfluff and .sqlfluffignore are found from the working directory
    linter = Linter(config=FluffConfig.from_root())
    records = linter.lint_paths(("dbt_project/models", "dbt_project/macros", "dbt_project/tests")).as_records()
    assert len(records) >= len(batch_contracts())
    problems = [
        f"{r['filepath']}:{v['start_line_no']}: {v['code']} {v['description']}"
        for r in records
        for v in r["violations"]
    ]
    assert problems == []


# --- a real dbt build ---------------------------------------------------------------------------


def _value(contract: Contract, field: pa.Field, row: int) -> Any:
    """A valid value of a silver column in row `row` (unique per row, so that keys stay unique)."""
    if field.name.endswith("_key") and field.type == pa.string():
        return f"hmac-{field.name}-{row:04d}"
    column = next((c for c in contract.columns if c.name == field.name), None)
    if column is not None and column.allowed_values:
        return column.allowed_values[row % len(column.allowed_values)]
    by_type: dict[pa.DataType, Any] = {
        pa.string(): f"{field.name}-{row:04d}",
        pa.int64(): row + 1,
        pa.float64(): 10.5 + row,
        pa.bool_(): row % 2 == 0,
        pa.date32(): dt.date(2026, 1, 1) + dt.timedelta(days=row),
        pa.timestamp("us", tz="UTC"): WHEN + dt.timedelta(hours=row),
    }
    return by_type[field.type]


def silver_rows(contract: Contract, rows: range) -> pa.Table:
    schema = contract.silver_schema()
    records = [{f.name: _value(contract, f, i) for f in schema} for i in rows]
    for record in records:
        record.update(_batch_id="20261101T020000", _extracted_at=WHEN, _ingested_at=WHEN)
    return pa.Table.from_pylist(records, schema=schema)


def write_silver(warehouse: Path, contract: Contract, table: pa.Table, mode: str = "overwrite") -> None:
    write_deltalake(str(warehouse / "silver" / contract.table_path), table, mode=mode)


@dataclass
class DbtRun:
    success: bool
    statuses: dict[str, str]  # node name -> status (success, pass, fail, error)


@dataclass
class DbtWorkspace:
    warehouse: Path
    duckdb_file: Path
    target: Path
    staged: StageReport | None = None  # what the last invocation staged

    def invoke(self, *args: str) -> DbtRun:
        """Stage the sources of this warehouse (as every run does before dbt), then run dbt with `args`."""
        from dbt.cli.main import dbtRunner

        from orchestration.dbt_sources import stage_sources

        if args[0] in ("build", "run", "test", "seed"):
            manifest = self.target / "manifest.json"  # the sources do not change within a test module
            if not manifest.exists():
                parsed = dbtRunner().invoke(["parse", *self._options()])
                assert parsed.success, parsed.exception
            loaded = json.loads(manifest.read_text(encoding="utf-8"))
            self.staged = stage_sources(loaded, self.duckdb_file, Warehouse.at(self.warehouse))
        result = dbtRunner().invoke([*args, *self._options()])
        if result.exception is not None:
            raise result.exception
        statuses = {r.node.name: str(r.status) for r in result.result.results}
        return DbtRun(success=result.success, statuses=statuses)

    def _options(self) -> list[str]:
        return [
            "--project-dir", str(DBT_DIR),
            "--profiles-dir", str(DBT_DIR),
            "--target-path", str(self.target),
            "--log-path", str(self.target / "logs"),
            "--quiet",
        ]  # fmt: skip

    def query(self, sql: str) -> list[tuple]:
        with duckdb.connect(str(self.duckdb_file)) as connection:
            return connection.sql(sql).fetchall()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DbtWorkspace]:
    root = tmp_path_factory.mktemp("dbt")
    space = DbtWorkspace(warehouse=root / "warehouse", duckdb_file=root / "yiwang.duckdb", target=root / "target")
    contracts = batch_contracts()
    for contract_id in PRESENT:
        write_silver(
            space.warehouse,
            contracts[contract_id],
            silver_rows(contracts[contract_id], range(ROWS_PER_TABLE)),
        )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("YIWANG_WAREHOUSE", str(space.warehouse))
        patch.setenv("YIWANG_DUCKDB", str(space.duckdb_file))
        patch.setenv("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
        yield space


@pytest.fixture(scope="module")
def full_build(workspace: DbtWorkspace) -> DbtRun:
    return workspace.invoke("build")


def test_dbt_build_succeeds_with_most_silver_tables_missing(full_build: DbtRun) -> None:
    models = {name for name in full_build.statuses if name.startswith("stg_") and not name.startswith("stg_gold__")}
    assert models == {model_name(c) for c in batch_contracts().values()}
    failed = {name: status for name, status in full_build.statuses.items() if status not in ("success", "pass")}
    assert failed == {}
    assert full_build.success


def test_dbt_tests_ran_on_every_key(full_build: DbtRun) -> None:
    tests = {name for name in full_build.statuses if not name.startswith("stg_")}
    assert "unique_stg_gongan__household_registration_id_number_key" in tests
    assert any(name.startswith("unique_key_stg_zhihui__ticket_outcomes") for name in tests)
    assert any(name.startswith("accepted_values_stg_fagai__investment_projects_status") for name in tests)
    assert len(tests) > 250


@pytest.mark.parametrize("contract_id", PRESENT)
def test_staging_view_returns_the_silver_rows(workspace: DbtWorkspace, full_build: DbtRun, contract_id: str) -> None:
    contract = batch_contracts()[contract_id]
    expected = silver_rows(contract, range(ROWS_PER_TABLE))
    view = f"staging.{model_name(contract)}"
    columns = [row[0] for row in workspace.query(f"describe {view}")]
    assert columns == expected.schema.names
    key = ", ".join(silver_key_columns(contract))
    staged = workspace.query(f"select {key} from {view} order by {key}")
    assert staged == sorted(zip(*(expected.column(k).to_pylist() for k in silver_key_columns(contract)), strict=True))
    lineage = workspace.query(f"select distinct _batch_id, _extracted_at from {view}")
    assert lineage == [("20261101T020000", WHEN)]


def test_staging_view_types_follow_the_contract(workspace: DbtWorkspace, full_build: DbtRun) -> None:
    types = dict((row[0], row[1]) for row in workspace.query("describe staging.stg_zhihui__ticket_outcomes"))
    assert types["event_seq"] == "BIGINT"
    assert types["event_at"] == "TIMESTAMP WITH TIME ZONE"
    assert types["satisfaction"] == "BIGINT"
    fagai = dict((row[0], row[1]) for row in workspace.query("describe staging.stg_fagai__investment_projects"))
    assert fagai["planned_start"] == "DATE" and fagai["total_investment_wan_cny"] == "DOUBLE"


def test_missing_silver_table_is_an_empty_view_with_the_contract_columns(
    workspace: DbtWorkspace, full_build: DbtRun
) -> None:
    contract = batch_contracts()["minzheng.cremation_records"]
    assert not (workspace.warehouse / "silver" / contract.table_path).exists()
    assert workspace.staged is not None and f"silver.{source_identifier(contract)}" in workspace.staged.missing
    view = f"staging.{model_name(contract)}"
    assert workspace.query(f"select count(*) from {view}") == [(0,)]
    assert [row[0] for row in workspace.query(f"describe {view}")] == contract.silver_schema().names


def test_duplicate_primary_key_in_silver_fails_the_uniqueness_tests(
    workspace: DbtWorkspace, full_build: DbtRun
) -> None:
    contracts = batch_contracts()
    household = contracts["gongan.household_registration"]
    tickets = contracts["zhihui.ticket_outcomes"]
    # Row 0 again: same key, as a broken silver MERGE would leave it.
    write_silver(workspace.warehouse, household, silver_rows(household, range(1)), mode="append")
    write_silver(workspace.warehouse, tickets, silver_rows(tickets, range(1)), mode="append")
    run = workspace.invoke("build", "--select", model_name(household), model_name(tickets))
    assert not run.success
    assert run.statuses["unique_stg_gongan__household_registration_id_number_key"] == "fail"
    composite = [name for name in run.statuses if name.startswith("unique_key_stg_zhihui__ticket_outcomes")]
    assert [run.statuses[name] for name in composite] == ["fail"]
    assert run.statuses["not_null_stg_gongan__household_registration_id_number_key"] == "pass"


# --- the Dagster wiring -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dagster_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("dagster_dbt")
    contract = batch_contracts()["zhihui.ticket_outcomes"]
    write_silver(root / "warehouse", contract, silver_rows(contract, range(ROWS_PER_TABLE)))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("YIWANG_WAREHOUSE", str(root / "warehouse"))
        patch.setenv("YIWANG_DUCKDB", str(root / "yiwang.duckdb"))
        yield root


def test_dagster_definitions_map_sources_to_silver_assets(dagster_warehouse: Path) -> None:
    from dagster import AssetKey

    from orchestration.dbt_assets import build_dbt_definitions

    assets, resources = build_dbt_definitions()
    assert set(resources) == {"dbt"}
    by_name = {a.node_def.name: a for a in assets}
    before, after, last = by_name["yiwang_dbt"], by_name["yiwang_dbt_after_gold"], by_name["yiwang_dbt_after_tickets"]
    contracts_by_id = batch_contracts()
    contracts = contracts_by_id.values()
    staging = {AssetKey(["staging", model_name(c)]) for c in contracts}
    assert staging <= set(before.keys)
    assert set(before.dependency_keys) >= {AssetKey(["silver", c.department, c.dataset]) for c in contracts}
    # grouped by business domain (orchestration/asset_layout.py), the layer a tag; seeds are reference data
    assert {"party", "enterprises", "emergency", "dispatch", "reference"} <= set(before.group_names_by_key.values())
    assert {"staging", "intermediate", "marts", "reference"} <= {spec.tags["layer"] for spec in before.specs}
    members = AssetKey(["staging", model_name(contracts_by_id["zuzhibu.party_members"])])
    assert before.group_names_by_key[members] == "party"
    # models over the gold tables built in Python run after those assets: the tickets' marts last, because the
    # tickets are derived from warnings that read an emergency mart over the urban events
    assert AssetKey(["marts", "dispatch_kpis_by_area"]) in last.keys
    assert AssetKey(["marts", "dispatch_kpis_by_area"]) not in before.keys | after.keys
    assert AssetKey(["marts", "emergency_waterlogging_risk"]) in after.keys
    assert AssetKey(["gold", "urban", "events"]) in after.dependency_keys
    assert AssetKey(["gold", "dispatch", "tickets"]) in last.dependency_keys
    checked = {check.asset_key for check in before.check_keys}
    assert staging <= checked  # every staging model has dbt tests as asset checks
    exports = {key for a in assets for key in a.keys if key.path[0] == "gold"}
    assert {AssetKey(["gold", "dispatch", "kpis_by_area"]), AssetKey(["gold", "party", "org_tree"])} <= exports


def test_one_manifest_serves_every_warehouse(dagster_warehouse: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No warehouse path is parsed into the manifest: another warehouse needs no new parse."""
    from orchestration.dbt_assets import dbt_project, ensure_manifest, manifest_is_current

    project = dbt_project()
    path = ensure_manifest(project)
    parsed_at = path.stat().st_mtime_ns
    assert manifest_is_current(project)
    assert str(dagster_warehouse) not in path.read_text(encoding="utf-8")
    monkeypatch.setenv("YIWANG_WAREHOUSE", "/some/other/warehouse")
    assert ensure_manifest(project) == path and path.stat().st_mtime_ns == parsed_at


def test_dagster_materialises_a_staging_model_and_its_checks(dagster_warehouse: Path) -> None:
    from dagster import AssetKey, materialize

    from orchestration.dbt_assets import PARTIAL_PARSE_FILE, build_dbt_definitions, dbt_project

    assets, resources = build_dbt_definitions()
    key = AssetKey(["staging", "stg_zhihui__ticket_outcomes"])
    seed = AssetKey(["reference", "departments"])
    started = time.time() - 1
    result = materialize(assets, resources=resources, selection=[key, seed])
    assert result.success
    events = {e.asset_key: e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert set(events) == {key, seed}
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks)
    # the UI's row count (tables: a view's would cost its query), read after dbt released the file; the column
    # schema is the model's declared columns, on its definition
    from thematic_libs.reference import load_departments

    assert events[seed]["dagster/row_count"].value == load_departments().num_rows > 0
    assert "dagster/row_count" not in events[key]  # a view
    spec = next(spec for a in assets for spec in a.specs if spec.key == key)
    assert "ticket_id" in {c.name for c in spec.metadata["dagster/column_schema"].columns}
    # the invocation's parse (for this DuckDB path) is the one the next invocation starts from
    project = dbt_project()
    kept = project.project_dir / project.target_path / PARTIAL_PARSE_FILE
    assert kept.stat().st_mtime >= started
    # the DuckDB file reached dbt as a var (profiles.yml), not through this process's environment
    invocation = max((project.project_dir / project.target_path).glob("yiwang_dbt-*"), key=lambda p: p.stat().st_mtime)
    run_args = json.loads((invocation / "run_results.json").read_text(encoding="utf-8"))["args"]
    assert run_args["vars"] == {"duckdb_path": str(Path(os.environ["YIWANG_DUCKDB"]).resolve())}
    # ...and released again: this process opens the file read-write, as the next dbt invocation would
    with duckdb.connect(os.environ["YIWANG_DUCKDB"]) as connection:
        assert connection.sql(f"select count(*) from staging.{key.path[-1]}").fetchall() == [(ROWS_PER_TABLE,)]


def test_only_the_newest_invocation_folders_are_kept(tmp_path: Path) -> None:
    """dagster-dbt makes a target folder per step and never removes one: the op keeps the newest."""
    from dagster_dbt import DbtProject

    from orchestration.dbt_assets import prune_invocations

    (tmp_path / "dbt_project.yml").write_text("name: x\n", encoding="utf-8")
    target = tmp_path / "target"
    for index in range(5):
        folder = target / f"yiwang_dbt-{index:07d}-abcdef0"
        folder.mkdir(parents=True)
        os.utime(folder, (1_000_000 + index, 1_000_000 + index))
    (target / "manifest.json").write_text("{}", encoding="utf-8")
    (target / "compiled").mkdir()
    project = DbtProject(project_dir=tmp_path)
    prune_invocations(project, keep=2)
    assert sorted(p.name for p in target.iterdir()) == [
        "compiled",
        "manifest.json",
        "yiwang_dbt-0000003-abcdef0",
        "yiwang_dbt-0000004-abcdef0",
    ]


def test_the_platform_job_runs_each_dbt_op_as_one_step() -> None:
    """No cycle in the job's op graph: Dagster would split every dbt op into one step per depth, each a dbt
    invocation with about 5 s of fixed cost (issue 16)."""
    from orchestration.definitions import PLATFORM_JOB, build_definitions

    job = build_definitions().resolve_job_def(PLATFORM_JOB)
    dbt_ops = sorted(node.name for node in job.graph.node_defs if node.name.startswith("yiwang_dbt"))
    assert dbt_ops == ["yiwang_dbt", "yiwang_dbt_after_gold", "yiwang_dbt_after_tickets"]
