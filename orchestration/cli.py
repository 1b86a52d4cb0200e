"""The `yiwang` command line: demo data, the platform's main job, and what a data officer looks at."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import typer
from rich.console import Console
from rich.table import Table

from orchestration.catalog_cli import catalog_app
from orchestration.cli_output import (
    OneLineErrors,
    check_choice,
    cst_text,
    emit_rows,
    existing_warehouse,
    parse_date,
    set_debug,
)
from orchestration.cli_output import fail as _fail
from orchestration.docs_cli import docs
from orchestration.ml_cli import ml_app
from orchestration.run_report import root_cause  # noqa: F401 - re-exported: the run's one-line step errors
from orchestration.share_cli import share_app
from orchestration.stream_cli import broker_app, simulate_app, stream_app
from orchestration.superset_cli import superset_app

app = typer.Typer(
    help="yiwang: the 一网统管 · 一网共享 lakehouse.", no_args_is_help=True, add_completion=False, cls=OneLineErrors
)
app.add_typer(broker_app, name="broker")
app.add_typer(simulate_app, name="simulate")
app.add_typer(stream_app, name="stream")
app.add_typer(catalog_app, name="catalog")
app.add_typer(share_app, name="share")
app.add_typer(ml_app, name="ml")
app.command("docs")(docs)
app.add_typer(superset_app, name="superset")
console = Console()

DEFAULT_DEMO_SCALE = 1.0


@app.callback()
def _global_options(
    debug: bool = typer.Option(False, "--debug", hidden=True, help="Show the traceback of an unexpected error."),
) -> None:
    set_debug(debug)


def _check_demo_options(
    scale: float, defect_rate: float = 0.02, event_multiplier: float = 1.0, option: str = "--scale"
) -> None:
    from demo_data.world import MIN_RESIDENTS, MIN_SCALE

    if not scale > 0:
        raise _fail(f"{option} must be above 0 (1 = a district of 20,000 residents), not {scale:g}")
    if scale < MIN_SCALE:
        needs = f"the demo needs {MIN_RESIDENTS} residents or more"
        raise _fail(f"{option} must be at least {MIN_SCALE:g} ({needs}), not {scale:g}")
    if not 0 <= defect_rate <= 0.5:
        raise _fail(f"--defect-rate is a share of rows between 0 and 0.5, not {defect_rate:g}")
    if not event_multiplier > 0:
        raise _fail(f"--event-multiplier must be above 0 (1 = the ordinary demo), not {event_multiplier:g}")


@app.command("demo-data")
def demo_data(
    out: Path = typer.Option(..., "--out", help="Landing-zone directory to write."),
    scale: float = typer.Option(1.0, "--scale", help="1 = a small district of 20,000 residents."),
    seed: int = typer.Option(0, "--seed", help="Same seed and scale give byte-identical files."),
    defect_rate: float = typer.Option(0.02, "--defect-rate", help="Share of rows with planted defects."),
    event_multiplier: float = typer.Option(
        1.0,
        "--event-multiplier",
        help="Multiply the daily grid reports, hotline and enterprise appeals (benchmarks); 1 = the ordinary demo.",
    ),
) -> None:
    """Write a deterministic demo landing zone that follows the contracts."""
    from demo_data import generate_landing_zone

    _check_demo_options(scale, defect_rate, event_multiplier)
    summary = generate_landing_zone(
        out, scale=scale, seed=seed, defect_rate=defect_rate, event_multiplier=event_multiplier
    )
    console.print(
        f"[green]wrote[/] {summary.batches} batches, {summary.rows:,} rows, {summary.residents:,} residents "
        f"to {out} (as of {summary.as_of})"
    )


def _landing_is_empty(landing: Path) -> bool:
    return not any(p for level in ("province", "city", "district") for p in (landing / level).glob("*/*/*"))


@app.command("run")
def run(
    landing: Path | None = typer.Option(None, "--landing", help="Landing zone (default: the embedded demo)."),
    warehouse: str | None = typer.Option(None, "--warehouse", help="Warehouse root: a folder or s3://bucket/prefix."),
    as_of: str | None = typer.Option(None, "--as-of", help="YYYY-MM-DD: only batches extracted by then count."),
    reject_share: float | None = typer.Option(None, "--reject-share", help="Reject a batch above this bad share."),
    demo_scale: float = typer.Option(DEFAULT_DEMO_SCALE, "--demo-scale", help="Scale of generated demo data."),
    full: bool = typer.Option(False, "--full", help="Rebuild everything, even what nothing new touches."),
) -> None:
    """Materialise what new batches and changes need (everything the first time) and print what happened."""
    from ingestion.settings import Settings

    if reject_share is not None and not 0 <= reject_share <= 1:
        raise _fail(f"--reject-share is a share of a batch's rows between 0 and 1 (e.g. 0.05), not {reject_share:g}")
    _check_demo_options(demo_scale, option="--demo-scale")
    settings = Settings.from_env().with_overrides(
        landing=landing.resolve() if landing else None,
        warehouse=warehouse,
        as_of=parse_date(as_of, "--as-of"),
        reject_share=reject_share,
    )
    if landing is None and _landing_is_empty(settings.landing):
        settings = _demo_stage(settings, demo_scale)
    if not settings.landing.is_dir():
        raise _fail(
            f"landing zone {settings.landing} does not exist: give --landing DIR (or leave it out for the demo)"
        )
    from orchestration.run_lock import LOCKED, RunLockHeld, run_lock

    try:
        with run_lock(settings.warehouse):
            started = datetime.now(UTC)
            clock = time.perf_counter()
            plan = _plan(settings, full)
            if plan.kind == "nothing_new":
                console.print(f"[green]nothing new[/]: {plan.reason}; checked in {time.perf_counter() - clock:.1f} s")
                return
            console.print(f"[bold]{plan.kind} run[/]: {plan.reason}")
            report = _execute(settings, plan)
            _print_summary(settings, report, started, time.perf_counter() - clock)
    except RunLockHeld as held:
        raise _fail(str(held), LOCKED) from None
    if not report.success:
        from orchestration.run_report import short_path

        console.print(
            f"[red]The platform run failed: {len(report.failed_steps)} step(s) raised (named above; their "
            f"tracebacks are in {short_path(report.log_path)}). Bad data alone never does this.[/]"
        )
        raise typer.Exit(1)


def _demo_stage(settings, scale: float):
    """The first stage of a run on the embedded default: a demo landing zone, in one line."""
    from demo_data import generate_landing_zone

    clock = time.perf_counter()
    with console.status(f"generating demo data in {settings.landing}…"):
        summary = generate_landing_zone(settings.landing, scale=scale, progress=False)
    from orchestration.run_report import short_path

    console.print(
        f"[green]✓[/] demo data in {short_path(settings.landing)}: {summary.batches} batches, {summary.rows:,} rows "
        f"as of {summary.as_of} ({time.perf_counter() - clock:.0f} s)",
        highlight=False,
    )
    return settings.with_overrides(as_of=summary.as_of) if settings.as_of is None else settings


def _run_settings(settings) -> str:
    from orchestration.incremental import settings_text

    return settings_text(settings.as_of, settings.reject_share, settings.landing)


def _plan(settings, full: bool):
    """What this run must do (orchestration/incremental.py); `--full` rebuilds everything."""
    from ingestion.pipeline import pending_batches
    from ingestion.warehouse import Warehouse
    from orchestration.incremental import RunPlan, plan_run

    warehouse = Warehouse.at(settings.warehouse)
    if full:
        return RunPlan("full", "--full", tuple(pending_batches(settings.landing, warehouse)))
    return plan_run(settings.landing, warehouse, _run_settings(settings), settings.duckdb_path, settings.as_of)


def _execute(settings, plan):
    """Run the platform job in process, whole or the plan's selection, a line per stage on the terminal and
    everything the libraries print in the run's log file: the `RunReport` (orchestration/run_report.py)."""
    from dagster import DagsterInstance

    from ingestion.warehouse import Warehouse
    from orchestration.definitions import PLATFORM_JOB, build_definitions
    from orchestration.incremental import incremental_keys, record_state
    from orchestration.run_report import captured_output, execute, run_log_path

    log_path = run_log_path(settings.home)
    with captured_output(log_path) as terminal:
        with terminal.status("loading the platform's definitions…"):
            defs = build_definitions(settings)
            job = defs.resolve_job_def(PLATFORM_JOB)
        selection = None
        if plan.kind == "incremental":
            selection = incremental_keys(plan, defs)
            terminal.print(f"rebuilding {len(selection)} asset(s) downstream of {', '.join(plan.contracts)}")
        instance = DagsterInstance.get() if _prepared_dagster_home() else DagsterInstance.ephemeral()
        report = execute(job, instance, terminal, asset_selection=selection, log_path=log_path)
    _record_run(settings, report.run_id, report.success, report.skipped, report.failed_steps)
    if report.success:
        record_state(Warehouse.at(settings.warehouse), report.run_id, _run_settings(settings), settings.duckdb_path)
    return report


