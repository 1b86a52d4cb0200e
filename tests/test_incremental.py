"""Incremental runs (issue 16): nothing new does nothing; one new batch rebuilds what depends on it, and the result
is the same as a run from scratch.

Three real `yiwang run`s, in process, on a copy of the session's demo landing zone (tests/conftest.py: demo_run):
(1) a full run with the newest non-empty hotline batch held back and no assistance-cases batch at all (the
cross-check's input: the run must skip the cross-check and nothing else), (2) a run with nothing new, (3) the
held-back batches delivered. Silver and gold of (3) are compared by content, row by row, with the session's demo
run: a run from scratch on the complete landing zone, as of the same date, with the same pseudonym key.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from ingestion.landing import find_batches
from ingestion.warehouse import Warehouse
from orchestration.cli import app
from orchestration.incremental import RUN_STATE, code_fingerprint, table_versions
from tests.conftest import DemoRun, environment_kept

pytestmark = pytest.mark.slow

HELD_BACK_CONTRACT = "zhengshu.hotline_appeals"
CROSSCHECK_INPUT = "minzheng.assistance_cases"  # every batch held back: the cross-check cannot judge anything
# Columns that say when the platform did something, not what the data is: they differ between two runs by design.
PROCESSING_TIMES = {"_ingested_at", "ingested_at", "built_at", "derived_at", "scored_at", "processed_at", "run_id"}


def _run(home: Path, landing: Path, demo_run: DemoRun) -> tuple[str, float]:
    started = time.perf_counter()
    settings = demo_run.settings()
    with environment_kept():  # the module's fixture runs before any test's own environment guard
        result = CliRunner().invoke(
            app,
            ["run", "--landing", str(landing), "--warehouse", str(home / "warehouse"), "--as-of", demo_run.as_of],
            env=_env(home, YIWANG_PSEUDONYM_KEY=settings["YIWANG_PSEUDONYM_KEY"]),
        )
    assert result.exit_code == 0, result.output[-3000:]
    return result.output, time.perf_counter() - started


def _env(home: Path, **extra: str) -> dict[str, str]:
    return {"YIWANG_HOME": str(home), "DAGSTER_HOME": "", **extra}


def _rows(batch: Path) -> int:
    """Records a batch delivers by its manifest (0 without one): the demo's hourly contracts have empty hours."""
    manifest = batch / "_manifest.json"
    return sum(f["rows"] for f in json.loads(manifest.read_text())["files"]) if manifest.is_file() else 0


@pytest.fixture(scope="module")
def landing(demo_run: DemoRun, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[Path, Path]]]:
    """A copy of the demo landing zone with its newest non-empty hotline batch and every assistance-cases batch
    moved aside: (landing zone, [(held-back folder, where it belongs)]), delivered later."""
    root = tmp_path_factory.mktemp("incremental")
    zone = root / "landing"
    shutil.copytree(demo_run.landing, zone)
    batches = find_batches(zone)
    newest = max(
        (b for b in batches if b.contract_id == HELD_BACK_CONTRACT and _rows(b.path) > 0), key=lambda b: b.sort_key
    )
    cases = next(b for b in batches if b.contract_id == CROSSCHECK_INPUT).path.parent
    held: list[tuple[Path, Path]] = []
    for folder in (newest.path, cases):
        aside = root / "held_back" / folder.name
        aside.parent.mkdir(exist_ok=True)
        shutil.move(folder, aside)
        held.append((aside, folder))
    return zone, held


@pytest.fixture(scope="module")
def incremental(
    landing: tuple[Path, list[tuple[Path, Path]]], demo_run: DemoRun, tmp_path_factory: pytest.TempPathFactory
) -> dict:
    zone, held = landing
    home = tmp_path_factory.mktemp("home_incremental")
    warehouse = Warehouse.at(home / "warehouse")
    first, _ = _run(home, zone, demo_run)
    before = table_versions(warehouse)
    first_tickets = pl.from_arrow(warehouse.table("gold/dispatch/tickets").to_pyarrow_table(columns=["source"]))
    first_run = warehouse.table("ops/runs").to_pyarrow_table().to_pylist()[-1]
    again, again_seconds = _run(home, zone, demo_run)
    after_again = table_versions(warehouse)
    for aside, folder in held:
        shutil.move(aside, folder)
    delivered, _ = _run(home, zone, demo_run)
    return {
        "home": home,
        "outputs": (first, again, delivered),
        "again_seconds": again_seconds,
        "versions": (before, after_again, table_versions(warehouse)),
        "first_run": (first_tickets, first_run),
    }


