"""Random bytes and random rows thrown at the readers: never a crash, always a ledger entry."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestion.bronze import ingest_batch
from ingestion.contract import Contract, batch_contracts
from ingestion.landing import BatchRejected, find_batches, open_batch
from ingestion.ledger import read_ledger
from ingestion.readers import NotInRuns, ReadResult, read_part, read_part_runs
from ingestion.warehouse import Warehouse
from tests.landing_kit import write_batch

CONTRACTS = sorted(batch_contracts())
TEXT_CONTRACTS = [c for c in CONTRACTS if batch_contracts()[c].file_format in ("csv", "jsonl")]
FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))


def _one_batch(landing: Path, warehouse: Warehouse) -> str:
    (batch,) = find_batches(landing)
    outcome = ingest_batch(batch, warehouse)
    ledger = read_ledger(warehouse)
    assert ledger.height == 1, "every complete batch leaves exactly one ledger row"
    row = ledger.row(0, named=True)
    assert row["status"] == outcome.status
    assert row["status"] == "loaded" or row["reason"], "a rejection always says why"
    return outcome.status


@FUZZ
@given(contract_id=st.sampled_from(CONTRACTS), body=st.binary(max_size=2000), claimed_rows=st.integers(0, 5))
def test_random_bytes(contract_id, body, claimed_rows):
    with tempfile.TemporaryDirectory() as tmp:
        landing, warehouse = Path(tmp) / "landing", Warehouse.at(Path(tmp) / "wh")
        directory = write_batch(landing, contract_id, "20261101T000000", [{}] * claimed_rows, raw_body=body)
        manifest = json.loads((directory / "_manifest.json").read_text())
        manifest["files"][0]["sha256"] = hashlib.sha256(body).hexdigest()
        (directory / "_manifest.json").write_text(json.dumps(manifest))
        _one_batch(landing, warehouse)


_VALUE = st.one_of(
    st.none(),
    st.text(max_size=30),
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=True).map(str),
    st.sampled_from(["2026-11-01", "2026-11-01T02:00:00+08:00", "true", "１２３", "440605198001010011", "NaN"]),
)


def _rows(data: st.DataObject, contract: Contract, min_size: int = 0, max_size: int = 12) -> list[dict]:
    """Rows of random values (text, numbers, dates, odd forms) under the contract's column names."""
    values = st.fixed_dictionaries({c: _VALUE for c in contract.column_names})
    return data.draw(st.lists(values, min_size=min_size, max_size=max_size))


@FUZZ
@given(contract_id=st.sampled_from(CONTRACTS), data=st.data())
def test_random_rows(contract_id, data):
    contract = batch_contracts()[contract_id]
    rows = _rows(data, contract, max_size=8)
    with tempfile.TemporaryDirectory() as tmp:
        landing, warehouse = Path(tmp) / "landing", Warehouse.at(Path(tmp) / "wh")
        write_batch(landing, contract_id, "20261101T000000", rows, mode="incremental")
        _one_batch(landing, warehouse)


@FUZZ
@given(manifest=st.one_of(st.binary(max_size=300), st.dictionaries(st.text(max_size=10), st.text(max_size=10))))
def test_random_manifests(manifest):
    with tempfile.TemporaryDirectory() as tmp:
        landing, warehouse = Path(tmp) / "landing", Warehouse.at(Path(tmp) / "wh")
        directory = write_batch(landing, "gongan.household_registration", "20261101T000000", [])
        raw = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
        (directory / "_manifest.json").write_bytes(raw)
        assert _one_batch(landing, warehouse) == "rejected"