def _record_run(settings, run_id: str, success: bool, skipped: dict[str, str], failed: dict[str, str]) -> None:
    """One row per `yiwang run` in `ops/runs`: when, how it ended, what was skipped and why, what failed."""
    import json

    import pyarrow as pa
    from deltalake import write_deltalake

    from ingestion.warehouse import Warehouse

    warehouse = Warehouse.at(settings.warehouse)
    row = pa.table(
        {
            "run_id": [run_id],
            "finished_at": [datetime.now(UTC)],
            "status": ["succeeded" if success else "failed"],
            "skipped": [json.dumps(skipped, ensure_ascii=False)],
            "failed_steps": [json.dumps(failed, ensure_ascii=False)],
            "as_of": [settings.as_of.isoformat() if settings.as_of else None],
        },
        schema=pa.schema(
            [
                ("run_id", pa.string()),
                ("finished_at", pa.timestamp("us", tz="UTC")),
                ("status", pa.string()),
                ("skipped", pa.string()),
                ("failed_steps", pa.string()),
                ("as_of", pa.string()),
            ]
        ),
    )
    write_deltalake(warehouse.uri("ops/runs"), row, mode="append", storage_options=warehouse.options())


def _has_dagster_home() -> bool:
    import os

    return bool(os.environ.get("DAGSTER_HOME"))


def _prepared_dagster_home() -> bool:
    """True when DAGSTER_HOME is set; it then gets the instance settings (telemetry off) from
    orchestration/dagster.yaml if it has none, as `make dagster` gives them, so both see one instance."""
    import os
    import shutil

    if not _has_dagster_home():
        return False
    home = Path(os.environ["DAGSTER_HOME"]).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copyfile(Path(__file__).with_name("dagster.yaml"), home / "dagster.yaml")
    return True


