"""What `yiwang run` shows: a line per stage, everything else in the run's log, a summary that names every failed
check with where to look, and an exit code that only a platform failure (a step that raised) makes non-zero."""

# No `from __future__ import annotations`: Dagster inspects the real type of an asset's `context` parameter.
import io
import os
import subprocess
import sys
from pathlib import Path

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetObservation,
    DagsterInstance,
    Definitions,
    MaterializeResult,
    asset,
    asset_check,
    define_asset_job,
    in_process_executor,
)
from rich.console import Console

from orchestration.run_report import (
    captured_output,
    dbt_warnings,
    execute,
    print_checks_and_warnings,
    print_failures,
    stage_of,
)


@asset(key=AssetKey(["bronze", "gongan", "household_registration"]))
def planted_bronze(context: AssetExecutionContext) -> MaterializeResult:
    context.log.warning("planted warning: 3 rows without a grid")
    return MaterializeResult(metadata={"batches_loaded": 2, "batches_rejected": 1, "rows_quarantined": 7})


@asset_check(asset=planted_bronze, name="contract_expectations")
def planted_gx_check() -> AssetCheckResult:
    return AssetCheckResult(
        passed=False, severity=AssetCheckSeverity.ERROR, description="2 expectations failed beyond 5% of the rows"
    )


@asset(key=AssetKey(["gold", "dispatch", "tickets"]), deps=[planted_bronze])
def planted_tickets() -> MaterializeResult:
    return MaterializeResult(metadata={"tickets": 12})


@asset_check(asset=planted_tickets, name="tickets_routed_and_due")
def planted_ticket_check() -> AssetCheckResult:
    return AssetCheckResult(passed=False, severity=AssetCheckSeverity.WARN, description="1 ticket has no department")


@asset_check(asset=planted_tickets, name="outcomes_refer_to_known_tickets")
def passing_check() -> AssetCheckResult:
    return AssetCheckResult(passed=True)


@asset(key=AssetKey(["gold", "party", "org_tree"]), deps=[planted_bronze])
def broken_gold() -> None:
    raise ValueError("pseudonym key file /x/pseudonym.key is empty; delete it")


@asset(key=AssetKey(["gold", "party", "grid_coverage"]), deps=[broken_gold])
def after_broken() -> None:
    return None


@asset(key=AssetKey(["yiwang_dbt"]))
def planted_dbt(context: AssetExecutionContext) -> None:
    # What dagster-dbt logs for a test dbt ran by indirect selection: an observation, not a check result.
    for name, status in (("relationships_orphans", "fail"), ("not_null_ok", "pass"), ("relationships_orphans", "fail")):
        context.log_event(
            AssetObservation(
                asset_key=AssetKey(["marts", "party_org_tree"]),
                metadata={"unique_id": f"test.yiwang.{name}.abc123", "status": status},
            )
        )


def _run(assets: list, checks: list, tmp_path: Path):
    job = define_asset_job("planted", executor_def=in_process_executor)
    defs = Definitions(assets=assets, asset_checks=checks, jobs=[job])
    out = io.StringIO()
    log = tmp_path / "run.log"
    log.write_text("[\x1b[33mWARNING\x1b[0m][MissingArgumentsPropertyInGenericTestDeprecation]: Deprecated\n")
    report = execute(
        defs.resolve_job_def("planted"), DagsterInstance.ephemeral(), Console(file=out, width=80), log_path=log
    )
    return report, out.getvalue()


def test_a_planted_failing_check_is_named_in_the_summary_and_does_not_fail_the_run(tmp_path: Path) -> None:
    report, stages = _run(
        [planted_bronze, planted_tickets], [planted_gx_check, planted_ticket_check, passing_check], tmp_path
    )
    assert report.success
    assert "landing → bronze" in stages and "2 batches, 1 rejected, 7 rows bad" in stages
    assert "dispatch tickets" in stages and "12 tickets" in stages
    assert all(len(line) <= 80 for line in stages.splitlines()), stages
    assert {(c.asset, c.check, c.severity) for c in report.failed_checks} == {
        ("bronze/gongan/household_registration", "contract_expectations", "ERROR"),
        ("gold/dispatch/tickets", "tickets_routed_and_due", "WARN"),
    }
    summary = io.StringIO()
    console = Console(file=summary, width=80)
    print_failures(console, report)
    print_checks_and_warnings(console, report)
    text = summary.getvalue()
    print(text)
    assert all(len(line) <= 80 for line in text.splitlines())
    text = text.replace("\n", "")  # long paths fold across lines
    assert "Failed checks (2 of 3)" in text
    assert "Great Expectations suites, error (1) → Data Docs (a page per contract), the scorecard: " in text
    assert "scorecard: gongan.household_registration" in text
    assert "ticket checks, warn (1) → yiwang tickets changes --format table: gold/dispatch/tickets tickets_rout" in text
    assert "planted warning: 3 rows without a grid" in text
    assert "dbt: MissingArgumentsPropertyInGenericTestDeprecation: Deprecated" in text
    assert "step failed" not in text


