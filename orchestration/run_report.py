"""What `yiwang run` shows: one line per stage with a progress bar and its counts, then the summary.

Everything else the libraries print (dbt's per-node log, dagster-dbt, Dagster's own notices and step log,
Splink, Great Expectations, MLflow, warnings) goes to one log file, `<home>/logs/run-<CST time>.log`, which
the summary names. The terminal's own stdout and stderr are swapped for that file at the file-descriptor
level for the length of the run, so subprocesses (dbt) and C libraries land there too.

The summary lists every failed asset check (Great Expectations suites, dbt tests, the tickets' checks),
every warning a step logged and dbt's own warnings, each group with where to look. Failed checks are
department data problems: they never change the exit code; a step that raised does (`RunReport.success`).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Column

from orchestration.cli_output import CST

# --- stages --------------------------------------------------------------------------------------

STAGES: dict[str, str] = {
    "bronze": "landing → bronze",
    "quality": "quality checks",
    "silver": "silver",
    "dbt": "dbt models, tests",
    "gold": "gold libraries",
    "dispatch": "dispatch tickets",
    "sharing": "catalog, sharing",
}
_SHARING_STEPS = ("ops__catalog", "open_data", "share__", "gold__sharing__", "analytics__")


def stage_of(step_key: str) -> str:
    """The stage a Dagster step belongs to, by its key (asset keys joined with `__`)."""
    if step_key.endswith(("_contract_expectations", "_primary_key_unique")) or step_key.startswith("ops__quality"):
        return "quality"
    if step_key.startswith("bronze__") or step_key == "ops__unknown_deliveries":
        return "bronze"
    if step_key.startswith("silver__") and not step_key.startswith("silver__video__"):
        return "silver"
    if step_key.startswith("yiwang_dbt"):
        return "dbt"
    if step_key.startswith("gold__dispatch__tickets"):
        return "dispatch"
    if step_key.startswith(_SHARING_STEPS):
        return "sharing"
    return "gold"


def root_cause(error) -> str:
    """The innermost error of a Dagster step failure (the exception the asset raised), in one line.

    Dagster wraps it as "Error occurred while executing op ..."; the person reading the summary needs the
    asset's own message, not the wrapper."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    lines = [line for line in (error.message or "").splitlines() if line.strip()]
    return lines[0].strip() if lines else str(error.cls_name)


# --- what a run found ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FailedCheck:
    asset: str  # e.g. bronze/gongan/household_registration
    check: str  # e.g. contract_expectations, a dbt test's name, tickets_routed_and_due
    severity: str  # ERROR or WARN
    description: str
    step: str

    @property
    def kind(self) -> str:
        if self.check == "contract_expectations":
            return "gx"
        if self.step.startswith("yiwang_dbt"):
            return "dbt"
        if self.asset.startswith("gold/dispatch/tickets"):
            return "tickets"
        return "other"


# Figures a stage line adds up from its assets' materialisation metadata.
_FIGURES = ("batches_loaded", "batches_rejected", "rows_quarantined", "rows_written", "tickets")