def _gold_tables(warehouse) -> dict[str, int]:
    """Row counts of every gold Delta table, by path (from the Delta log's file statistics)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    counts = {}
    if not warehouse.is_local:
        return counts
    for log in sorted(Path(warehouse.root, "gold").glob("*/*/_delta_log")):
        actions = pa.table(DeltaTable(str(log.parent)).get_add_actions(flatten=True))
        counts[log.parent.relative_to(warehouse.root).as_posix()] = int(pc.sum(actions["num_records"]).as_py() or 0)
    return counts


def _print_products(warehouse) -> None:
    """What the libraries, the dispatch table and the cross-check hold after the run, a line or two each."""
    counts = _gold_tables(warehouse)
    if not counts:
        return
    libraries: dict[str, list[int]] = {}
    for name, rows in counts.items():
        library = name.split("/")[1]
        libraries.setdefault(library, []).append(rows)
    parts = [
        f"{library} {len(rows)}{' (restricted)' if library == 'social_assistance' else ''}"
        for library, rows in libraries.items()
    ]
    console.print(
        f"[bold]Thematic libraries, tickets and cross-check (gold)[/]: {len(counts)} tables, "
        f"{sum(counts.values()):,} rows: " + ", ".join(parts),
        highlight=False,
    )
    if warehouse.exists("gold/dispatch/tickets"):
        tickets = pl.from_arrow(warehouse.table("gold/dispatch/tickets").to_pyarrow_table(columns=["status", "source"]))
        by_source = ", ".join(f"{s} {n:,}" for s, n in tickets.group_by("source").len().sort("source").iter_rows())
        open_count = tickets.filter(~pl.col("status").is_in(["resolved", "closed"])).height
        console.print(
            f"dispatch table: {tickets.height:,} tickets ({by_source}); {open_count:,} open "
            "· yiwang tickets changes --since-version N",
            highlight=False,
        )
    if warehouse.exists("ops/triage") and warehouse.exists("gold/urban/events"):
        events = pl.from_arrow(
            warehouse.table("gold/urban/events").to_pyarrow_table(
                columns=["source", "classified_by", "classifier_version"]
            )
        )
        appeals = events.filter(pl.col("source") == "hotline")
        triaged = warehouse.table("ops/triage").to_pyarrow_table(columns=["event_id"]).num_rows
        version = next(iter(events.get_column("classifier_version").drop_nulls().unique().to_list()), "none")
        console.print(
            f"appeal classifier {version}: {appeals.filter(pl.col('classified_by') == 'model').height:,} of "
            f"{appeals.height:,} hotline appeals classified; {triaged:,} sent to triage · yiwang triage",
            highlight=False,
        )


def _print_summary(settings, report, started: datetime, seconds: float) -> None:
    """The run's summary: fits one screen; every failed check and warning named, with where to look."""
    from ingestion.ledger import read_ledger, read_quarantine
    from ingestion.pipeline import pending_batches
    from ingestion.warehouse import Warehouse
    from orchestration.run_report import print_checks_and_warnings, print_failures, short_path

    warehouse = Warehouse.at(settings.warehouse)
    ledger = read_ledger(warehouse)
    this_run = ledger.filter(pl.col("processed_at") >= started)
    loaded = this_run.filter(pl.col("status") == "loaded")
    rejected = this_run.filter(pl.col("status") == "rejected")
    waiting = [b for b in pending_batches(settings.landing, warehouse) if not b.is_complete]
    quarantine = read_quarantine(warehouse).filter(pl.col("quarantined_at") >= started)

    console.rule("[bold]yiwang run summary")
    verdict = "[green]the platform ran[/]" if report.success else "[red]the platform FAILED[/]"
    console.print(
        f"{verdict} in {seconds:.0f} s, as of {settings.as_of or 'today'}; finished {cst_text(datetime.now(UTC))} CST",
        highlight=False,
    )
    console.print(
        f"batches: {loaded.height} loaded ({int(loaded['rows_loaded'].sum()):,} rows), {rejected.height} rejected, "
        f"{len(waiting)} waiting for their manifest; {int(this_run['rows_quarantined'].sum()):,} records "
        f"quarantined ({quarantine.height:,} rule violations)",
        highlight=False,
    )
    if rejected.height:
        console.print("[bold]Rejected batches[/] [dim]→ yiwang ledger --rejected (reasons in full)[/]")
        for row in rejected.sort("contract_id", "batch_id").iter_rows(named=True):
            console.print(
                f"  {row['contract_id']} {row['batch_id']} {row['rule'] or ''}: {row['reason'] or ''}",
                overflow="ellipsis",
                no_wrap=True,
                highlight=False,
            )
    if quarantine.height:
        by_rule = quarantine.group_by("rule").len().sort("len", descending=True)
        rules = ", ".join(f"{rule} {n:,}" for rule, n in by_rule.iter_rows())
        contracts = quarantine["contract_id"].n_unique()
        console.print(
            f"quarantined in {contracts} contracts, by rule: {rules} [dim]→ yiwang ledger · quarantine/rows[/]",
            highlight=False,
        )
    if waiting:
        names = ", ".join(f"{b.contract_id} {b.batch_id}" for b in waiting)
        console.print(f"[yellow]waiting[/] (no _manifest.json yet): {names}", highlight=False)
    print_failures(console, report)
    print_checks_and_warnings(console, report)
    _print_products(warehouse)
    reports = Path(settings.reports_dir)
    console.rule("[bold]where to look")
    for line in (
        f"run log: {short_path(report.log_path)} (dbt, Dagster, Splink, GX)",
        f"Data Docs: {short_path(reports / 'data_docs' / 'index.html')}",
        f"scorecard: {short_path(reports / 'quality_scorecard.png')}",
        f"warehouse: {short_path(settings.warehouse)} · yiwang ledger · quarantine/rows · ops/runs",
        f"dbt models: {short_path(settings.duckdb_path)} · docs: make docs · notebooks: make notebooks",
        "sharing: yiwang catalog list, yiwang share serve · Dagster UI: make dagster",
    ):
        console.print(line, highlight=False)


@app.command("dbt-stage")
def dbt_stage(
    warehouse: str | None = typer.Option(None, "--warehouse", help="Warehouse root (default: the settings')."),
) -> None:
    """Stage dbt's sources of a warehouse in the DuckDB file (views over the Delta files), to run dbt by hand."""
    import json

    from ingestion.settings import Settings
    from orchestration.cli_output import existing_warehouse
    from orchestration.dbt_assets import dbt_project, ensure_manifest
    from orchestration.dbt_sources import stage_sources

    settings = Settings.from_env().with_overrides(warehouse=warehouse)
    store = existing_warehouse(settings.warehouse)
    settings.export()
    manifest = json.loads(ensure_manifest(dbt_project()).read_text(encoding="utf-8"))
    staged = stage_sources(manifest, settings.duckdb_path, store)
    console.print(
        f"staged {len(staged.views)} views over Delta files, {len(staged.copies)} copies, "
        f"{len(staged.missing)} empty (no table yet) in {settings.duckdb_path}"
    )


