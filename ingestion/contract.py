"""The one loader for the landing-zone data contracts (ODCS v3.1.0).

Everything typed about a dataset is derived from here: the Arrow/Delta schema, the row rules that
ingestion checks, the Great Expectations suites, the dbt sources and the catalog. Nothing retypes a
column list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pyarrow as pa
import yaml

CONTRACTS_DIR = Path(__file__).parent / "contracts"

LEVELS = ("province", "city", "district")
# Image deliveries: one file per record (a camera frame), read by the video-AI scoring (thematic_libs/video/), never
# by the tabular readers (csv, jsonl, parquet) of ingestion/readers.py.
IMAGE_FORMATS = ("jpeg",)

# Arrow types of the ODCS logical types; timestamps are normalised to UTC instants.
ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "integer": pa.int64(),
    "number": pa.float64(),
    "boolean": pa.bool_(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}

RESIDENT_ID_PATTERN = r"^[1-9][0-9]{5}(18|19|20)[0-9]{2}(0[1-9]|1[0-2])(0[1-9]|[12][0-9]|3[01])[0-9]{3}[0-9X]$"
CREDIT_CODE_PATTERN = r"^[0-9A-HJ-NPQRTUWXY]{2}[0-9]{6}[0-9A-HJ-NPQRTUWXY]{10}$"


# Lineage columns: which delivery a row came from, and when the platform took it in.
BRONZE_LINEAGE = (
    pa.field("_batch_id", pa.string(), nullable=False),
    pa.field("_source_level", pa.string(), nullable=False),
    pa.field("_department", pa.string(), nullable=False),
    pa.field("_source_file", pa.string(), nullable=False),
    pa.field("_row_number", pa.int64(), nullable=False),
    pa.field("_extracted_at", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("_ingested_at", pa.timestamp("us", tz="UTC"), nullable=False),
)
SILVER_LINEAGE = (
    pa.field("_batch_id", pa.string(), nullable=False),
    pa.field("_extracted_at", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("_ingested_at", pa.timestamp("us", tz="UTC"), nullable=False),
)


class ContractError(ValueError):
    """A contract file that does not say what the platform needs to know."""


@dataclass(frozen=True)
class Column:
    name: str
    logical_type: str
    required: bool
    classification: str
    description: str
    primary_key_position: int | None = None
    pattern: str | None = None
    allowed_values: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None  # logicalTypeOptions.maxLength, in characters

    @property
    def arrow_type(self) -> pa.DataType:
        return ARROW_TYPES[self.logical_type]

    @property
    def is_sensitive(self) -> bool:
        return self.classification == "sensitive"

    @property
    def identifier_kind(self) -> str | None:
        """`resident_id` or `credit_code` when the column holds one (read off its pattern)."""
        if self.pattern == RESIDENT_ID_PATTERN:
            return "resident_id"
        if self.pattern == CREDIT_CODE_PATTERN:
            return "credit_code"
        return None


@dataclass(frozen=True)
class Contract:
    id: str
    version: str
    name: str
    purpose: str
    columns: tuple[Column, ...]
    properties: dict[str, str] = field(default_factory=dict)

    @property
    def department(self) -> str:
        return self.id.split(".", 1)[0]

    @property
    def dataset(self) -> str:
        return self.id.split(".", 1)[1]

    @property
    def is_stream(self) -> bool:
        return "fileFormat" not in self.properties

    @property
    def is_image(self) -> bool:
        """Delivered as image files, one per record (`fileFormat: jpeg`): never read as rows into bronze."""
        return self.file_format in IMAGE_FORMATS

    @property
    def source_level(self) -> str:
        return self.properties.get("sourceLevel", "")

    @property
    def file_format(self) -> str:
        return self.properties.get("fileFormat", "")

    @property
    def encoding(self) -> str:
        return self.properties.get("encoding", "utf-8")

    @property
    def cadence(self) -> str:
        return self.properties.get("cadence", "")

    @property
    def sharing_type(self) -> str:
        return self.properties.get("sharingType", "")

    @property
    def department_label(self) -> str:
        """E.g. `gongan (公安局, Public Security Bureau)`."""
        return self.properties.get("department", self.department)

    @property
    def primary_key(self) -> tuple[str, ...]:
        keyed = sorted((c for c in self.columns if c.primary_key_position), key=lambda c: c.primary_key_position)
        return tuple(c.name for c in keyed)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def sensitive_columns(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.is_sensitive)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.id} has no column {name!r}")

    def arrow_schema(self) -> pa.Schema:
        """The typed schema of the delivered columns (bronze adds lineage columns to it)."""
        return pa.schema(
            [pa.field(c.name, c.arrow_type, nullable=not c.required) for c in self.columns],
        )

    def bronze_schema(self) -> pa.Schema:
        """Delivered columns (sensitive ones normalised but raw) plus the lineage columns."""
        return pa.schema(list(self.arrow_schema()) + list(BRONZE_LINEAGE))

    def silver_schema(self) -> pa.Schema:
        """Current state: every sensitive column is replaced by its keyed pseudonym `<column>_key`."""
        fields = [
            pa.field(f"{c.name}_key", pa.string(), nullable=not c.required)
            if c.is_sensitive
            else pa.field(c.name, c.arrow_type, nullable=not c.required)
            for c in self.columns
        ]
        return pa.schema(fields + list(SILVER_LINEAGE))

    @property
    def table_path(self) -> str:
        """`<department>/<dataset>`: the same relative path in bronze and silver."""
        return f"{self.department}/{self.dataset}"

    @property
    def cadence_days(self) -> float | None:
        """Expected days between deliveries, read off the contract's cadence text."""
        return cadence_days(self.cadence)

    @property
    def default_mode(self) -> str:
        return "snapshot" if "snapshot" in self.cadence.lower() else "incremental"


