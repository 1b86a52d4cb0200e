"""Dagster wiring of the dbt project (dbt_project/): staging views over silver, later marts.

What the merge in orchestration/definitions.py needs:

    from orchestration.dbt_assets import build_dbt_definitions
    dbt_assets_list, dbt_resources = build_dbt_definitions()   # ([AssetsDefinition], {"dbt": DbtCliResource})

- Every dbt source maps to the silver asset `["silver", department, dataset]`, so staging models hang
  below the silver assets in the asset graph. Models keep dagster-dbt's default key, `[schema, model]`,
  e.g. `["staging", "stg_gongan__household_registration"]`, and are grouped by their folder under
  models/ (`staging`, later `intermediate`, `marts`).
- dbt tests become asset checks of the model they test (dagster-dbt's default).
- dbt sources name the Delta table they stand for relative to the warehouse root; before each invocation the
  op stages them in the DuckDB file as views over the tables' files (orchestration/dbt_sources.py), so the
  manifest holds no warehouse path and one parse serves every warehouse. `ensure_manifest()` re-parses only
  when the project changed, because `DbtProject.prepare_if_dev()` only parses under `dagster dev`.
- A silver table that does not exist yet is staged as an empty view, so a partial landing zone builds; the
  op logs which are missing.

Environment: YIWANG_WAREHOUSE (default `<repo>/.yiwang/warehouse`), YIWANG_DUCKDB (default
`<repo>/.yiwang/yiwang.duckdb`). dbt gets the DuckDB file, made absolute, as a var (`--vars`, `dbt_vars()`):
nothing changes the environment of this process, and the dbt resource is dagster-dbt's plain `DbtCliResource`.
"""

# No `from __future__ import annotations`: Dagster inspects the real type of the op's `context` parameter.
import json
import os
import shutil
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetsDefinition,
    MaterializeResult,
    Output,
    asset,
)
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets
from filelock import FileLock

from ingestion.replace import replace_table
from ingestion.settings import warehouse_root
from ingestion.warehouse import Warehouse
from orchestration.asset_layout import REFERENCE_GROUP, dbt_domain, layer_tags
from orchestration.dbt_sources import stage_sources
from thematic_libs.sharing.asset_metadata import dataset_metadata, dataset_owners, dataset_tags, gold_dataset
from thematic_libs.sharing.datasets import Dataset

REPO_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"
DEFAULT_DUCKDB = REPO_ROOT / ".yiwang" / "yiwang.duckdb"
DBT_RESOURCE_KEY = "dbt"
DUCKDB_PATH_VAR = "duckdb_path"  # the dbt var profiles.yml reads the DuckDB file from

PARTIAL_PARSE_FILE = "partial_parse.msgpack"
# dbt's file log (dbt.log in each invocation's target folder): at dbt's default, debug, 9.4 MB per invocation at
# scale 10 and about 1.7 s of the main build; the events themselves reach Dagster's log from dbt's stdout.
DBT_FILE_LOG_LEVEL = "info"
KEPT_INVOCATIONS = 60  # target/ folders of past invocations (bench/thematic.py reads the last run's)

# Files whose change makes a parsed manifest stale (the generated staging files are among them).
_PROJECT_INPUTS = ("dbt_project.yml", "profiles.yml", "models", "macros", "tests", "seeds", "snapshots")


def dbt_project() -> DbtProject:
    """The dbt project, its profiles.yml inside it (jaffle_shop style)."""
    return DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)


def duckdb_path() -> Path:
    """The DuckDB file that dbt builds; its folder is created so that DuckDB can create the file."""
    path = Path(os.environ.get("YIWANG_DUCKDB") or DEFAULT_DUCKDB).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def dbt_vars(path: Path | None = None) -> list[str]:
    """The `--vars` of every dbt command: the DuckDB file (profiles.yml reads `var('duckdb_path')`), absolute
    because dbt runs in dbt_project/. The warehouse is no var: the sources are staged views (dbt_sources.py)."""
    return ["--vars", json.dumps({DUCKDB_PATH_VAR: str(path or duckdb_path())})]