LEDGER_FORMATS = ("table", "json", "csv")
LEDGER_COLUMNS = (
    "contract_id",
    "batch_id",
    "status",
    "rows_delivered",
    "rows_loaded",
    "rows_quarantined",
    "rule",
    "reason",
    "extracted_at",
    "processed_at",
)


@app.command("ledger")
def ledger(
    warehouse: str | None = typer.Option(None, "--warehouse"),
    rejected_only: bool = typer.Option(False, "--rejected", help="Only rejected batches."),
    contract: str | None = typer.Option(
        None, "--contract", help="Only this contract, e.g. gongan.household_registration."
    ),
    output_format: str = typer.Option("table", "--format", help="table, json or csv (times in CST)."),
) -> None:
    """The batch ledger: every batch seen, loaded or rejected, with its reason."""
    from ingestion.ledger import read_ledger
    from ingestion.settings import Settings

    check_choice("--format", output_format, LEDGER_FORMATS)
    frame = read_ledger(existing_warehouse(warehouse or Settings.from_env().warehouse))
    if rejected_only:
        frame = frame.filter(pl.col("status") == "rejected")
    if contract is not None:
        if frame.filter(pl.col("contract_id") == contract).height == 0 and contract not in _contract_ids():
            raise _fail(f"--contract {contract!r} is not a known contract: see `yiwang catalog list` for the ids")
        frame = frame.filter(pl.col("contract_id") == contract)
    frame = frame.sort("contract_id", "batch_ordinal")
    if output_format != "table":
        emit_rows(frame.select(LEDGER_COLUMNS).to_dicts(), output_format, LEDGER_COLUMNS)
        return
    _print_ledger(frame)
    if frame.height == 0:
        console.print("no batch " + ("rejected " if rejected_only else "") + "in the ledger yet")


@app.command("maintain")
def maintain(
    warehouse: str | None = typer.Option(None, "--warehouse"),
    retention_hours: int | None = typer.Option(
        None, "--retention-hours", help="Keep every file a version younger than this reads (default and minimum 168)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only list what would be deleted."),
) -> None:
    """VACUUM every Delta table: delete the files that no version younger than the retention reads."""
    from deltalake.exceptions import DeltaError

    from ingestion.settings import Settings
    from ingestion.warehouse import VACUUM_RETENTION_HOURS
    from orchestration.maintenance import require_local, vacuum_warehouse
    from orchestration.run_lock import LOCKED, RunLockHeld, run_lock

    retention_hours = VACUUM_RETENTION_HOURS if retention_hours is None else retention_hours
    if retention_hours < 0:
        raise _fail(f"--retention-hours must be 0 or more (168 = 7 days, Delta's default), not {retention_hours}")
    store = existing_warehouse(warehouse or Settings.from_env().warehouse)
    try:
        require_local(store)
    except ValueError as refused:
        raise _fail(str(refused)) from None
    from rich.progress import Progress

    try:
        with (
            run_lock(store.root),
            Progress(console=console, transient=True, disable=not console.is_terminal) as progress,
        ):
            tables = store.local_tables()
            task = progress.add_task("vacuum", total=len(tables))
            results = vacuum_warehouse(
                store, tables, retention_hours, dry_run=dry_run, on_table=lambda r: progress.advance(task)
            )
    except RunLockHeld as held:
        raise _fail(str(held), LOCKED) from None
    except DeltaError as error:
        raise _fail(
            f"VACUUM refused: {str(error).removeprefix('Generic error: ')}; keep --retention-hours at "
            "the tables' retention (168 unless delta.deletedFileRetentionDuration says otherwise)"
        ) from None
    _print_vacuumed(results, dry_run, retention_hours)


def _print_vacuumed(results, dry_run: bool, retention_hours: int) -> None:
    touched = [r for r in results if r.files]
    verb = "would delete" if dry_run else "deleted"
    for result in touched:
        console.print(f"  {result.table}: {verb} {result.files:,} file(s), {result.bytes / 2**20:,.1f} MiB")
    files, size = sum(r.files for r in touched), sum(r.bytes for r in touched)
    console.print(
        f"[bold]{len(results)} tables[/]: {verb} {files:,} file(s), {size / 2**20:,.1f} MiB "
        f"(retention {retention_hours} h)"
    )


def _contract_ids() -> set[str]:
    from ingestion.contract import load_contracts

    return set(load_contracts())


def _print_ledger(frame: pl.DataFrame) -> None:
    """One line per batch (contract, batch, status, rows loaded, rows quarantined), its reason indented and
    wrapped under it: fits 80 columns without cutting an id (the longest contract id is 33 characters)."""
    from rich.markup import escape
    from rich.padding import Padding
    from rich.text import Text

    width = max([len("contract"), *(len(c) for c in frame["contract_id"])])
    console.print(f"[bold]{'contract':<{width}} {'batch':<15} {'status':<8} {'rows':>7} {'bad':>6}[/]")
    for row in frame.iter_rows(named=True):
        status = f"{row['status']:<8}"
        status = f"[red]{status}[/]" if row["status"] == "rejected" else status
        console.print(
            f"{escape(row['contract_id']):<{width}} {row['batch_id']:<15} {status} "
            f"{row['rows_loaded'] or 0:>7,} {row['rows_quarantined'] or 0:>6,}",
            highlight=False,
        )
        if row["reason"]:
            console.print(Padding(Text(row["reason"], style="dim"), (0, 0, 0, 2)))


CROSSCHECK_ENGINES = ("duckdb", "spark")