def test_a_missing_crosscheck_input_skips_the_crosscheck_and_nothing_else(incremental: dict, demo_run: DemoRun) -> None:
    """Without any assistance-cases batch the cross-check cannot judge anything: the run says so, keeps going,
    builds every other feed's tickets and succeeds (a department's data is never fatal)."""
    first, _, _ = incremental["outputs"]
    tickets, run = incremental["first_run"]
    assert f"skipped gold/social_assistance/crosscheck_flags: cross-check as of {demo_run.as_of}" in first
    assert CROSSCHECK_INPUT in first
    assert {"hotline", "grid_report", "enterprise_appeal"} <= set(tickets["source"].to_list())
    assert "crosscheck" not in set(tickets["source"].to_list())
    assert run["status"] == "succeeded" and CROSSCHECK_INPUT in run["skipped"]


def test_a_run_with_nothing_new_does_nothing_in_seconds(incremental: dict) -> None:
    first, again, _ = incremental["outputs"]
    assert "full run" in first and "no earlier run" in first
    assert "nothing new" in again and incremental["again_seconds"] < 10
    before, after_again, _ = incremental["versions"]
    assert after_again == before  # not one table got a new version


def test_one_new_batch_rebuilds_only_what_depends_on_it(incremental: dict) -> None:
    _, _, delivered = incremental["outputs"]
    assert "incremental run" in delivered and HELD_BACK_CONTRACT in delivered and CROSSCHECK_INPUT in delivered
    _, before, after = incremental["versions"]
    changed = {table for table in after if after[table] != before.get(table)}
    assert "silver/zhengshu/hotline_appeals" in changed and "gold/urban/events" in changed
    assert "gold/social_assistance/crosscheck_flags" in changed
    untouched = ("silver/gongan/household_registration", "bronze/renshe/social_insurance", "gold/party/org_tree")
    assert not changed & set(untouched), changed
    assert RUN_STATE not in changed


def _content(warehouse: Warehouse, table: str) -> pl.DataFrame:
    frame = pl.from_arrow(warehouse.table(table).to_pyarrow_table())
    assert isinstance(frame, pl.DataFrame)
    kept = [c for c in frame.columns if c not in PROCESSING_TIMES]
    return frame.select(kept).sort(kept, nulls_last=True)


def test_the_incremental_result_equals_a_run_from_scratch(incremental: dict, demo_run: DemoRun) -> None:
    built, fresh = Warehouse.at(incremental["home"] / "warehouse"), Warehouse.at(demo_run.warehouse)
    tables = sorted(t for t in table_versions(fresh) if t.split("/")[0] in ("silver", "gold"))
    assert set(tables) == {t for t in table_versions(built) if t.split("/")[0] in ("silver", "gold")}
    differing = [t for t in tables if not _content(built, t).equals(_content(fresh, t))]
    assert differing == []


def test_the_code_fingerprint_reads_code_and_configuration_and_skips_dbt_output(tmp_path: Path) -> None:
    models = tmp_path / "dbt_project" / "models"
    models.mkdir(parents=True)
    (models / "a.sql").write_text("select 1")
    (tmp_path / "ingestion").mkdir()
    (tmp_path / "ingestion" / "x.py").write_text("X = 1\n")
    first = code_fingerprint(tmp_path)
    for skipped in ("dbt_project/target/run", "dbt_project/logs", "ingestion/__pycache__"):
        (tmp_path / skipped).mkdir(parents=True)
        (tmp_path / skipped / "compiled.sql").write_text("select 2")
    (tmp_path / "ingestion" / "notes.txt").write_text("not code")
    assert code_fingerprint(tmp_path) == first
    (models / "a.sql").write_text("select 3")
    assert code_fingerprint(tmp_path) != first
