"""Random bytes and random rows thrown at the readers: never a crash, always a ledger entry."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestion.bronze import ingest_batch
from ingestion.contract import batch_contracts
from ingestion.landing import find_batches
from ingestion.ledger import read_ledger
from ingestion.warehouse import Warehouse
from tests.landing_kit import write_batch

CONTRACTS = sorted(batch_contracts())
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


@FUZZ
@given(contract_id=st.sampled_from(CONTRACTS), data=st.data())
def test_random_rows(contract_id, data):
    contract = batch_contracts()[contract_id]
    rows = data.draw(
        st.lists(st.fixed_dictionaries({c: _VALUE for c in contract.column_names}), min_size=0, max_size=8)
    )
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
