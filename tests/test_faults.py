"""The batch path under faults: held snapshots, kills at every commit boundary, one run at a time."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from landing_kit import write_batch
from test_object_storage import s3_endpoint  # noqa: F401 (moto's S3 server on loopback, a fixture)

from ingestion.contract import get_contract
from ingestion.ledger import SNAPSHOT_SHRINK, read_ledger
from ingestion.pipeline import ingest_contract
from ingestion.silver import apply_silver, silver_table
from ingestion.warehouse import Warehouse
from orchestration.resources import PlatformResource
from orchestration.run_lock import LOCKED, RunLockHeld, run_lock
from tests.conftest import DemoRun, platform_env

REPO = Path(__file__).resolve().parent.parent
CASES = "minzheng.assistance_cases"
KEY = b"faults-test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def demo_landing(demo_run: DemoRun) -> Path:
    """The session's small demo landing zone (seed 3, 1,000 residents): tests copy what they change."""
    return demo_run.landing


def _latest_part(landing: Path, contract_id: str) -> tuple[str, bytes]:
    contract = get_contract(contract_id)
    folder = landing / contract.source_level / contract.department / contract.dataset
    latest = sorted(p for p in folder.iterdir() if (p / "_manifest.json").exists())[-1]
    return latest.name, (latest / "part-00000.csv").read_bytes()


def _snapshot(landing: Path, batch_id: str, body_lines: list[bytes], header: bytes, **manifest: object) -> None:
    body = b"".join([header, *body_lines])
    write_batch(
        landing,
        CASES,
        batch_id,
        [{}] * len(body_lines),
        raw_body=body,
        mode="snapshot",
        manifest_overrides=manifest or None,
    )


def _silver_rows(warehouse: Warehouse) -> int:
    return warehouse.table(silver_table(get_contract(CASES))).to_pyarrow_table(columns=["case_id"]).num_rows