@app.command("crosscheck")
def crosscheck(
    as_of: str = typer.Option(..., "--as-of", help="YYYY-MM-DD: only batches extracted by then count."),
    engine: str | None = typer.Option(None, "--engine", help="duckdb or spark (default: crosscheck.engine)."),
    warehouse: str | None = typer.Option(None, "--warehouse"),
) -> None:
    """Run the social-assistance cross-check as of a date and (re)write that date's restricted gold rows."""
    from ingestion.pseudonym import PseudonymKeyError
    from ingestion.settings import Settings
    from thematic_libs.config import ConfigError
    from thematic_libs.social_assistance.rules import CrosscheckError
    from thematic_libs.social_assistance.run import run_crosscheck

    day = parse_date(as_of, "--as-of")
    check_choice("--engine", engine, CROSSCHECK_ENGINES)
    settings = Settings.from_env()
    store = existing_warehouse(warehouse or settings.warehouse)
    try:
        result = run_crosscheck(store, day, engine=engine, key=_key(settings))
    except (CrosscheckError, ConfigError, PseudonymKeyError) as error:
        raise _fail(str(error).splitlines()[0], 1) from None
    table = Table("rule", "cases", title=f"cross-check as of {result.as_of} on {result.engine} ({result.seconds} s)")
    for rule, cases in result.cases_by_rule.items():
        table.add_row(rule, str(cases))
    console.print(table)
    console.print(
        f"{result.flagged_cases} flagged cases, {result.amount_at_risk_cny:,.2f} CNY a month at risk; "
        f"skipped rules: {', '.join(result.skipped_rules) or 'none'}. Restricted: gold/social_assistance/"
    )


def _key(settings):
    from ingestion.pseudonym import Pseudonymiser

    return Pseudonymiser.from_environment(default_key_file=settings.key_file)


batches_app = typer.Typer(help="Batches a data officer decides on.", no_args_is_help=True)
app.add_typer(batches_app, name="batches")


@batches_app.command("confirm")
def batches_confirm(
    contract_id: str = typer.Argument(..., help="The contract, e.g. minzheng.assistance_cases."),
    batch_id: str = typer.Argument(..., help="The held snapshot's batch id (yiwang ledger --rejected)."),
    reason: str = typer.Option(..., "--reason", help="Why the shrink is right (kept with the confirmation)."),
    by: str | None = typer.Option(None, "--by", help="Who confirms (default: the login name)."),
    warehouse: str | None = typer.Option(None, "--warehouse"),
) -> None:
    """Confirm a snapshot held for being empty or removing many rows; the next run loads it."""
    import getpass

    from ingestion.ledger import SNAPSHOT_SHRINK, read_ledger, write_confirmation
    from ingestion.settings import Settings

    store = existing_warehouse(warehouse or Settings.from_env().warehouse)
    rows = read_ledger(store).filter((pl.col("contract_id") == contract_id) & (pl.col("batch_id") == batch_id))
    if rows.height == 0:
        raise _fail(f"the ledger has no batch {contract_id} {batch_id}; see `yiwang ledger --rejected` for held ones")
    if rows.filter(pl.col("status") == "loaded").height:
        raise _fail(f"{contract_id} {batch_id} is already loaded; nothing to confirm")
    if rows.filter(pl.col("rule") == SNAPSHOT_SHRINK).height == 0:
        raise _fail(
            f"{contract_id} {batch_id} was rejected for another reason ({rows['rule'][0]}): only a held snapshot "
            "can be confirmed; fix the batch and resend it"
        )
    who = by or getpass.getuser()
    write_confirmation(store, contract_id, batch_id, who, reason)
    console.print(f"confirmed {contract_id} {batch_id} by {who}: the next `yiwang run` loads it")


@batches_app.command("rerun")
def batches_rerun(
    batches: list[str] = typer.Argument(
        ..., help="<contract_id>/<batch_id>, one or more, e.g. minzheng.assistance_cases/20261101T020000."
    ),
    landing: Path | None = typer.Option(None, "--landing", help="Landing zone (default: the settings')."),
    warehouse: str | None = typer.Option(None, "--warehouse"),
) -> None:
    """Land batches again from their files as they are now (e.g. fixed in place): the `land_batches` job, one run
    per batch, as re-materialising the batch's partition of ops/batch in the Dagster UI does."""
    from dagster import DagsterInstance, Definitions

    from ingestion.pipeline import UnknownBatch, find_batch
    from ingestion.settings import Settings
    from orchestration.batch_partitions import (
        LAND_BATCHES_JOB,
        LANDING_BATCHES,
        batch,
        batch_partition,
        land_batches,
        parse_batch_partition,
    )
    from orchestration.resources import PlatformResource
    from orchestration.run_lock import LOCKED, RunLockHeld, run_lock

    settings = Settings.from_env().with_overrides(landing=landing.resolve() if landing else None, warehouse=warehouse)
    existing_warehouse(settings.warehouse)
    keys = []
    for text in batches:
        try:
            contract_id, batch_id = parse_batch_partition(text)
            find_batch(settings.landing, contract_id, batch_id)
        except (ValueError, UnknownBatch) as error:
            raise _fail(str(error)) from None
        keys.append(batch_partition(contract_id, batch_id))
    defs = Definitions(
        assets=[batch], jobs=[land_batches], resources={"platform": PlatformResource.from_settings(settings)}
    )
    job = defs.resolve_job_def(LAND_BATCHES_JOB)
    instance = DagsterInstance.get() if _prepared_dagster_home() else DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(LANDING_BATCHES, keys)
    failed = 0
    try:
        with run_lock(settings.warehouse):  # the resource takes it again in process (re-entrant)
            for key in keys:
                failed += not _rerun_one(job, key, instance, batch.op.name)
    except RunLockHeld as held:
        raise _fail(str(held), LOCKED) from None
    if failed:
        raise typer.Exit(1)
    console.print("[dim]the next `yiwang run` rebuilds what reads these batches (dbt models, gold)[/]")