def dbt_resource(project: DbtProject | None = None) -> DbtCliResource:
    # The dbt beside this Python: a virtual environment that is not activated is not on PATH.
    return DbtCliResource(project_dir=project or dbt_project(), dbt_executable=_dbt_executable())


def _dbt_executable() -> str:
    beside_python = Path(sys.executable).with_name("dbt")
    return str(beside_python) if beside_python.exists() else shutil.which("dbt") or "dbt"


# --- the manifest -------------------------------------------------------------------------------


def _newest_input_mtime(project_dir: Path) -> float:
    newest = 0.0
    for name in _PROJECT_INPUTS:
        path = project_dir / name
        if path.is_file():
            newest = max(newest, path.stat().st_mtime)
        elif path.is_dir():
            for item in path.rglob("*"):
                newest = max(newest, item.stat().st_mtime)
    return newest


def manifest_is_current(project: DbtProject) -> bool:
    """True when manifest.json exists and is newer than the project files."""
    path = project.manifest_path
    return path.exists() and path.stat().st_mtime >= _newest_input_mtime(project.project_dir)


def ensure_manifest(project: DbtProject | None = None) -> Path:
    """A current manifest.json: `dbt parse` only when it is missing or older than the project files.

    dagster-dbt's own preparer parses only under `dagster dev` (`DbtProject.prepare_if_dev`); every `yiwang`
    command and test loads the definitions in a fresh process, where a parse costs 3-6 s and this check a few
    milliseconds. The file lock serialises the parse: `dagster dev` loads the definitions in several processes.
    """
    project = project or dbt_project()
    if manifest_is_current(project):
        return project.manifest_path
    lock = project.project_dir / project.target_path / ".parse.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock):
        if not manifest_is_current(project):
            dbt_resource(project).cli(["parse", "--quiet", *dbt_vars()], target_path=project.target_path).wait()
    return project.manifest_path


# --- assets -------------------------------------------------------------------------------------


class YiwangDbtTranslator(DagsterDbtTranslator):
    """Sources are the silver assets; models are grouped by their business domain (their folder, or for a
    staging model the domain of the table it reads: orchestration/asset_layout.py), the layer a `layer` tag;
    seeds are the `reference` group. `manifest` gives the sources' declared keys to the staging models."""

    def __init__(self, manifest: Mapping[str, Any] | None = None, settings: Any = None) -> None:
        super().__init__(settings)
        self._sources = dict((manifest or {}).get("sources") or {})

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            declared = (dbt_resource_props.get("meta") or {}).get("asset_key")
            if declared:  # gold tables built in Python declare their Dagster asset key
                return AssetKey(list(declared))
            return AssetKey(["silver", dbt_resource_props["source_name"], dbt_resource_props["name"]])
        return super().get_asset_key(dbt_resource_props)

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return dbt_domain(dbt_resource_props, self._sources) or super().get_group_name(dbt_resource_props)

    # A mart published as a gold product carries the product's sharing facts (products.yaml), as the
    # catalog shows them: owner, sharing type, cadence, columns with their classification.

    def get_metadata(self, dbt_resource_props: Mapping[str, Any]) -> Mapping[str, Any]:
        metadata = dict(super().get_metadata(dbt_resource_props))
        product = gold_product(dbt_resource_props)
        return {**metadata, **dataset_metadata(product)} if product else metadata

    def get_owners(self, dbt_resource_props: Mapping[str, Any]) -> Sequence[str] | None:
        product = gold_product(dbt_resource_props)
        return dataset_owners(product) if product else super().get_owners(dbt_resource_props)

    def get_tags(self, dbt_resource_props: Mapping[str, Any]) -> Mapping[str, str]:
        product = gold_product(dbt_resource_props)
        tags = {**super().get_tags(dbt_resource_props), **layer_tags(dbt_layer(dbt_resource_props))}
        return {**tags, **dataset_tags(product)} if product else tags


