"""The warehouse root may be an S3 URI: ingestion and silver against moto's S3 server on loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import boto3
import polars as pl
import pytest

from ingestion.contract import get_contract
from ingestion.ledger import read_ledger, read_quarantine
from ingestion.pipeline import ingest_contract
from ingestion.silver import apply_silver
from ingestion.warehouse import Warehouse
from tests.conftest import person
from tests.landing_kit import write_batch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_endpoint(monkeypatch):
    # moto in its own process: delta-rs blocks while it waits for S3, so a server thread here would starve.
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError("moto's S3 server did not start") from None
            time.sleep(0.2)
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }.items():
        monkeypatch.setenv(name, value)
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="yiwang")
    yield endpoint
    server.terminate()
    server.wait(timeout=10)


def test_ingestion_to_s3(s3_endpoint, tmp_path, pseudonymiser):
    contract = get_contract("gongan.household_registration")
    landing = tmp_path / "landing"
    write_batch(landing, contract.id, "20261101T020000", [person(i) for i in range(40)] + [person(99, gender="9")])
    warehouse = Warehouse.at("s3://yiwang/warehouse")
    assert warehouse.storage_options["AWS_ENDPOINT_URL"] == s3_endpoint

    (outcome,) = ingest_contract(contract, landing, warehouse)
    assert outcome.status == "loaded" and outcome.rows_loaded == 40
    assert apply_silver(contract, warehouse, pseudonymiser).rows == 40
    assert ingest_contract(contract, landing, warehouse) == []  # idempotent on S3 too

    assert read_ledger(warehouse)["status"].to_list() == ["loaded"]
    assert read_quarantine(warehouse)["rule"].to_list() == ["allowed_values"]
    silver = pl.from_arrow(warehouse.table("silver/gongan/household_registration").to_pyarrow_table())
    assert silver.height == 40
    listed = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket="yiwang", Prefix="warehouse/bronze/")
    assert any(o["Key"].endswith(".parquet") for o in listed["Contents"])