@dataclass
class StageCounts:
    total: int = 0
    done: int = 0
    failed: int = 0
    not_run: int = 0
    materialized: int = 0
    checks: int = 0
    checks_failed: int = 0
    checks_warned: int = 0
    figures: Counter = field(default_factory=Counter)

    def text(self, stage: str) -> str:
        """The counts after a stage's bar, in a few words."""
        f = self.figures
        parts: list[str] = []
        if stage == "bronze":
            parts.append(f"{f['batches_loaded']:,} batches, {f['batches_rejected']:,} rejected")
            if f["rows_quarantined"]:
                parts.append(f"{f['rows_quarantined']:,} rows bad")
        elif stage == "silver":
            parts.append(f"{self.materialized} tables, {f['rows_written']:,} rows")
        elif stage in ("quality", "dispatch") and self.checks:
            parts.append(f"{self.checks} checks")
            if stage == "dispatch" and f["tickets"]:
                parts.insert(0, f"{f['tickets']:,} tickets")
        elif stage == "dbt":
            parts.append(f"{self.materialized} models, {self.checks} tests")
        elif self.materialized:
            parts.append(f"{self.materialized} assets")
        if self.checks_failed:
            parts.append(f"[yellow]{self.checks_failed} failed[/]")
        if self.checks_warned:
            parts.append(f"[yellow]{self.checks_warned} warned[/]")
        if self.failed:
            parts.append(f"[red]{self.failed} step(s) failed[/]")
        if self.not_run:
            parts.append(f"[red]{self.not_run} not run[/]")
        return ", ".join(parts)

    def mark(self) -> str:
        if self.failed or self.not_run:
            return "[red]✗[/]"
        if self.done < self.total:
            return " "
        return "[yellow]![/]" if self.checks_failed or self.checks_warned else "[green]✓[/]"


@dataclass
class RunReport:
    run_id: str = ""
    success: bool = False
    log_path: Path | None = None
    failed_steps: dict[str, str] = field(default_factory=dict)
    not_run: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    failed_checks: list[FailedCheck] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (step, message)
    dbt_warnings: list[str] = field(default_factory=list)
    checks_evaluated: int = 0
    stages: dict[str, StageCounts] = field(default_factory=dict)


# --- watching the run ----------------------------------------------------------------------------