def dbt_layer(node: Mapping[str, Any]) -> str:
    """`staging`, `intermediate`, `marts` (a model's folder under models/) or `reference` (a seed)."""
    fqn = node.get("fqn") or []
    if node.get("resource_type") == "model" and len(fqn) > 2:
        return fqn[1]
    return REFERENCE_GROUP if node.get("resource_type") == "seed" else str(node.get("resource_type"))


def node_gold_table(node: Mapping[str, Any]) -> str | None:
    """The `gold_table` a model's meta names (e.g. `party/org_tree`), or None."""
    if node.get("resource_type") != "model":
        return None
    return (node.get("meta") or {}).get("gold_table") or (node.get("config", {}).get("meta") or {}).get("gold_table")


def gold_product(node: Mapping[str, Any]) -> Dataset | None:
    """The products.yaml entry of the gold table a model is published as."""
    gold = node_gold_table(node)
    return gold_dataset(f"gold/{gold}", warehouse_root()) if gold else None


# Models downstream of the gold tables built in Python run after those assets, in two more invocations: one op
# cannot run both before and after another asset. The dispatch marts read the tickets, which are derived from
# (among others) the waterlogging warnings, which read an emergency mart over the urban events; so the models
# over the other gold tables run first, the ones over the tickets last. Three explicit ops keep the job's op
# graph free of cycles; with a cycle anywhere Dagster splits every dbt op into one step per depth in the graph
# (five dbt invocations at about 5 s each of fixed cost instead of three).
AFTER_GOLD_SELECTION = "source:gold+"
AFTER_TICKETS_SELECTION = "source:gold.dispatch_tickets+"


def make_dbt_assets(
    manifest_path: Path,
    project: DbtProject | None = None,
    name: str = "yiwang_dbt",
    select: str = "fqn:*",
    exclude: str | None = None,
) -> AssetsDefinition:
    """The @dbt_assets over the selected models of the manifest; `dbt build` runs models and their tests."""
    project = project or dbt_project()
    manifest = json.loads(Path(manifest_path).read_text(encoding="utf-8"))

    @dbt_assets(
        manifest=manifest,
        project=project,
        dagster_dbt_translator=YiwangDbtTranslator(manifest),
        name=name,
        select=select,
        exclude=exclude,
    )
    def _dbt_models(context: AssetExecutionContext, dbt: DbtCliResource) -> Iterator[Any]:
        staged = stage_sources(manifest, duckdb_path(), Warehouse.at(warehouse_root()))
        context.log.info(f"sources staged: {len(staged.views)} views over Delta files, {len(staged.copies)} copies")
        if staged.missing:
            context.log.warning(f"tables not there yet, staged as empty: {', '.join(staged.missing)}")
        # A failing dbt test is a failed asset check (bad data), not a failed run: only a model, seed or snapshot
        # that cannot be built fails the step.
        # `buildable`: a test runs in the step that builds the last of its parents. dbt's default (eager) also
        # ran a seed's relationship tests in the seeds' own step, before the marts they test existed: false
        # "errors" on every first run.
        invocation = dbt.cli(
            ["build", "--indirect-selection", "buildable", "--log-level-file", DBT_FILE_LOG_LEVEL, *dbt_vars()],
            context=context,
            raise_on_error=False,
        )
        # Column schemas come from the manifest's declared columns (the asset's definition metadata): reading them
        # from the database as well (`fetch_column_metadata`) cost about 2 s per invocation at scale 10.
        yield from with_row_counts(invocation.stream(), invocation.manifest, duckdb_path())
        release_adapter(invocation)
        keep_partial_parse(invocation.target_path, project)
        prune_invocations(project)
        broken = build_errors(invocation.get_artifact("run_results.json"))
        if broken:
            raise RuntimeError("dbt could not build: " + "; ".join(broken))

    return _dbt_models