def cadence_days(cadence: str) -> float | None:
    """Days between deliveries named by a cadence text (`daily incremental`, `per platform run (weekly sources)`);
    None when it names no period (`continuous`): the contracts and products.yaml say it in words, not numbers."""
    text = cadence.lower()
    for word, days in (("hourly", 1 / 24), ("daily", 1), ("weekly", 7), ("monthly", 31), ("yearly", 366)):
        if word in text:
            return days
    return None


def _column(raw: dict, contract_id: str) -> Column:
    try:
        name = raw["name"]
        logical_type = raw["logicalType"]
    except KeyError as missing:
        raise ContractError(f"{contract_id}: a property lacks {missing}") from None
    if logical_type not in ARROW_TYPES:
        raise ContractError(f"{contract_id}.{name}: unknown logicalType {logical_type!r}")
    options = raw.get("logicalTypeOptions") or {}
    allowed: tuple[str, ...] | None = None
    for rule in raw.get("quality") or []:
        if rule.get("metric") == "invalidValues":
            allowed = tuple(str(v) for v in rule.get("arguments", {}).get("validValues", []))
    pattern = options.get("pattern")
    if pattern:
        re.compile(pattern)
    return Column(
        name=name,
        logical_type=logical_type,
        required=bool(raw.get("required", False)),
        classification=raw.get("classification", "internal"),
        description=raw.get("description", ""),
        primary_key_position=raw.get("primaryKeyPosition") if raw.get("primaryKey") else None,
        pattern=pattern,
        max_length=int(options["maxLength"]) if options.get("maxLength") is not None else None,
        allowed_values=allowed,
        minimum=options.get("minimum"),
        maximum=options.get("maximum"),
    )


def parse_contract(document: dict) -> Contract:
    contract_id = document.get("id")
    if not contract_id or "." not in contract_id:
        raise ContractError(f"contract id {contract_id!r} is not <department>.<dataset>")
    schema = document.get("schema") or []
    columns = tuple(_column(p, contract_id) for s in schema for p in s.get("properties") or [])
    properties = {p["property"]: str(p["value"]) for p in document.get("customProperties") or []}
    return Contract(
        id=contract_id,
        version=str(document.get("version", "")),
        name=document.get("name", contract_id),
        purpose=(document.get("description") or {}).get("purpose", ""),
        columns=columns,
        properties=properties,
    )


def load_contract_file(path: Path) -> Contract:
    with open(path, encoding="utf-8") as f:
        return parse_contract(yaml.safe_load(f))


@cache
def load_contracts(directory: Path = CONTRACTS_DIR) -> dict[str, Contract]:
    """Every contract in the directory, by id."""
    contracts = [load_contract_file(p) for p in sorted(Path(directory).glob("*.yaml"))]
    return {c.id: c for c in contracts}


def batch_contracts(directory: Path = CONTRACTS_DIR) -> dict[str, Contract]:
    """The contracts delivered as landing-zone files of rows (csv, jsonl, parquet): what bronze, silver, the
    quality suites, dbt staging and the catalog are built from. Neither the `stream.*` topics nor the image
    contracts (`image_contracts`) are among them."""
    return {cid: c for cid, c in load_contracts(directory).items() if not c.is_stream and not c.is_image}


def image_contracts(directory: Path = CONTRACTS_DIR) -> dict[str, Contract]:
    """The contracts delivered as landing-zone image files (`zhengshu.video_frames`): the video-AI scoring reads
    them, batch by batch, into `silver/video/detections`."""
    return {cid: c for cid, c in load_contracts(directory).items() if c.is_image}


def get_contract(contract_id: str) -> Contract:
    try:
        return load_contracts()[contract_id]
    except KeyError:
        raise ContractError(f"unknown contract id {contract_id!r}") from None