class RunMonitor:
    """A Dagster event listener (`instance.add_event_listener`) that draws a bar per stage and keeps what the
    summary needs. Dagster calls it in the run's own thread for every event of the run."""

    def __init__(self, step_keys: Iterable[str], console: Console) -> None:
        self.report = RunReport()
        self._observed_tests: set[str] = set()
        self.stage_of_step: dict[str, str] = {}
        for key in step_keys:
            self._stage(key).total += 1
        self.progress = Progress(
            TextColumn("{task.fields[mark]} {task.description}", table_column=Column(width=20, no_wrap=True)),
            BarColumn(bar_width=10),
            MofNCompleteColumn(table_column=Column(width=7, justify="right")),
            TextColumn("{task.fields[counts]}", table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1)),
            console=console,
            redirect_stdout=False,
            redirect_stderr=False,
            expand=True,
        )
        self.tasks = {
            stage: self.progress.add_task(label, total=self._stage_counts(stage).total or None, mark=" ", counts="")
            for stage, label in STAGES.items()
            if self._stage_counts(stage).total
        }

    def _stage_counts(self, stage: str) -> StageCounts:
        return self.report.stages.setdefault(stage, StageCounts())

    def _stage(self, step_key: str) -> StageCounts:
        stage = self.stage_of_step.setdefault(step_key, stage_of(step_key))
        return self._stage_counts(stage)

    def __enter__(self) -> RunMonitor:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for stage in self.tasks:
            self._refresh(stage)
        self.progress.stop()

    def _refresh(self, stage: str) -> None:
        counts = self._stage_counts(stage)
        task = self.tasks.get(stage)
        if task is None:  # a step the plan did not announce
            self.tasks[stage] = task = self.progress.add_task(STAGES[stage], total=None, mark=" ", counts="")
        self.progress.update(
            task,
            completed=counts.done + counts.failed + counts.not_run,
            total=max(counts.total, counts.done + counts.failed + counts.not_run) or None,
            mark=counts.mark(),
            counts=counts.text(stage),
        )

    def __call__(self, entry: Any) -> None:
        try:
            self._handle(entry)
        except Exception as error:  # the display must never break a run
            logging.getLogger(__name__).warning("run monitor: %s", error)

    def _handle(self, entry: Any) -> None:
        event = entry.dagster_event
        step = entry.step_key or (event.step_key if event is not None else None)
        if event is None:
            message = (entry.user_message or "").strip()
            if not step or not message:
                return
            if entry.level >= logging.ERROR and message.endswith("Not executing."):
                # Dagster says so in a plain message (no event) for a step whose upstream step failed
                counts = self._stage(step)
                counts.not_run += 1
                self.report.not_run.append(step)
                self._refresh(self.stage_of_step[step])
            elif logging.WARNING <= entry.level < logging.ERROR:
                self.report.warnings.append((step, message))
            return
        if step is None:
            return
        counts = self._stage(step)
        stage = self.stage_of_step[step]
        if event.is_step_success:
            counts.done += 1
        elif event.is_step_failure:
            counts.failed += 1
            self.report.failed_steps[step] = root_cause(event.event_specific_data.error)
        elif event.is_step_skipped:
            counts.not_run += 1
            self.report.not_run.append(step)
        elif event.is_step_materialization:
            materialization = event.event_specific_data.materialization
            if materialization.partition is not None:
                # a batch's partition of ops/batch, recorded by a bronze step (orchestration/batch_partitions.py):
                # the step's own materialization already counts the batch
                return
            self._materialized(counts, materialization)
        elif event.event_type_value == "ASSET_CHECK_EVALUATION":
            self._checked(counts, event.event_specific_data, step)
        elif event.is_asset_observation:
            if not self._observed_test(counts, event.asset_observation_data.asset_observation, step):
                return
        else:
            return
        self._refresh(stage)

    def _materialized(self, counts: StageCounts, materialization: Any) -> None:
        counts.materialized += 1
        metadata = materialization.metadata
        for name in _FIGURES:
            value = getattr(metadata.get(name), "value", None)
            if isinstance(value, int | float) and not isinstance(value, bool):
                counts.figures[name] += int(value)
        reason = metadata.get("skipped")
        if reason is not None:
            self.report.skipped[materialization.asset_key.to_user_string()] = str(reason.value)

    def _observed_test(self, counts: StageCounts, observation: Any, step: str) -> bool:
        """A dbt test that dbt ran by indirect selection (a relationship test touching a model of this step):
        dagster-dbt logs it as an observation, not a check, so a failing one would go unseen. Counted once."""
        metadata = observation.metadata
        unique_id = str(getattr(metadata.get("unique_id"), "value", "") or "")
        status = str(getattr(metadata.get("status"), "value", "") or "").lower()
        if not unique_id.startswith("test.") or unique_id in self._observed_tests:
            return False
        self._observed_tests.add(unique_id)
        counts.checks += 1
        self.report.checks_evaluated += 1
        if status in ("fail", "error", "runtime error", "warn"):
            severity = "WARN" if status == "warn" else "ERROR"
            counts.checks_warned += severity == "WARN"
            counts.checks_failed += severity == "ERROR"
            name = unique_id.split(".")[2] if unique_id.count(".") >= 2 else unique_id
            asset = observation.asset_key.to_user_string()
            self.report.failed_checks.append(FailedCheck(asset, name, severity, f"dbt test {status}", step))
        return True

    def _checked(self, counts: StageCounts, evaluation: Any, step: str) -> None:
        counts.checks += 1
        self.report.checks_evaluated += 1
        if evaluation.passed:
            return
        severity = getattr(evaluation.severity, "value", str(evaluation.severity))
        if severity == "WARN":
            counts.checks_warned += 1
        else:
            counts.checks_failed += 1
        self.report.failed_checks.append(
            FailedCheck(
                asset=evaluation.asset_key.to_user_string(),
                check=evaluation.check_name,
                severity=severity,
                description=(evaluation.description or "").strip().splitlines()[0] if evaluation.description else "",
                step=step,
            )
        )


def planned_steps(job: Any, asset_selection: list | None = None) -> list[str]:
    """The step keys a run of `job` (or of its `asset_selection`) will execute."""
    try:
        from dagster._core.execution.api import create_execution_plan

        target = job.get_subset(asset_selection=set(asset_selection)) if asset_selection else job
        return [step.key for step in create_execution_plan(target).get_steps_to_execute_in_topo_order()]
    except Exception:  # a newer Dagster: bars without totals, counts still right
        return []