def with_row_counts(events: Iterator[Any], manifest: Mapping[str, Any], database: Path) -> Iterator[Any]:
    """dbt's events in dbt's order, each table's materialisation (models and seeds not built as views) with its
    `dagster/row_count`, counted in one read-only DuckDB connection once dbt has ended (it holds the file's
    write lock until then, so every event waits for the end of the step, as dagster-dbt's would).

    Why not dagster-dbt's `stream().fetch_row_counts()`: its `dagster._core.utils.imap` polls its futures without
    ever waiting while the dbt process runs (dagster 1.13.27), which kept one of the two cores busy for the whole
    dbt step: 15.7 M `Future.done` calls in one run at scale 10 (bench/RESULTS.md, issue 16)."""
    collected = [(event, _unique_id(event)) for event in events]
    relations: dict[str, str] = {}
    for _, unique_id in collected:
        node = manifest["nodes"].get(unique_id) if unique_id else None
        if node and node["config"].get("materialized") not in ("view", "ephemeral"):
            relations[unique_id] = f'"{node["schema"]}"."{node.get("alias") or node["name"]}"'
    counts = _count_rows(database, relations)
    for event, unique_id in collected:
        count = counts.get(unique_id) if unique_id else None
        yield event if count is None else event.with_metadata({**event.metadata, "dagster/row_count": count})


def _unique_id(event: Any) -> str | None:
    """The dbt node of a materialisation event (Output or AssetMaterialization), else None."""
    if not isinstance(event, (Output, AssetMaterialization)):
        return None
    value = event.metadata.get("unique_id")
    return getattr(value, "text", value)


def _count_rows(database: Path, relations: Mapping[str, str]) -> dict[str, int]:
    if not relations or not Path(database).is_file():
        return {}
    counts: dict[str, int] = {}
    with duckdb.connect(str(database), read_only=True) as connection:
        for unique_id, relation in relations.items():
            try:
                row = connection.execute(f"select count(*) from {relation}").fetchone()
            except duckdb.Error:
                continue  # a relation dbt did not build after all: no count, as dagster-dbt would leave it
            if row is not None:
                counts[unique_id] = int(row[0])
    return counts


def keep_partial_parse(invocation_target: Path, project: DbtProject) -> None:
    """Make this invocation's parse the one the next invocation starts from.

    dbt re-parses the whole project when the profile differs from the one its `partial_parse.msgpack` was written
    with, and the profile's DuckDB path is part of that (dbt hashes the connection's values): a run on another home
    re-parsed in every one of its invocations, about 3 s each at scale 10 on 2 cores. dagster-dbt copies
    `target/partial_parse.msgpack` into each invocation's own target folder; putting the first invocation's fresh
    file back there lets the run's other invocations, and the next run on the same home, parse only what changed.
    """
    fresh = invocation_target / PARTIAL_PARSE_FILE
    if not fresh.is_file():
        return
    kept = project.project_dir / project.target_path / PARTIAL_PARSE_FILE
    staging = kept.with_name(f".{PARTIAL_PARSE_FILE}.{os.getpid()}")
    shutil.copyfile(fresh, staging)
    os.replace(staging, kept)  # atomic: a parallel run reads the old file or this one, never half of it


def prune_invocations(project: DbtProject, keep: int = KEPT_INVOCATIONS) -> None:
    """Delete all but the newest `keep` invocation folders under target/ (dagster-dbt makes one per step and
    never removes them: 512 folders and 4.8 GB here before this)."""
    target = project.project_dir / project.target_path
    folders = [p for p in target.iterdir() if p.is_dir() and p.name.startswith("yiwang_dbt")]
    folders.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    for folder in folders[keep:]:
        shutil.rmtree(folder, ignore_errors=True)


def release_adapter(invocation: Any) -> None:
    """Close the DuckDB file that dbt's adapter opened in this process to read row counts and columns: the
    gold exports open it read-only and the next dbt invocation for writing, and DuckDB lets a file be open
    with one configuration at a time."""
    adapter = getattr(invocation, "adapter", None)
    if adapter is None:
        return
    adapter.cleanup_connections()
    close_all = getattr(type(adapter).ConnectionManager, "close_all_connections", None)
    if close_all is not None:  # dbt-duckdb keeps its database open in a class-level environment
        close_all()


