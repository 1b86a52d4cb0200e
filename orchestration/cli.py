"""The `yiwang` command line: demo data, the platform's main job, and what a data officer looks at."""

from __future__ import annotations

import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="yiwang: the 一网统管 · 一网共享 lakehouse.", no_args_is_help=True, add_completion=False)
console = Console()

DEFAULT_DEMO_SCALE = 1.0


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
    from ingestion.demo import generate_landing_zone

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
) -> None:
    """Materialise every batch asset in process and print what happened."""
    from orchestration.settings import Settings

    settings = Settings.from_env().with_overrides(
        landing=landing.resolve() if landing else None,
        warehouse=warehouse,
        as_of=date.fromisoformat(as_of) if as_of else None,
        reject_share=reject_share,
    )
    if landing is None and _landing_is_empty(settings.landing):
        from ingestion.demo import generate_landing_zone

        console.print(f"[bold]No landing zone yet: generating demo data in {settings.landing}[/]")
        summary = generate_landing_zone(settings.landing, scale=demo_scale)
        if settings.as_of is None:
            settings = settings.with_overrides(as_of=summary.as_of)
    if not settings.landing.is_dir():
        console.print(f"[red]landing zone {settings.landing} does not exist[/]")
        raise typer.Exit(2)
    started = datetime.now(UTC)
    clock = time.perf_counter()
    ok = _execute(settings)
    _print_summary(settings, started, time.perf_counter() - clock)
    if not ok:
        console.print("[red]The platform run failed (see the errors above); bad data alone never does this.[/]")
        raise typer.Exit(1)


def _execute(settings) -> bool:
    from dagster import DagsterInstance

    from orchestration.definitions import PLATFORM_JOB, build_definitions

    defs = build_definitions(settings)
    job = defs.resolve_job_def(PLATFORM_JOB)
    instance = DagsterInstance.get() if _has_dagster_home() else DagsterInstance.ephemeral()
    with console.status("running the platform job in process…"):
        result = job.execute_in_process(
            instance=instance,
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )
    for event in result.all_events:
        if event.is_step_failure:
            console.print(f"[red]step failed:[/] {event.step_key}: {event.event_specific_data.error.message}")
    return result.success


def _has_dagster_home() -> bool:
    import os

    return bool(os.environ.get("DAGSTER_HOME"))


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
    """What the libraries, the dispatch table and the cross-check hold after the run."""
    counts = _gold_tables(warehouse)
    if not counts:
        return
    restricted = "gold/social_assistance/"
    table = Table("gold table", "rows", title="Thematic libraries, tickets and cross-check (gold)")
    for name, rows in counts.items():
        table.add_row(name + ("  [restricted]" if name.startswith(restricted) else ""), f"{rows:,}")
    console.print(table)
    if warehouse.exists("gold/dispatch/tickets"):
        tickets = pl.from_arrow(warehouse.table("gold/dispatch/tickets").to_pyarrow_table(columns=["status", "source"]))
        by_source = ", ".join(f"{s} {n:,}" for s, n in tickets.group_by("source").len().sort("source").iter_rows())
        open_count = tickets.filter(~pl.col("status").is_in(["resolved", "closed"])).height
        console.print(
            f"dispatch table: {tickets.height:,} tickets ({by_source}); {open_count:,} open. "
            "Read it incrementally: yiwang tickets changes --since-version N"
        )


def _print_summary(settings, started: datetime, seconds: float) -> None:
    from ingestion.ledger import read_ledger, read_quarantine
    from ingestion.pipeline import pending_batches
    from ingestion.warehouse import Warehouse

    warehouse = Warehouse.at(settings.warehouse)
    ledger = read_ledger(warehouse)
    this_run = ledger.filter(pl.col("processed_at") >= started)
    loaded = this_run.filter(pl.col("status") == "loaded")
    rejected = this_run.filter(pl.col("status") == "rejected")
    waiting = [b for b in pending_batches(settings.landing, warehouse) if not b.is_complete]
    quarantine = read_quarantine(warehouse).filter(pl.col("quarantined_at") >= started)

    console.rule("[bold]yiwang run summary")
    console.print(
        f"{loaded.height} batches loaded ({int(loaded['rows_loaded'].sum()):,} rows), "
        f"{rejected.height} rejected, {len(waiting)} waiting for their manifest, "
        f"{int(this_run['rows_quarantined'].sum()):,} records quarantined "
        f"({quarantine.height:,} rule violations) in {seconds:.1f} s"
    )
    if rejected.height:
        table = Table("contract", "batch", "rule", "reason", title="Rejected batches", show_lines=False)
        for row in rejected.sort("contract_id", "batch_id").iter_rows(named=True):
            table.add_row(row["contract_id"], row["batch_id"], row["rule"] or "", row["reason"] or "")
        console.print(table)
    if quarantine.height:
        by_rule = quarantine.group_by("contract_id", "rule").len().sort("contract_id", "rule")
        table = Table("contract", "rule", "violations", title="Quarantined records by rule")
        for row in by_rule.iter_rows():
            table.add_row(row[0], row[1], f"{row[2]:,}")
        console.print(table)
    for b in waiting:
        console.print(f"[yellow]waiting[/] {b.contract_id} {b.batch_id}: no _manifest.json yet")
    reports = Path(settings.reports_dir)
    _print_products(warehouse)
    console.rule("[bold]where to look")
    console.print(f"warehouse (Delta): {settings.warehouse}")
    console.print("  ledger: ops/batch_ledger · quarantine: quarantine/rows · quality: ops/quality_results")
    console.print(f"quality data docs: {reports / 'data_docs' / 'index.html'}")
    console.print(f"quality scorecard: {reports / 'quality_scorecard.png'}")
    console.print(f"DuckDB (dbt models): {settings.duckdb_path}")
    console.print("notebooks: notebooks/thematic_libraries.ipynb (libraries, KPIs); notebooks/crosscheck_review.ipynb")
    console.print("cross-check (restricted): gold/social_assistance/ · for reports: gold/reports/crosscheck_summary")
    console.print("Dagster UI: make dagster  → http://127.0.0.1:3000")