def execute(
    job: Any,
    instance: Any,
    console: Console,
    asset_selection: list | None = None,
    log_path: Path | None = None,
) -> RunReport:
    """Run `job` in process with a bar per stage on `console`; what the summary needs comes back."""
    import uuid

    run_id = str(uuid.uuid4())  # Dagster's own run ids are uuid4 strings
    monitor = RunMonitor(planned_steps(job, asset_selection), console)
    instance.add_event_listener(run_id, monitor)
    with monitor:
        result = job.execute_in_process(
            instance=instance,
            raise_on_error=False,
            run_id=run_id,
            asset_selection=asset_selection,
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
        )
    report = monitor.report
    report.run_id, report.success, report.log_path = result.run_id, result.success, log_path
    if log_path is not None:
        report.dbt_warnings = dbt_warnings(log_path)
    return report


_DBT_WARNING = re.compile(r"\[(?:\x1b\[[0-9;]*m)?WARNING(?:\x1b\[[0-9;]*m)?\]\[(\w+)\]: ?(.*)")


def dbt_warnings(log_path: Path) -> list[str]:
    """dbt's own warnings in a run's log (`[WARNING][Name]: message`), once each by name."""
    seen: dict[str, str] = {}
    try:
        with open(log_path, encoding="utf-8", errors="replace") as log:
            for line in log:
                found = _DBT_WARNING.search(line)
                if found and found.group(1) not in seen:
                    seen[found.group(1)] = found.group(2).strip()
    except OSError:
        return []
    return [f"{name}: {message}" if message else name for name, message in seen.items()]


# --- the log file ---------------------------------------------------------------------------------


def run_log_path(home: Path, now: datetime | None = None) -> Path:
    stamp = (now or datetime.now(CST)).astimezone(CST).strftime("%Y%m%dT%H%M%S")
    return Path(home) / "logs" / f"run-{stamp}.log"