def build_errors(run_results: Mapping[str, Any]) -> list[str]:
    """`unique_id: message` of every model, seed or snapshot that errored or was skipped for an error."""
    return [
        f"{result['unique_id']}: {(result.get('message') or '').strip()[:300]}"
        for result in run_results.get("results", [])
        if result["unique_id"].split(".")[0] in ("model", "seed", "snapshot")
        and result.get("status") in ("error", "runtime error")
    ]


def gold_tables(manifest: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """`gold path -> model node` for every model whose meta names a `gold_table` (e.g. party/org_tree)."""
    found = {}
    for node in manifest.get("nodes", {}).values():
        gold = node_gold_table(node)
        if gold:
            found[f"gold/{gold}"] = node
    return dict(sorted(found.items()))


GOLD_FLOAT_DECIMALS = 6


def rounded_floats(rows: pa.Table, decimals: int = GOLD_FLOAT_DECIMALS) -> pa.Table:
    """Every floating-point column rounded to `decimals` places (shares and rates mean nothing below 1e-6;
    amounts are already rounded to the fen in the marts). DuckDB sums in parallel in whatever order its
    threads finish, so an unrounded mean can end in ...0000000001 on one run and not the next: rounded,
    two clean runs publish the same values."""
    for index, field in enumerate(rows.schema):
        if pa.types.is_floating(field.type):
            # polars, not pyarrow.compute.round: Arrow's round(81.67999999999999, 6) stays 81.67999999999999.
            rounded = pl.Series(rows.column(index)).round(decimals).to_arrow().cast(field.type)
            rows = rows.set_column(index, field, rounded)
    return rows


def make_gold_export(table: str, node: Mapping[str, Any]) -> AssetsDefinition:
    """An asset copying one dbt mart from the DuckDB file to the Delta table `table` (overwrite)."""
    relation = f'"{node["schema"]}"."{node.get("alias") or node["name"]}"'
    model_key = YiwangDbtTranslator().get_asset_key(node)
    product = gold_product(node)

    @asset(
        key=AssetKey(table.split("/")),
        deps=[model_key],
        group_name="gold",
        description=f"{table}: the dbt model {node['name']} published as a Delta table. {node.get('description', '')}",
        kinds={"delta"},
        metadata=dataset_metadata(product) if product else None,
        owners=dataset_owners(product) if product else None,
        tags=dataset_tags(product) if product else None,
    )
    def _export() -> MaterializeResult:
        warehouse = Warehouse.at(warehouse_root())
        with duckdb.connect(str(duckdb_path()), read_only=True) as connection:
            rows = rounded_floats(connection.sql(f"select * from {relation}").to_arrow_table())
        written = replace_table(warehouse, table, rows)
        return MaterializeResult(
            metadata={"rows": rows.num_rows, "source_model": node["unique_id"], "new_version": written}
        )

    return _export


def build_dbt_definitions() -> tuple[list[AssetsDefinition], dict[str, DbtCliResource]]:
    """The dbt assets (two invocations, around the gold Python assets), the gold exports of the marts,
    and the resources they need, for orchestration/definitions.py to merge.

    Parses the dbt project first when its manifest is missing or was parsed for another warehouse.
    """
    project = dbt_project()
    manifest_path = ensure_manifest(project)
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    assets = [
        make_dbt_assets(manifest_path, project, "yiwang_dbt", exclude=AFTER_GOLD_SELECTION),
        make_dbt_assets(
            manifest_path,
            project,
            "yiwang_dbt_after_gold",
            select=AFTER_GOLD_SELECTION,
            exclude=AFTER_TICKETS_SELECTION,
        ),
        make_dbt_assets(manifest_path, project, "yiwang_dbt_after_tickets", select=AFTER_TICKETS_SELECTION),
        *(make_gold_export(table, node) for table, node in gold_tables(manifest).items()),
    ]
    return assets, {DBT_RESOURCE_KEY: dbt_resource(project)}