def _in_runs_or_whole(landing: Path, max_rows: int) -> tuple[ReadResult | None, ReadResult | None]:
    """One part read whole and in runs (concatenated); None where that read refuses the part."""
    (batch_dir,) = find_batches(landing)
    batch = open_batch(batch_dir, checksums=False)
    (part,) = batch.parts
    try:
        whole: ReadResult | None = read_part(batch, part)
    except BatchRejected:
        whole = None
    try:
        runs = list(read_part_runs(batch, part, max_rows))
    except (NotInRuns, BatchRejected):
        try:  # as bronze does: a CSV part the fast reader gives up is read in runs by the exact one
            runs = list(read_part_runs(batch, part, max_rows, exact=True))
        except (NotInRuns, BatchRejected):
            return whole, None
    assert all(run.frame.height <= max_rows for run in runs) or len(runs) == 1  # malformed records come beside
    frame = pl.concat([run.frame for run in runs], how="vertical_relaxed")
    return whole, ReadResult(frame, [m for run in runs for m in run.malformed])


def _same_read(whole: ReadResult | None, in_runs: ReadResult | None) -> None:
    if in_runs is None:
        return  # the batch lands whole, which decides it
    assert whole is not None, "runs never take what the whole read refuses"
    assert in_runs.frame.equals(whole.frame)
    assert in_runs.malformed == whole.malformed


@FUZZ
@given(contract_id=st.sampled_from(TEXT_CONTRACTS), data=st.data(), max_rows=st.integers(1, 4))
def test_random_rows_read_in_runs_are_the_part_read_whole(contract_id, data, max_rows):
    contract = batch_contracts()[contract_id]
    rows = _rows(data, contract)
    with tempfile.TemporaryDirectory() as tmp:
        write_batch(Path(tmp), contract_id, "20261101T000000", rows, mode="incremental")
        _same_read(*_in_runs_or_whole(Path(tmp), max_rows))


@FUZZ
@given(
    contract_id=st.sampled_from(TEXT_CONTRACTS),
    lines=st.lists(st.one_of(st.text(max_size=40), st.binary(max_size=40).map(lambda b: b.decode("latin-1")))),
    max_rows=st.integers(1, 3),
    claimed_rows=st.integers(0, 12),
)
def test_random_lines_read_in_runs_are_the_part_read_whole(contract_id, lines, max_rows, claimed_rows):
    contract = batch_contracts()[contract_id]
    header = ",".join(contract.column_names) if contract.file_format == "csv" else ""
    body = "\n".join([header, *lines]).encode(contract.encoding, errors="replace")
    with tempfile.TemporaryDirectory() as tmp:
        write_batch(Path(tmp), contract_id, "20261101T000000", [{}] * claimed_rows, raw_body=body)
        _same_read(*_in_runs_or_whole(Path(tmp), max_rows))


CSV_CONTRACTS = [c for c in TEXT_CONTRACTS if batch_contracts()[c].file_format == "csv"]


@FUZZ
@given(contract_id=st.sampled_from(CSV_CONTRACTS), data=st.data(), max_rows=st.integers(1, 4))
def test_random_rows_with_malformed_lines_read_in_runs_are_the_part_read_whole(contract_id, data, max_rows):
    contract = batch_contracts()[contract_id]
    rows = _rows(data, contract, min_size=1)
    wrong = data.draw(st.lists(st.integers(1, 40), min_size=1, max_size=3))  # fields on each malformed line
    with tempfile.TemporaryDirectory() as tmp:
        directory = write_batch(Path(tmp), contract_id, "20261101T000000", rows, mode="incremental")
        part = directory / "part-00000.csv"
        lines = part.read_bytes().split(b"\n")
        for fields in wrong:
            at = data.draw(st.integers(1, len(lines) - 1))
            lines.insert(at, b",".join([b"x"] * (fields if fields != len(contract.column_names) else fields + 1)))
        part.write_bytes(b"\n".join(lines))
        manifest = json.loads((directory / "_manifest.json").read_text())
        manifest["files"][0].update(rows=len(rows) + len(wrong), sha256=hashlib.sha256(part.read_bytes()).hexdigest())
        (directory / "_manifest.json").write_text(json.dumps(manifest))
        _same_read(*_in_runs_or_whole(Path(tmp), max_rows))