@contextmanager
def captured_output(log_path: Path) -> Iterator[Console]:
    """Send everything written to stdout and stderr (Python's and the process's) to `log_path` for the block;
    yields a console that still writes to the terminal, for the stage lines."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    width = Console(file=sys.stdout).width
    terminal = _terminal_file(sys.stdout)
    log = open(log_path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed in the finally below
    saved: dict[int, int] = {}
    for fd in (1, 2):
        try:
            saved[fd] = os.dup(fd)
            os.dup2(log.fileno(), fd)
        except OSError:
            saved.pop(fd, None)
    previous = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = log
    try:
        yield Console(file=terminal, width=width)
    finally:
        for stream in (log, terminal):
            with suppress(OSError, ValueError):
                stream.flush()
        sys.stdout, sys.stderr = previous
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        log.close()
        if terminal is not previous[0]:
            terminal.close()


def _terminal_file(stream: Any) -> Any:
    """A file for the terminal that survives fd 1 being pointed at the log: a duplicate of its descriptor, or
    the stream itself when it has none (a test's captured stdout)."""
    try:
        return os.fdopen(os.dup(stream.fileno()), "w", encoding="utf-8", buffering=1)
    except (AttributeError, OSError, ValueError):
        return stream


# --- the summary ----------------------------------------------------------------------------------


_WHERE = {
    "gx": "Data Docs (a page per contract), the scorecard",
    "dbt": "the run log, by the test's name; make docs",
    "tickets": "yiwang tickets changes --format table",
    "other": "the run log; the Dagster UI",
}
_TITLE = {
    "gx": "Great Expectations suites",
    "dbt": "dbt tests",
    "tickets": "ticket checks",
    "other": "other checks",
}


def short_path(path: Path | str | None) -> str:
    """A path as a person types it: relative to the working directory when it lies below it."""
    if path is None:
        return "(none)"
    if "://" in str(path):  # s3://bucket/prefix
        return str(path)
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def print_checks_and_warnings(console: Console, report: RunReport) -> None:
    """Every failed check by name, grouped by kind and severity, each group with where to look; then the warnings
    the steps logged (those the summary already shows, rejected batches and skipped assets, left out), each
    distinct message once with how many times it came."""
    failed = report.failed_checks
    if failed:
        console.print(
            f"[bold yellow]Failed checks ({len(failed)} of {report.checks_evaluated})[/]: "
            "department data problems, reported, never fatal"
        )
        groups: dict[str, list[FailedCheck]] = defaultdict(list)
        for check in failed:
            groups[check.kind].append(check)
        for kind in ("gx", "dbt", "tickets", "other"):
            for severity in ("ERROR", "WARN"):
                checks = sorted((c for c in groups.get(kind, []) if c.severity == severity), key=lambda c: c.asset)
                if checks:
                    names = ", ".join(_check_name(c) for c in checks)
                    console.print(
                        f"  {_TITLE[kind]}, {severity.lower()} ({len(checks)}) [dim]→ {_WHERE[kind]}[/]: {names}",
                        highlight=False,
                    )
    elif report.checks_evaluated:
        console.print(f"[green]all {report.checks_evaluated} checks passed[/]")
    warnings = _distinct(_new_warnings(report))
    if warnings or report.dbt_warnings:
        console.print(f"[bold yellow]Warnings ({len(warnings) + len(report.dbt_warnings)})[/] [dim]→ the run log[/]")
        for step, message, times in warnings:
            where = step if times == 1 else f"{step} and {times - 1} more"
            console.print(f"  {where}: {message}", overflow="ellipsis", no_wrap=True, highlight=False)
        for warning in report.dbt_warnings:
            console.print(f"  dbt: {warning}", overflow="ellipsis", no_wrap=True, highlight=False)


def _check_name(check: FailedCheck) -> str:
    if check.kind == "gx":  # bronze/gongan/household_registration -> gongan.household_registration
        return ".".join(check.asset.split("/")[1:3])
    if check.kind == "dbt":
        return check.check
    return f"{check.asset} {check.check}"


_SHOWN_AS_CHECKS = "Logging an `AssetObservation` instead of an `AssetCheckResult`"  # dagster-dbt, see _observed_test


def _new_warnings(report: RunReport) -> list[tuple[str, str]]:
    """The steps' warnings less what the summary shows anyway: rejected batches (bronze), skipped assets, and
    dagster-dbt's note on tests dbt ran by indirect selection (their results are among the checks)."""
    skipped_steps = {asset.replace("/", "__") for asset in report.skipped}
    return [
        (step, message)
        for step, message in report.warnings
        if step not in skipped_steps
        and not (stage_of(step) == "bronze" and " rejected: " in message)
        and not message.startswith(_SHOWN_AS_CHECKS)
    ]


def _distinct(warnings: list[tuple[str, str]]) -> list[tuple[str, str, int]]:
    """Each message once (by its first 40 characters: the same warning about different tests or tables), with the
    first step that logged it and how many times it came."""
    kept: dict[str, list] = {}
    for step, message in warnings:
        first = message.splitlines()[0]
        entry = kept.setdefault(first[:40], [step, first, 0])
        entry[2] += 1
    return [(step, first, times) for step, first, times in kept.values()]


def print_failures(console: Console, report: RunReport) -> None:
    """Steps that raised (the platform failed) with their own error, and what was skipped."""
    for step, cause in report.failed_steps.items():
        console.print(f"[red]step failed:[/] {step}: {cause}", highlight=False)
    if report.not_run:
        console.print(f"[red]not run[/] (an upstream step failed): {len(report.not_run)} steps", highlight=False)
    for asset, reason in report.skipped.items():  # in full: ops/runs and the run log
        console.print(f"[yellow]skipped[/] {asset}: {reason}", overflow="ellipsis", no_wrap=True, highlight=False)
