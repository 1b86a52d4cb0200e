"""The quality results built from validation's decisions equal Great Expectations' own, on real batches.

Every complete batch of a small demo landing zone (with its planted defects: missing and unparseable values,
broken patterns, values outside the allowed set or range, duplicate keys) is validated once; the suite then runs
on GX's pandas engine (the reference) and is derived from the validation (quality/decided.py). The rows they give
for `ops/quality_results` must be identical, sample values included.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ingestion.landing import BatchRejected, find_batches, open_batch
from ingestion.readers import read_batch
from ingestion.validation import validate
from quality.decided import decided_results
from quality.runner import _row, run_suite


def _order(row: dict) -> tuple[str, str]:
    """GX returns the results in an order of its own; the rows of ops/quality_results have no order."""
    return (row["expectation"], row["kwargs"])


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from demo_data import generate_landing_zone

    root = tmp_path_factory.mktemp("decided")
    generate_landing_zone(root / "landing", scale=0.05, seed=3, progress=False)
    return root / "landing"


def test_decided_results_equal_great_expectations_on_every_demo_batch(landing: Path) -> None:
    compared, with_defects = 0, 0
    for batch_dir in find_batches(landing):
        if not batch_dir.is_complete:
            continue
        try:
            batch = open_batch(batch_dir)
        except BatchRejected:
            continue
        if batch.contract.is_image or batch.contract.is_stream:
            continue
        contract = batch.contract
        try:
            validated = validate(read_batch(batch), contract)
        except BatchRejected:
            continue
        frame = validated.typed.select([c for c in contract.column_names if c in validated.typed.columns])
        reference = sorted((_row(contract, r) for r in run_suite(contract, frame)), key=_order)
        derived = sorted((_row(contract, r) for r in decided_results(contract, validated)), key=_order)
        assert len(derived) == len(reference)
        for mine, theirs in zip(derived, reference, strict=True):
            assert mine == theirs, f"{contract.id} {batch.batch_id}"
        compared += 1
        with_defects += any(not r["success"] for r in reference)
    assert compared >= 25 and with_defects >= 5