def _rerun_one(job, key: str, instance, node: str) -> bool:
    """One `land_batches` run for one batch, its outcome in a line (and its reason under it)."""
    result = job.execute_in_process(partition_key=key, instance=instance, raise_on_error=False)
    if not result.success:
        errors = [e.message for e in result.all_events if e.is_failure]
        console.print(f"[red]{key}: the run failed[/] ({errors[-1] if errors else 'see the Dagster run'})")
        return False
    [materialization] = result.asset_materializations_for_node(node)
    meta = {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
    line = f"{key}: {meta['status']}, {meta['rows_loaded']:,} rows loaded, {meta['rows_quarantined']:,} quarantined"
    if meta.get("silver_action"):
        line += f"; silver {meta['silver_action']} ({meta['silver_rows']:,} rows)"
    console.print(line, highlight=False)
    if meta.get("reason"):
        console.print(f"  [dim]{meta['reason']}[/]", highlight=False)
    return True


tickets_app = typer.Typer(help="The dispatch table gold/dispatch/tickets.", no_args_is_help=True)
app.add_typer(tickets_app, name="tickets")


TICKET_FORMATS = ("jsonl", "json", "csv", "table")


@tickets_app.command("changes")
def tickets_changes(
    since_version: int = typer.Option(
        -1, "--since-version", help="Last table version you processed; -1 (default) returns every ticket."
    ),
    warehouse: str | None = typer.Option(None, "--warehouse"),
    output_format: str = typer.Option(
        "jsonl", "--format", help="jsonl (one ticket per line), json, csv or table; times in CST (+08:00)."
    ),
) -> None:
    """New and changed tickets after table version N, the latest state of each (for the dispatch system).

    Prints one JSON object per ticket on stdout with `change_type` (new | changed) and `table_version`;
    the current table version goes to stderr as `next --since-version: V`: pass it next time.
    """
    from ingestion.settings import Settings
    from thematic_libs.dispatch.store import TICKETS, changes_since

    check_choice("--format", output_format, TICKET_FORMATS)
    if since_version < -1:
        raise _fail(
            f"--since-version {since_version}: give -1 (every ticket) or a table version that "
            "`next --since-version` printed"
        )
    store = existing_warehouse(warehouse or Settings.from_env().warehouse)
    if not store.exists(TICKETS):
        raise _fail(f"no {TICKETS} table in {store.root} yet: run `yiwang run` first (or pass --warehouse)")
    current = store.table(TICKETS).version()
    if since_version > current:
        raise _fail(
            f"--since-version {since_version} is after the table's current version {current}: pass the "
            "`next --since-version` an earlier call printed, or -1 for every ticket"
        )
    changes, version = changes_since(store, since_version)
    if output_format == "table":
        _print_tickets(changes.to_pylist())
    else:
        emit_rows(changes.to_pylist(), output_format, changes.column_names)
    Console(stderr=True).print(f"{changes.num_rows} ticket(s); next --since-version: {version}")


def _print_tickets(rows: list[dict]) -> None:
    """One line per ticket (id, change, event code, priority, status, due in CST), then its event, place and
    department indented: fits 80 columns."""
    from rich.markup import escape

    console.print(f"[bold]{'ticket':<18} {'change':<7} {'event':<6} {'pri':<3} {'status':<11} due (CST)[/]")
    for row in rows:
        console.print(
            f"{row['ticket_id']:<18} {row['change_type']:<7} {row['event_code']:<6} {row['priority'] or '':<3} "
            f"{row['status'] or '':<11} {cst_text(row['due_at'])}",
            highlight=False,
        )
        place = row["grid_code"] or row["community_code"] or row["district_code"] or ""
        console.print(
            f"  [dim]{escape(row['event_name'] or '')} · {place} · {row['department_code'] or ''}[/]", highlight=False
        )


classifier_app = typer.Typer(
    help="The appeal classifier: train, evaluate, predict, list and promote versions.", no_args_is_help=True
)
app.add_typer(classifier_app, name="classifier")


def _models_dir(models: Path | None) -> Path:
    from ingestion.settings import Settings

    return models or Settings.from_env().models_dir


def _figures_line(figures: dict) -> str:
    return (
        f"{figures['appeals']} appeals: exact item {figures['exact_item_accuracy']:.1%}, "
        f"major class {figures['major_class_accuracy']:.1%} on the decided ones; "
        f"{figures['triage_share']:.1%} sent to triage"
    )


@classifier_app.command("train")
def classifier_train(
    labels: Path | None = typer.Option(None, "--labels", help="CSV of a district's own labels: text,event_code."),
    test_labels: Path | None = typer.Option(
        None, "--test-labels", help="CSV of held-out district labels, measured but never trained on."
    ),
    promote: bool = typer.Option(True, "--promote/--no-promote", help="Promote when the floors are reached."),
    models: Path | None = typer.Option(None, "--models", help="Model store folder (default: YIWANG_MODELS)."),
) -> None:
    """Train a version on the corpus's training split (plus --labels), measure it on the held-out split."""
    from thematic_libs.config import ConfigError
    from thematic_libs.urban.classifier import ClassifierConfig
    from thematic_libs.urban.corpus import LabelError
    from thematic_libs.urban.model_store import ModelStore

    store = ModelStore(_models_dir(models))
    try:
        with console.status("training the appeal classifier…"):
            outcome = store.train(ClassifierConfig.load(), labels=labels, test_labels=test_labels, promote=promote)
    except (LabelError, ConfigError) as error:
        raise _fail(str(error)) from None
    held_out = outcome.card["held_out"]
    console.print(
        f"{'trained' if outcome.created else 'unchanged (same data fingerprint)'}: {outcome.version} "
        f"on {outcome.card['training']['rows']:,} labelled appeals"
    )
    console.print(f"held out: {_figures_line(held_out['overall'])}")
    console.print(f"keyword baseline: {_figures_line(held_out['keyword_baseline'])}")
    if outcome.not_promoted_because:
        console.print(f"[yellow]not promoted:[/] {'; '.join(outcome.not_promoted_because)}")
    elif outcome.promoted:
        console.print(f"[green]promoted:[/] the platform now classifies with {outcome.version}")
    else:
        console.print(f"not promoted (--no-promote); promote with: yiwang classifier promote {outcome.version}")


@classifier_app.command("list")
def classifier_list(models: Path | None = typer.Option(None, "--models")) -> None:
    """Every trained version with its data fingerprint and held-out figures; * marks the promoted one."""
    from rich import box
    from rich.table import Column

    from thematic_libs.urban.model_store import ModelStore

    store = ModelStore(_models_dir(models))
    promoted = store.promoted()
    table = Table(
        Column("", no_wrap=True),
        Column("version", no_wrap=True),
        Column("created (CST)", no_wrap=True),
        Column("rows", justify="right", no_wrap=True),
        Column("exact", justify="right"),
        Column("major", justify="right"),
        Column("triage", justify="right"),
        box=box.SIMPLE_HEAD,
        caption="held-out figures: exact item and major class on the decided appeals, share sent to triage",
    )
    for card in store.versions():
        overall = card["held_out"]["overall"]
        table.add_row(
            "*" if card["version"] == promoted else "",
            card["version"],
            card["created_at"].replace("T", " ")[:16],
            f"{card['training']['rows']:,}",
            f"{overall['exact_item_accuracy']:.1%}",
            f"{overall['major_class_accuracy']:.1%}",
            f"{overall['triage_share']:.1%}",
        )
    console.print(table)
    if promoted is None:
        console.print("no version promoted yet: `yiwang classifier train` (or the first run) trains one")


@classifier_app.command("promote")
def classifier_promote(
    version: str = typer.Argument(..., help="A version from `yiwang classifier list`."),
    reason: str = typer.Option("promoted by hand", "--reason", help="Why (kept in promotions.jsonl)."),
    models: Path | None = typer.Option(None, "--models"),
) -> None:
    """Make VERSION the one the platform classifies with (the next run uses it)."""
    from thematic_libs.urban.model_store import ModelStore, ModelStoreError

    try:
        ModelStore(_models_dir(models)).promote(version, reason)
    except ModelStoreError as error:
        raise _fail(str(error)) from None
    console.print(f"promoted {version}")


def _loaded(models: Path | None, version: str | None):
    from thematic_libs.urban.classifier import ClassifierConfig
    from thematic_libs.urban.model_store import ModelStore, ModelStoreError

    store = ModelStore(_models_dir(models))
    config = ClassifierConfig.load()
    try:
        if version is None:
            with console.status("loading the promoted appeal classifier…"):
                return (*store.promoted_classifier(config), config)
        return version, store.load(version), config
    except ModelStoreError as error:
        raise _fail(str(error)) from None


@classifier_app.command("predict")
def classifier_predict(
    input_path: Path = typer.Option(..., "--in", help="CSV (UTF-8) with a `text` column."),
    output_path: Path = typer.Option(..., "--out", help="CSV to write: text, event_code, confidence."),
    domain: str = typer.Option("urban", "--domain", help="urban (hotline, 01-06) or enterprise (07)."),
    version: str | None = typer.Option(None, "--version", help="A version (default: the promoted one)."),
    models: Path | None = typer.Option(None, "--models"),
) -> None:
    """Classify every row of a file; an empty event_code means the appeal goes to human triage."""
    from thematic_libs.urban.evaluation import DOMAINS

    if domain not in DOMAINS:
        raise _fail(f"--domain must be one of {', '.join(DOMAINS)}, not {domain!r}")
    if not input_path.is_file():
        raise _fail(f"input file {input_path} does not exist; give a CSV with a text column")
    try:
        frame = pl.read_csv(input_path, infer_schema=False, encoding="utf8")
    except (pl.exceptions.ComputeError, UnicodeDecodeError) as error:
        reason = str(error).splitlines()[0]
        raise _fail(f"{input_path} is not a readable UTF-8 CSV ({reason}); save it as UTF-8 CSV") from None
    if "text" not in frame.columns:
        raise _fail(f"{input_path} has no `text` column (columns: {', '.join(frame.columns)}); name the column text")
    used, model, config = _loaded(models, version)
    with console.status(f"classifying {frame.height:,} texts with {used}…"):
        result = pl.from_arrow(
            model.classify(frame.get_column("text"), DOMAINS[domain], config.min_confidence, config.candidates)
        )
    out = pl.DataFrame(
        {
            "text": frame.get_column("text"),
            "event_code": result.get_column("event_code").fill_null(""),
            "confidence": result.get_column("confidence").round(4),
        }
    )
    output_path.parent.mkdir(parents=True, exist_ok=True)
    out.write_csv(output_path)
    triaged = out.filter(pl.col("event_code") == "").height
    console.print(
        f"{out.height:,} texts classified with {used} into {output_path}; "
        f"{triaged:,} sent to triage (confidence below {config.min_confidence})"
    )


@classifier_app.command("evaluate")
def classifier_evaluate(
    version: str | None = typer.Option(None, "--version", help="A version (default: the promoted one)."),
    test_labels: Path | None = typer.Option(None, "--test-labels", help="Also measure on a district's labels."),
    models: Path | None = typer.Option(None, "--models"),
) -> None:
    """Per-class precision and recall, the confusions and the triage share on the held-out set."""
    from thematic_libs.reference import load_event_catalogue
    from thematic_libs.urban import evaluation
    from thematic_libs.urban.corpus import LabelError, corpus_split, read_labels

    used, model, config = _loaded(models, version)
    test = corpus_split("test").select("text", "event_code", "style")
    if test_labels is not None:
        try:
            district = read_labels(test_labels).select("text", "event_code").with_columns(style=pl.lit("district"))
        except LabelError as error:
            raise _fail(str(error)) from None
        test = pl.concat([test, district])
    predicted = evaluation.predictions(model, test, config.min_confidence)
    names = dict(zip(*load_event_catalogue().select(["event_code", "item_name"]).to_pydict().values(), strict=True))
    table = Table("event", "item", "appeals", "decided", "precision", "recall", title=f"held-out figures of {used}")
    for row in evaluation.per_class(predicted).iter_rows(named=True):
        table.add_row(
            row["event_code"],
            names.get(row["event_code"], ""),
            str(row["support"]),
            str(row["decided"]),
            f"{row['precision']:.2f}",
            f"{row['recall']:.2f}",
        )
    console.print(table)
    confusions = Table("true", "predicted", "appeals", title="Most frequent confusions (decided, wrong)")
    for row in evaluation.confusions(predicted).iter_rows():
        confusions.add_row(f"{row[0]} {names.get(row[0], '')}", f"{row[1]} {names.get(row[1], '')}", str(row[2]))
    console.print(confusions)
    styles = Table("style", "appeals", "triage", "exact item", title="By writing style")
    for row in evaluation.by_style(predicted).iter_rows(named=True):
        styles.add_row(
            row["style"], str(row["appeals"]), f"{row['triage_share']:.1%}", f"{row['exact_item_accuracy']:.1%}"
        )
    console.print(styles)
    for name, majors in evaluation.DOMAINS.items():
        rows = predicted.filter(pl.col("event_code").str.slice(0, 2).is_in(list(majors)))
        if rows.height:
            console.print(f"{name}: {_figures_line(evaluation.figures(rows).as_dict())}")
    console.print(f"[bold]overall: {_figures_line(evaluation.figures(predicted).as_dict())}[/]")
    baseline = evaluation.figures(evaluation.keyword_predictions(test)).as_dict()
    console.print(f"keyword baseline: {_figures_line(baseline)}")


@classifier_app.command("tune")
def classifier_tune(
    labels: Path | None = typer.Option(None, "--labels", help="A district's labels, added to the training split."),
    folds: int = typer.Option(5, "--folds", min=2, max=20),
) -> None:
    """Cross-validate regularisation and abstention thresholds on the training split (never the test split)."""
    from thematic_libs.urban.classifier import ClassifierConfig
    from thematic_libs.urban.corpus import LabelError, corpus_split, read_labels
    from thematic_libs.urban.tuning import choose, tune

    training = corpus_split("train").select("text", "event_code")
    if labels is not None:
        try:
            training = pl.concat([training, read_labels(labels).select("text", "event_code")])
        except LabelError as error:
            raise _fail(str(error)) from None
    with console.status(f"{folds}-fold cross-validation on {training.height:,} appeals…"):
        table = tune(training, ClassifierConfig.load(), [10.0, 30.0, 100.0], [0.15, 0.2, 0.22, 0.25, 0.3, 0.35], folds)
    out = Table(
        "majors",
        "C",
        "min_confidence",
        "triage",
        "exact item",
        "major class",
        "hotline exact",
        "hotline major",
        title="Out-of-fold figures (training split only)",
    )
    for row in table.iter_rows(named=True):
        out.add_row(
            "combined" if row["combine_majors"] else "-",
            f"{row['regularisation_c']:g}",
            f"{row['min_confidence']:.2f}",
            f"{row['triage_share']:.1%}",
            f"{row['exact_item_accuracy']:.1%}",
            f"{row['major_class_accuracy']:.1%}",
            f"{row['hotline_exact_item_accuracy']:.1%}",
            f"{row['hotline_major_class_accuracy']:.1%}",
        )
    console.print(out)
    best = choose(table)
    console.print(
        f"by the rule in thematic_libs/urban/tuning.py: combine_majors {str(best['combine_majors']).lower()}, "
        f"regularisation_c {best['regularisation_c']:g}, min_confidence {best['min_confidence']}"
    )


@app.command("triage")
def triage(
    warehouse: str | None = typer.Option(None, "--warehouse"),
    limit: int = typer.Option(50, "--limit", min=1, help="Rows to show."),
    out: Path | None = typer.Option(
        None, "--out", help="Write every appeal in triage to a labels CSV (text, event_code to fill in, candidates)."
    ),
) -> None:
    """Appeals the classifier sent to human triage, with their top candidates."""
    from ingestion.keys import CST
    from ingestion.settings import Settings
    from thematic_libs.urban.events import TRIAGE

    store = existing_warehouse(warehouse or Settings.from_env().warehouse)
    if not store.exists(TRIAGE):
        raise _fail(f"no {TRIAGE} table in {store.root}: run `yiwang run` first (or pass --warehouse)")
    frame = pl.from_arrow(store.table(TRIAGE).to_pyarrow_table())
    candidates = pl.col("candidates").list.eval(
        pl.element().struct.field("event_code")
        + " "
        + pl.element().struct.field("event_name")
        + " ("
        + pl.element().struct.field("confidence").round(2).cast(pl.String)
        + ")"
    )
    frame = frame.with_columns(candidates.list.join(" | ").alias("candidate_text"))
    if out is not None:
        frame.select(
            "event_id", pl.col("description").alias("text"), pl.lit("").alias("event_code"), "candidate_text"
        ).write_csv(out)
        console.print(
            f"{frame.height:,} appeals written to {out}: fill in event_code, then "
            f"`yiwang classifier train --labels {out}`"
        )
        return
    # One appeal a block, fitting 80 columns: its id and time (CST), the text, the candidates, each on its line.
    from rich.markup import escape
    from rich.padding import Padding
    from rich.text import Text

    console.print(f"[bold]{frame.height:,} appeals in triage[/] (showing {min(limit, frame.height):,})")
    for row in frame.head(limit).iter_rows(named=True):
        received = row["occurred_at"].astimezone(CST).strftime("%Y-%m-%d %H:%M") if row["occurred_at"] else ""
        console.print(f"[bold]{escape(row['event_id'])}[/]  received {received} CST", highlight=False)
        console.print(Padding(Text((row["description"] or "")[:120]), (0, 0, 0, 2)))
        console.print(Padding(Text("candidates: " + (row["candidate_text"] or ""), style="dim"), (0, 0, 0, 2)))


def main() -> None:  # pragma: no cover
    app(sys.argv[1:])


if __name__ == "__main__":  # pragma: no cover
    main()
