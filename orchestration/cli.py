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

from orchestration.catalog_cli import catalog_app
from orchestration.cli_output import fail as _fail
from orchestration.ml_cli import ml_app
from orchestration.share_cli import share_app
from orchestration.stream_cli import broker_app, simulate_app, stream_app

app = typer.Typer(help="yiwang: the 一网统管 · 一网共享 lakehouse.", no_args_is_help=True, add_completion=False)
app.add_typer(broker_app, name="broker")
app.add_typer(simulate_app, name="simulate")
app.add_typer(stream_app, name="stream")
app.add_typer(catalog_app, name="catalog")
app.add_typer(share_app, name="share")
app.add_typer(ml_app, name="ml")
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
    from orchestration.run_lock import LOCKED, RunLockHeld, run_lock

    try:
        with run_lock(settings.warehouse):
            started = datetime.now(UTC)
            clock = time.perf_counter()
            ok, skipped = _execute(settings)
            _print_summary(settings, started, time.perf_counter() - clock)
    except RunLockHeld as held:
        raise _fail(str(held), LOCKED) from None
    for asset, reason in skipped.items():
        console.print(f"[yellow]skipped[/] {asset}: {reason}")
    if not ok:
        console.print("[red]The platform run failed (see the errors above); bad data alone never does this.[/]")
        raise typer.Exit(1)


def _execute(settings) -> tuple[bool, dict[str, str]]:
    """Run the platform job in process: (success, {asset: why it was skipped})."""
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
    skipped: dict[str, str] = {}
    failed: dict[str, str] = {}
    for event in result.all_events:
        if event.is_step_failure:
            failed[str(event.step_key)] = root_cause(event.event_specific_data.error)
            console.print(f"[red]step failed:[/] {event.step_key}: {failed[str(event.step_key)]}")
        elif event.is_step_materialization:
            materialization = event.event_specific_data.materialization
            reason = materialization.metadata.get("skipped")
            if reason is not None:
                skipped[materialization.asset_key.to_user_string()] = str(reason.value)
    _record_run(settings, result.run_id, result.success, skipped, failed)
    return result.success, skipped


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


def root_cause(error) -> str:
    """The innermost error of a Dagster step failure (the exception the asset raised), in one line.

    Dagster wraps it as "Error occurred while executing op ..."; the person reading the summary needs the
    asset's own message, not the wrapper."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    lines = [line for line in (error.message or "").splitlines() if line.strip()]
    return lines[0].strip() if lines else str(error.cls_name)


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
            f"{appeals.height:,} hotline appeals classified; {triaged:,} appeals sent to triage "
            "(ops/triage; see them with: yiwang triage)"
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
    console.print("  runs (skipped and failed steps): ops/runs · triage: ops/triage")
    console.print(f"quality data docs: {reports / 'data_docs' / 'index.html'}")
    console.print(f"quality scorecard: {reports / 'quality_scorecard.png'}")
    console.print(f"DuckDB (dbt models): {settings.duckdb_path}")
    console.print("notebooks: notebooks/thematic_libraries.ipynb (libraries, KPIs); notebooks/crosscheck_review.ipynb")
    console.print("cross-check (restricted): gold/social_assistance/ · for reports: gold/reports/crosscheck_summary")
    console.print(
        f"sharing: yiwang catalog list · open data: {settings.open_data_dir} · "
        "yiwang share serve → http://127.0.0.1:8765/catalog"
    )
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
    from ingestion.warehouse import Warehouse
    from orchestration.settings import Settings

    store = Warehouse.at(warehouse or Settings.from_env().warehouse)
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


classifier_app = typer.Typer(
    help="The appeal classifier: train, evaluate, predict, list and promote versions.", no_args_is_help=True
)
app.add_typer(classifier_app, name="classifier")


def _models_dir(models: Path | None) -> Path:
    from orchestration.settings import Settings

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
    from thematic_libs.urban.model_store import ModelStore

    store = ModelStore(_models_dir(models))
    promoted = store.promoted()
    table = Table("")
    table.add_column("version", no_wrap=True)
    for column in ("created (CST)", "training rows", "exact item", "major class", "triage"):
        table.add_column(column)
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
    from ingestion.warehouse import Warehouse
    from orchestration.settings import Settings
    from thematic_libs.dispatch.keys import CST
    from thematic_libs.urban.events import TRIAGE

    store = Warehouse.at(warehouse or Settings.from_env().warehouse)
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
    table = Table("event", "received (CST)", "appeal", "candidates", title=f"{frame.height:,} appeals in triage")
    for row in frame.head(limit).iter_rows(named=True):
        received = row["occurred_at"].astimezone(CST).strftime("%Y-%m-%d %H:%M") if row["occurred_at"] else ""
        table.add_row(row["event_id"], received, (row["description"] or "")[:60], row["candidate_text"])
    console.print(table)


def main() -> None:  # pragma: no cover
    app(sys.argv[1:])


if __name__ == "__main__":  # pragma: no cover
    main()
