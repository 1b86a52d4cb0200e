"""A process killed in the middle of a batch leaves nothing visible; the next run completes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest

from ingestion.contract import get_contract
from ingestion.ledger import read_ledger, read_quarantine
from ingestion.pipeline import ingest_contract
from ingestion.silver import apply_silver
from ingestion.warehouse import Warehouse
from tests.conftest import person
from tests.landing_kit import write_batch

HOUSEHOLDS = get_contract("gongan.household_registration")
REPO = Path(__file__).resolve().parent.parent

# Runs the real ingestion in a child process and SIGKILLs it right before the named write.
KILLER = textwrap.dedent(
    """
    import os, signal, sys
    import ingestion.bronze as bronze
    import ingestion.ledger as ledger
    from ingestion.contract import get_contract
    from ingestion.pipeline import ingest_contract
    from ingestion.warehouse import Warehouse

    target = sys.argv[3]
    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)
    if target == "ledger":
        bronze.write_ledger = die
    else:
        bronze.write_quarantine = die
    ingest_contract(get_contract("gongan.household_registration"), __import__("pathlib").Path(sys.argv[1]),
                    Warehouse.at(sys.argv[2]))
    """
)


def _rows(warehouse: Warehouse, table: str, drop: list[str]) -> list[tuple]:
    frame = pl.from_arrow(warehouse.table(table).to_pyarrow_table()).drop(drop)
    return sorted(frame.rows(), key=str)


def _state(warehouse: Warehouse) -> dict:
    return {
        "bronze": _rows(warehouse, "bronze/gongan/household_registration", ["_ingested_at"]),
        "quarantine": _rows(warehouse, "quarantine/rows", ["quarantined_at"]),
        "ledger": _rows(warehouse, "ops/batch_ledger", ["processed_at"]),
    }


@pytest.mark.parametrize("kill_before", ["quarantine", "ledger"])
def test_killed_mid_batch_then_rerun_equals_clean_run(tmp_path, kill_before, pseudonymiser):
    landing = tmp_path / "landing"
    rows = [person(i) for i in range(50)] + [person(77, gender="x")]
    write_batch(landing, HOUSEHOLDS.id, "20261001T020000", rows)
    write_batch(landing, HOUSEHOLDS.id, "20261101T020000", rows[10:])

    crashed = Warehouse.at(tmp_path / "crashed")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.run(
        [sys.executable, "-c", KILLER, str(landing), crashed.root, kill_before],
        env=env,
        cwd=REPO,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL
    # Nothing of the interrupted batch is visible downstream: the ledger does not call it loaded,
    # so silver does not apply it.
    assert read_ledger(crashed).height == 0
    assert apply_silver(HOUSEHOLDS, crashed, pseudonymiser).action == "unchanged"

    outcomes = ingest_contract(HOUSEHOLDS, landing, crashed)
    assert [o.status for o in outcomes] == ["loaded", "loaded"]
    clean = Warehouse.at(tmp_path / "clean")
    ingest_contract(HOUSEHOLDS, landing, clean)
    assert _state(crashed) == _state(clean)
    assert read_quarantine(crashed).height == 2  # once per batch, not twice