def test_a_step_that_raises_fails_the_run_with_its_own_error(tmp_path: Path) -> None:
    report, stages = _run([planted_bronze, broken_gold, after_broken], [], tmp_path)
    assert not report.success
    assert "✗ gold libraries" in stages and "1 step(s) failed, 1 not run" in stages
    step = next(iter(report.failed_steps))
    assert report.failed_steps[step] == "ValueError: pseudonym key file /x/pseudonym.key is empty; delete it"
    assert report.not_run == ["gold__party__grid_coverage"]
    summary = io.StringIO()
    print_failures(Console(file=summary, width=200), report)
    assert f"step failed: {step}: ValueError: pseudonym key file" in summary.getvalue()
    assert "not run (an upstream step failed): 1 steps" in summary.getvalue()


def test_everything_printed_during_the_run_goes_to_the_log_file(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "run.log"
    with captured_output(log) as terminal:
        print("python print")
        sys.stderr.write("python stderr\n")
        os.write(1, b"file descriptor 1\n")
        subprocess.run(["sh", "-c", "echo subprocess stdout; echo subprocess stderr >&2"], check=True)
        terminal.print("stage line")
    text = log.read_text()
    for line in ("python print", "python stderr", "file descriptor 1", "subprocess stdout", "subprocess stderr"):
        assert line in text
    assert "stage line" not in text
    print("after the block")  # stdout is back


def test_steps_fall_into_stages() -> None:
    assert stage_of("bronze__gongan__household_registration") == "bronze"
    assert stage_of("bronze__gongan__household_registration_contract_expectations") == "quality"
    assert stage_of("silver__gongan__household_registration") == "silver"
    assert stage_of("silver__gongan__household_registration_primary_key_unique") == "quality"
    assert stage_of("yiwang_dbt_after_gold_2") == "dbt"
    assert stage_of("gold__dispatch__tickets_tickets_routed_and_due") == "dispatch"
    assert stage_of("gold__dispatch__kpis_by_area") == "gold"
    assert stage_of("ops__catalog") == "sharing"


def test_dbt_warnings_are_read_once_by_name(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    log.write_text(
        "[\x1b[33mWARNING\x1b[0m][Dep]: Deprecated\nfunctionality\n[WARNING][Dep]: again\n[WARNING][Other]: x\n"
    )
    assert dbt_warnings(log) == ["Dep: Deprecated", "Other: x"]


def test_warnings_the_summary_shows_anyway_are_left_out_and_repeats_counted() -> None:
    from orchestration.run_report import RunReport

    report = RunReport(
        skipped={"silver/video/detections": "no production model"},
        warnings=[
            ("bronze__qixiang__rainfall_forecast", "qixiang.rainfall_forecast 20261115T140000 rejected: version"),
            ("silver__video__detections", "no production model for helmet"),
            ("yiwang_dbt_2", "Logging an `AssetObservation` instead of an `AssetCheckResult` for dbt test a"),
            ("yiwang_dbt", "Logging an `AssetObservation` instead of an `AssetCheckResult` for dbt test b"),
            ("gold__urban__events", "3 appeals without a grid"),
            ("yiwang_dbt", "tables not there yet, staged as empty: gold_src.a"),
            ("yiwang_dbt_2", "tables not there yet, staged as empty: gold_src.b"),
        ],
    )
    out = io.StringIO()
    print_checks_and_warnings(Console(file=out, width=100), report)
    text = out.getvalue()
    assert "Warnings (2)" in text
    assert "yiwang_dbt and 1 more: tables not there yet, staged as empty: gold_src.a" in text
    assert "AssetObservation" not in text  # dagster-dbt's note: those tests are among the checks
    assert "gold__urban__events: 3 appeals without a grid" in text
    assert "rejected" not in text and "no production model" not in text


def test_a_failing_dbt_test_run_by_indirect_selection_is_a_failed_check(tmp_path: Path) -> None:
    report, _ = _run([planted_dbt], [], tmp_path)
    assert report.success and report.checks_evaluated == 2  # the repeated observation counts once
    assert [(c.check, c.severity, c.kind) for c in report.failed_checks] == [("relationships_orphans", "ERROR", "dbt")]