def test_empty_and_shrinking_snapshots_are_held_then_confirmed(demo_landing: Path, tmp_path: Path) -> None:
    from ingestion.pseudonym import Pseudonymiser

    landing = tmp_path / "landing"
    shutil.copytree(demo_landing, landing)
    warehouse = Warehouse.at(tmp_path / "warehouse")
    pseudonymiser = Pseudonymiser(KEY)
    contract = get_contract(CASES)
    ingest_contract(contract, landing, warehouse)
    apply_silver(contract, warehouse, pseudonymiser)
    before = _silver_rows(warehouse)
    _, part = _latest_part(landing, CASES)
    header, *lines = part.splitlines(keepends=True)
    assert before > 20 and len(lines) >= before

    # An export that failed upstream: an empty snapshot. Held, silver untouched.
    _snapshot(landing, "20261130T030000", [], header)
    # A snapshot with a third of the rows: held too.
    _snapshot(landing, "20261201T030000", lines[: len(lines) // 3], header)
    outcomes = {o.batch_id: o for o in ingest_contract(contract, landing, warehouse)}
    for batch_id in ("20261130T030000", "20261201T030000"):
        assert outcomes[batch_id].status == "rejected", outcomes[batch_id]
    assert "empty snapshot would delete every row" in outcomes["20261130T030000"].reason
    assert (
        "would delete" in outcomes["20261201T030000"].reason
        and "yiwang batches confirm" in outcomes["20261201T030000"].reason
    )
    ledger = read_ledger(warehouse).filter(pl.col("batch_id").is_in(["20261130T030000", "20261201T030000"]))
    assert set(ledger["rule"]) == {SNAPSHOT_SHRINK}
    apply_silver(contract, warehouse, pseudonymiser)
    assert _silver_rows(warehouse) == before
    assert ingest_contract(contract, landing, warehouse) == []  # held batches stay decided until confirmed

    # A data officer confirms the shrinking one: the next ingestion loads it, and the ledger says who and why.
    env = platform_env(tmp_path / "home", USER="officer-li")
    confirm = [sys.executable, "-m", "orchestration.cli", "batches", "confirm", CASES]
    common = ["--warehouse", str(warehouse.root)]

    def yiwang(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*confirm, *args, *common], env=env, capture_output=True, text=True, timeout=120)

    done = yiwang("20261201T030000", "--reason", "cases closed in the annual review")
    assert done.returncode == 0, done.stderr
    refused = yiwang("20261299T000000", "--reason", "x")
    assert refused.returncode == 2 and "no batch" in refused.stderr and "Traceback" not in refused.stderr
    outcomes = {o.batch_id: o for o in ingest_contract(contract, landing, warehouse)}
    assert outcomes["20261201T030000"].status == "loaded"
    assert "confirmed by officer-li (cases closed in the annual review)" in outcomes["20261201T030000"].reason
    apply_silver(contract, warehouse, pseudonymiser)
    assert _silver_rows(warehouse) == len(lines) // 3

    # A sender who knows: confirm_shrink in the manifest loads at once.
    _snapshot(landing, "20261202T030000", lines[:5], header, confirm_shrink=True)
    outcomes = {o.batch_id: o for o in ingest_contract(contract, landing, warehouse)}
    assert outcomes["20261202T030000"].status == "loaded"
    assert "confirmed by the sender" in outcomes["20261202T030000"].reason


KILLER = """
import os, sys
from pathlib import Path
import ingestion.ledger as ledger
from ingestion.contract import get_contract
from ingestion.pipeline import ingest_contract
from ingestion.warehouse import Warehouse
from quality.runner import QualityRecorder

limit, commits = int(sys.argv[3]), [0]
original = ledger.append_frame

def append_then_die(*args, **kwargs):
    written = original(*args, **kwargs)
    if written:
        commits[0] += 1
        if commits[0] == limit:
            os._exit(137)  # as a kill: no cleanup, no flush
    return written

ledger.append_frame = append_then_die
warehouse = Warehouse.at(sys.argv[2])
ingest_contract(get_contract(sys.argv[4]), Path(sys.argv[1]), warehouse, on_validated=QualityRecorder(warehouse))
print("commits", commits[0])
"""


def _ingest(landing: Path, warehouse: Path, contract_id: str, kill_after: int = 0) -> subprocess.CompletedProcess:
    # A script file, not `python -c`: pyspark (imported by Great Expectations) takes a main module without a
    # file for a doctest run and exits.
    script = warehouse.parent / "ingest_and_die.py"
    script.write_text(KILLER, encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(script), str(landing), str(warehouse), str(kill_after), contract_id],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _contents(warehouse: Path) -> dict[str, list]:
    """Every table the batch path writes, as sorted rows without the columns that hold wall-clock times."""
    from deltalake import DeltaTable

    out = {}
    for log in sorted(warehouse.glob("**/_delta_log")):
        table = pl.from_arrow(DeltaTable(str(log.parent)).to_pyarrow_table())
        clocks = [c for c in table.columns if c in ("processed_at", "quarantined_at", "run_at", "_ingested_at")]
        rows = table.drop(clocks)
        out[log.parent.relative_to(warehouse).as_posix()] = sorted(map(str, rows.rows()))
    return out


def test_a_kill_at_every_commit_boundary_then_a_normal_run_equals_a_clean_run(
    demo_landing: Path, tmp_path: Path
) -> None:
    contract_id = "zhengshu.grid_registry"  # snapshots with quarantined rows and quality results
    # Its first two batches (each kill costs a process start): every commit of each is a boundary.
    contract = get_contract(contract_id)
    folder = Path(contract.source_level) / contract.department / contract.dataset
    landing = tmp_path / "landing"
    for batch in sorted(p.name for p in (demo_landing / folder).iterdir())[:2]:
        shutil.copytree(demo_landing / folder / batch, landing / folder / batch)
    clean = tmp_path / "clean"
    done = _ingest(landing, clean, contract_id)
    assert done.returncode == 0, done.stderr
    commits = int(done.stdout.split()[-1])
    assert commits >= 7  # quality results, bronze, (quarantine,) ledger of each of the two batches
    expected = _contents(clean)
    assert {"ops/quality_results", "ops/batch_ledger", "quarantine/rows"} <= set(expected)
    for boundary in range(1, commits + 1):
        killed = tmp_path / f"killed-{boundary}"
        died = _ingest(landing, killed, contract_id, kill_after=boundary)
        assert died.returncode == 137, (boundary, died.stderr[-2000:])
        again = _ingest(landing, killed, contract_id)
        assert again.returncode == 0, again.stderr
        assert _contents(killed) == expected, f"after a kill at commit {boundary} of {commits}"


HOLDER = """
import sys, time
from orchestration.run_lock import run_lock
with run_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def test_one_run_at_a_time(tmp_path: Path) -> None:
    warehouse, home = str(tmp_path / "warehouse"), tmp_path / "home"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, warehouse], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockHeld, match=rf"pid {holder.pid} on .* since 20\d\d-"), run_lock(warehouse):
            pass
        env = platform_env(home)
        (tmp_path / "landing").mkdir()
        second = subprocess.run(
            [
                str(Path(sys.executable).parent / "yiwang"),
                "run",
                "--landing",
                str(tmp_path / "landing"),
                "--warehouse",
                warehouse,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert second.returncode == LOCKED, second.stdout + second.stderr
        assert second.stderr.count("\n") == 1 and "another run holds the warehouse" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # A killed run leaves no stale lock: the kernel released it with the process.
    with run_lock(warehouse) as path:
        assert json.loads(Path(path).read_text())["pid"] == os.getpid()
    time.sleep(0)


def test_a_failed_steps_own_message_reaches_the_console() -> None:
    from types import SimpleNamespace

    from orchestration.cli import root_cause

    inner = SimpleNamespace(
        message="ValueError: pseudonym key file /x/pseudonym.key is empty; delete it\n",
        cls_name="ValueError",
        cause=None,
    )
    wrapper = SimpleNamespace(
        message='dagster._core.errors.DagsterExecutionStepExecutionError: Error occurred while executing op "silver"\n',
        cls_name="DagsterExecutionStepExecutionError",
        cause=inner,
    )
    assert root_cause(wrapper) == "ValueError: pseudonym key file /x/pseudonym.key is empty; delete it"


def _yiwang_run(
    landing: Path, home: Path, cwd: Path, as_of: str = "2026-11-15", **settings: str
) -> subprocess.CompletedProcess:
    """`yiwang run` on `landing` as of the demo date in a fresh home, as `make run` would; it must exit 0."""
    env = platform_env(home, COLUMNS="200", **settings)
    env.pop("DAGSTER_HOME", None)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "yiwang"), "run", "--landing", str(landing), "--as-of", as_of],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_smaller_faults_each_get_their_own_reason(tmp_path: Path) -> None:
    from ingestion.ledger import read_quarantine
    from tests.conftest import person

    landing, warehouse = tmp_path / "landing", Warehouse.at(tmp_path / "warehouse")
    households = "gongan.household_registration"
    header = ",".join(get_contract(households).column_names).encode("gb18030")
    # A field of a million characters: the platform's bound on any field quarantines the record.
    rows = [person(i) for i in range(30)]
    rows[7]["address"] = "南海区" * 333_334
    write_batch(landing, households, "20261101T000000", rows)
    # A quote left open: named as such, not as a row-count mismatch.
    write_batch(
        landing, households, "20261102T000000", [{}, {}], raw_body=header + b'\n"440605,x\n1,2\n', mode="incremental"
    )
    # A CSV part without even its header row.
    write_batch(landing, households, "20261103T000000", [], raw_body=b"", mode="incremental")
    # A part name that climbs out of the batch folder.
    write_batch(
        landing,
        households,
        "20261104T000000",
        [person(1)],
        manifest_overrides={"files": [{"name": "../../etc/passwd", "rows": 1, "sha256": "0" * 64}]},
    )
    outcomes = {o.batch_id: o for o in ingest_contract(get_contract(households), landing, warehouse)}
    assert outcomes["20261101T000000"].status == "loaded" and outcomes["20261101T000000"].rows_quarantined == 1
    long_field = read_quarantine(warehouse).filter(pl.col("rule") == "max_length")
    assert long_field.height == 1 and "more than 65,536 bytes" in long_field["detail"][0]
    assert "a quote opened on line 2 is never closed" in outcomes["20261102T000000"].reason
    assert "the header row is missing (the file is empty)" in outcomes["20261103T000000"].reason
    assert "is not a plain file name inside the batch folder" in outcomes["20261104T000000"].reason


@pytest.mark.slow
def test_two_clean_runs_publish_the_same_gold(demo_run: DemoRun, tmp_path: Path) -> None:
    """Same landing zone, same as-of date, same pseudonym key, two fresh warehouses (the session's demo run and
    one more): every gold table holds the same rows (only the run ids differ), floats included."""
    from deltalake import DeltaTable

    settings = demo_run.settings()
    as_of = settings.pop("YIWANG_AS_OF")
    _yiwang_run(demo_run.landing, tmp_path / "second", tmp_path, as_of=as_of, **settings)
    first, second = demo_run.warehouse, tmp_path / "second" / "warehouse"
    tables = sorted(log.parent.relative_to(first) for log in first.glob("gold/**/_delta_log"))
    assert len(tables) > 20
    for table in tables:
        a = pl.from_arrow(DeltaTable(str(first / table)).to_pyarrow_table())
        b = pl.from_arrow(DeltaTable(str(second / table)).to_pyarrow_table())
        a, b = (t.drop([c for c in t.columns if c == "run_id"]) for t in (a, b))
        assert a.height == b.height and a.columns == b.columns, table
        assert sorted(map(str, a.rows())) == sorted(map(str, b.rows())), table


@pytest.mark.usefixtures("s3_endpoint")
def test_one_run_at_a_time_on_an_object_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lease on S3: a second run is refused while the holder renews; once a killed holder's lease has
    expired, the next run takes it over."""
    import boto3

    monkeypatch.setenv("YIWANG_RUN_LOCK_TTL_S", "3")
    warehouse = "s3://yiwang/district-440605"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, warehouse], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        time.sleep(2)  # past two renewals: the lease is kept alive by its holder
        with pytest.raises(RunLockHeld, match=rf"pid {holder.pid} on "), run_lock(warehouse):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    time.sleep(3.5)  # the killed holder's lease expires
    with run_lock(warehouse) as where:
        assert where == "s3://yiwang/district-440605/ops/run.lock"
    s3 = boto3.client("s3")
    assert s3.list_objects_v2(Bucket="yiwang", Prefix="district-440605/ops/").get("KeyCount", 0) == 0


def test_a_run_started_from_dagster_takes_the_same_lock(tmp_path: Path) -> None:
    """The platform resource holds the run lock for a whole Dagster run (UI, sensor, schedule)."""
    from dagster import asset, materialize

    @asset
    def touches_the_warehouse(platform: PlatformResource) -> None:
        assert platform.get_warehouse()

    warehouse = str(tmp_path / "warehouse")
    resource = PlatformResource(
        landing=str(tmp_path / "landing"), warehouse=warehouse, reports_dir=str(tmp_path), key_file=str(tmp_path / "k")
    )
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, warehouse], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        refused = materialize([touches_the_warehouse], resources={"platform": resource}, raise_on_error=False)
        assert not refused.success
        failure = next(e for e in refused.all_events if e.is_failure)
        assert "another run holds the warehouse" in str(failure.event_specific_data)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert materialize([touches_the_warehouse], resources={"platform": resource}).success