@app.command("ledger")
def ledger(
    warehouse: str | None = typer.Option(None, "--warehouse"),
    rejected_only: bool = typer.Option(False, "--rejected", help="Only rejected batches."),
) -> None:
    """The batch ledger: every batch seen, loaded or rejected, with its reason."""
    from ingestion.ledger import read_ledger
    from ingestion.warehouse import Warehouse
    from orchestration.settings import Settings

    frame = read_ledger(Warehouse.at(warehouse or Settings.from_env().warehouse))
    if rejected_only:
        frame = frame.filter(pl.col("status") == "rejected")
    table = Table("contract", "batch", "status", "loaded", "quarantined", "reason")
    for row in frame.sort("contract_id", "batch_ordinal").iter_rows(named=True):
        table.add_row(
            row["contract_id"],
            row["batch_id"],
            row["status"],
            str(row["rows_loaded"]),
            str(row["rows_quarantined"]),
            row["reason"] or "",
        )
    console.print(table)


@app.command("crosscheck")
def crosscheck(
    as_of: str = typer.Option(..., "--as-of", help="YYYY-MM-DD: only batches extracted by then count."),
    engine: str | None = typer.Option(None, "--engine", help="duckdb or spark (default: crosscheck.engine)."),
    warehouse: str | None = typer.Option(None, "--warehouse"),
) -> None:
    """Run the social-assistance cross-check as of a date and (re)write that date's restricted gold rows."""
    from ingestion.warehouse import Warehouse
    from orchestration.settings import Settings
    from thematic_libs.social_assistance.run import run_crosscheck

    settings = Settings.from_env()
    result = run_crosscheck(
        Warehouse.at(warehouse or settings.warehouse), date.fromisoformat(as_of), engine=engine, key=_key(settings)
    )
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


tickets_app = typer.Typer(help="The dispatch table gold/dispatch/tickets.", no_args_is_help=True)
app.add_typer(tickets_app, name="tickets")


@tickets_app.command("changes")
def tickets_changes(
    since_version: int = typer.Option(
        -1, "--since-version", help="Last table version you processed; -1 (default) returns every ticket."
    ),
    warehouse: str | None = typer.Option(None, "--warehouse"),
    output_format: str = typer.Option("jsonl", "--format", help="jsonl (one ticket per line) or table."),
) -> None:
    """New and changed tickets after table version N, the latest state of each (for the dispatch system).

    Prints one JSON object per ticket on stdout with `change_type` (new | changed) and `table_version`;
    the current table version goes to stderr as `next --since-version: V`: pass it next time.
    """
    import json

    from ingestion.warehouse import Warehouse
    from orchestration.settings import Settings
    from thematic_libs.dispatch.store import changes_since

    changes, version = changes_since(Warehouse.at(warehouse or Settings.from_env().warehouse), since_version)
    if output_format == "table":
        table = Table("ticket", "change", "event", "grid", "department", "priority", "status", "due")
        for row in changes.to_pylist():
            table.add_row(
                row["ticket_id"],
                row["change_type"],
                f"{row['event_code']} {row['event_name']}",
                row["grid_code"] or row["district_code"],
                row["department_code"],
                row["priority"],
                row["status"],
                str(row["due_at"]),
            )
        console.print(table)
    else:
        for row in changes.to_pylist():
            sys.stdout.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    Console(stderr=True).print(f"{changes.num_rows} ticket(s); next --since-version: {version}")


def main() -> None:  # pragma: no cover
    app(sys.argv[1:])


if __name__ == "__main__":  # pragma: no cover
    main()
