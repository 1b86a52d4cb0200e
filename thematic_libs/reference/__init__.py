"""Reference tables shipped with the platform, and the department a ticket goes to.

Files (all UTF-8 CSV, codes kept as strings so that leading zeros survive):

- `event_catalogue.csv`: the CJ/T 214-style event classes. Majors 01-06 are the urban-management
  classes the hotline and grid reports use (the demo generator draws only from them); 07 enterprise
  appeals, 08 social-assistance cross-check, 09 IoT and video alerts.
- `departments.csv`: every department code used in the demo data, the contracts and the matrix.
- `responsibility_matrix.csv`: which department handles an event code in a district (`*` = any).
- `sensor_metric_events.csv`, `enterprise_appeal_topics.csv`, `video_algorithm_events.csv`: how the
  IoT metrics, enterprise-appeal topics and video-AI algorithm codes map to event codes.

A district adds or replaces matrix rows in its config file (see `thematic_libs/config.py`)::

    responsibility:
      overrides:
        - {event_code: "0501", department_code: jd_guicheng}                       # every district
        - {district_code: "440605", event_code: "050301", department_code: jd_guicheng}
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv

from thematic_libs.config import load_section

REFERENCE_DIR = Path(__file__).parent
EVENT_CATALOGUE = REFERENCE_DIR / "event_catalogue.csv"
DEPARTMENTS = REFERENCE_DIR / "departments.csv"
RESPONSIBILITY_MATRIX = REFERENCE_DIR / "responsibility_matrix.csv"
SENSOR_METRIC_EVENTS = REFERENCE_DIR / "sensor_metric_events.csv"
ENTERPRISE_APPEAL_TOPICS = REFERENCE_DIR / "enterprise_appeal_topics.csv"
VIDEO_ALGORITHM_EVENTS = REFERENCE_DIR / "video_algorithm_events.csv"

ANY_DISTRICT = "*"
PRIORITIES = ("urgent", "high", "normal", "low")
# Majors the hotline / grid-report text classifier and the demo generator work with.
URBAN_MAJOR_CODES = ("01", "02", "03", "04", "05", "06")


class ReferenceError(ValueError):
    """A reference file or a district override that breaks a rule of the reference data."""


class UnresolvedEventCodeError(ReferenceError):
    """Event codes for which the responsibility matrix names no department."""


def _read_csv(path: Path, int_columns: Iterable[str] = ()) -> pa.Table:
    """Every column as string (codes have leading zeros), except the named integer columns."""
    header = path.read_text(encoding="utf-8").splitlines()[0].split(",")
    ints = set(int_columns)
    types = {name: (pa.int32() if name in ints else pa.string()) for name in header}
    return pacsv.read_csv(
        path,
        convert_options=pacsv.ConvertOptions(
            column_types=types, strings_can_be_null=True, null_values=[""], quoted_strings_can_be_null=False
        ),
    )


@functools.cache
def load_event_catalogue() -> pa.Table:
    """The event catalogue: event_code, major/minor codes and names, item names, default_priority,
    sla_working_days (int32) and keywords (`|`-separated). Checked on load."""
    table = _read_csv(EVENT_CATALOGUE, int_columns=["sla_working_days"])
    rows = table.to_pylist()
    seen: set[str] = set()
    for n, row in enumerate(rows, start=2):
        code = row["event_code"] or ""
        where = f"{EVENT_CATALOGUE.name} line {n} ({code!r})"
        if len(code) != 6 or not code.isdigit() or code in seen:
            raise ReferenceError(f"{where}: event_code must be 6 unique digits; fix the catalogue")
        if row["major_code"] != code[:2] or row["minor_code"] != code[:4]:
            raise ReferenceError(f"{where}: major_code/minor_code must be the code's first 2/4 digits")
        if row["default_priority"] not in PRIORITIES:
            raise ReferenceError(f"{where}: default_priority must be one of {PRIORITIES}")
        if row["sla_working_days"] is None or row["sla_working_days"] < 0:
            raise ReferenceError(f"{where}: sla_working_days must be a whole number >= 0")
        if not row["keywords"] or any(not k.strip() for k in row["keywords"].split("|")):
            raise ReferenceError(f"{where}: keywords must be non-empty and `|`-separated")
        seen.add(code)
    return table


@functools.cache
def load_departments() -> pa.Table:
    """The department registry: department_code, name_zh, name_en, level (city/district/street),
    parent_code, division_code (the administrative division it serves)."""
    table = _read_csv(DEPARTMENTS)
    codes = table.column("department_code").to_pylist()
    duplicates = sorted({c for c in codes if codes.count(c) > 1})
    if duplicates or None in codes:
        raise ReferenceError(f"{DEPARTMENTS.name}: department_code must be present and unique (twice: {duplicates})")
    unknown_parents = set(table.column("parent_code").drop_null().to_pylist()) - set(codes)
    if unknown_parents:
        raise ReferenceError(f"{DEPARTMENTS.name}: parent_code not in the registry: {sorted(unknown_parents)}")
    return table


def _mapping(path: Path, key: str) -> pa.Table:
    table = _read_csv(path)
    unknown = set(table.column("event_code").to_pylist()) - set(load_event_catalogue().column("event_code").to_pylist())
    if unknown:
        raise ReferenceError(f"{path.name}: event codes not in the catalogue: {sorted(unknown)}; fix the mapping")
    keys = table.column(key).to_pylist()
    if len(set(keys)) != len(keys):
        raise ReferenceError(f"{path.name}: {key} must be unique")
    return table


@functools.cache
def load_sensor_metric_events() -> pa.Table:
    """IoT metric (`yingji.sensor_devices.metric`) -> event_code: metric, device_type, event_code."""
    return _mapping(SENSOR_METRIC_EVENTS, "metric")


@functools.cache
def load_enterprise_appeal_topics() -> pa.Table:
    """Enterprise-appeal topic (`zhengshu.enterprise_appeals.topic`) -> event_code: topic, event_code."""
    return _mapping(ENTERPRISE_APPEAL_TOPICS, "topic")


@functools.cache
def load_video_algorithm_events() -> pa.Table:
    """Video-AI algorithm code (`zhengshu.video_cameras.algorithms`) -> event_code: algorithm_code, name_zh,
    event_code."""
    return _mapping(VIDEO_ALGORITHM_EVENTS, "algorithm_code")


def _check_matrix(rows: list[dict[str, Any]], origin: str) -> None:
    """Every row well-formed, naming a registered department and a code prefix the catalogue has."""
    departments = set(load_departments().column("department_code").to_pylist())
    catalogue = load_event_catalogue().column("event_code").to_pylist()
    seen: set[tuple[str, str]] = set()
    for n, row in enumerate(rows, start=1):
        district, code, department = row["district_code"], row["event_code"], row["department_code"]
        where = f"{origin} row {n} ({district}, {code}, {department})"
        if district != ANY_DISTRICT and not (isinstance(district, str) and len(district) == 6 and district.isdigit()):
            raise ReferenceError(f"{where}: district_code must be '*' or a 6-digit division code")
        if not (isinstance(code, str) and len(code) in (2, 4, 6) and code.isdigit()):
            raise ReferenceError(f"{where}: event_code must be a 2-, 4- or 6-digit code (major, minor or item)")
        if not any(c.startswith(code) for c in catalogue):
            raise ReferenceError(f"{where}: no catalogue event code starts with {code!r}; fix the code")
        if department not in departments:
            raise ReferenceError(f"{where}: department {department!r} is not in departments.csv; register it first")
        if (district, code) in seen:
            raise ReferenceError(f"{where}: ({district}, {code}) appears twice; keep one row")
        seen.add((district, code))


def _override_rows(overrides: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for n, entry in enumerate(overrides, start=1):
        if not isinstance(entry, Mapping) or not {"event_code", "department_code"} <= set(entry):
            raise ReferenceError(
                f"responsibility override {n} ({entry!r}) needs event_code and department_code "
                "(district_code optional, default '*')"
            )
        extra = set(entry) - {"event_code", "department_code", "district_code"}
        if extra:
            raise ReferenceError(f"responsibility override {n}: unknown keys {sorted(extra)}")
        rows.append(
            {
                "district_code": str(entry.get("district_code") or ANY_DISTRICT),
                "event_code": str(entry["event_code"]),
                "department_code": str(entry["department_code"]),
            }
        )
    return rows


def responsibility_matrix(overrides: Iterable[Mapping[str, Any]] | None = None) -> pa.Table:
    """The effective matrix: the shipped rows with the overrides applied.

    `overrides` (a list of `{event_code, department_code, district_code?}`) defaults to the district
    config's `responsibility.overrides`. An override replaces the shipped row with the same
    (district_code, event_code) and adds a row otherwise. Columns: district_code, event_code,
    department_code, origin (`shipped` | `override`).
    """
    if overrides is None:
        overrides = load_section("thematic_libs.reference", "responsibility").get("overrides") or []
    shipped = _read_csv(RESPONSIBILITY_MATRIX).to_pylist()
    _check_matrix(shipped, RESPONSIBILITY_MATRIX.name)
    extra = _override_rows(overrides)
    _check_matrix(extra, "responsibility overrides")
    replaced = {(r["district_code"], r["event_code"]) for r in extra}
    rows = [{**r, "origin": "shipped"} for r in shipped if (r["district_code"], r["event_code"]) not in replaced]
    rows += [{**r, "origin": "override"} for r in extra]
    return pa.Table.from_pylist(
        rows,
        schema=pa.schema(
            [(name, pa.string()) for name in ("district_code", "event_code", "department_code", "origin")]
        ),
    )


def _as_series(values: pa.Array | pa.ChunkedArray | pl.Series | Iterable[str | None], name: str) -> pl.Series:
    if isinstance(values, pl.Series):
        return values.cast(pl.String).rename(name)
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return pl.Series(name, values).cast(pl.String)
    return pl.Series(name, list(values), dtype=pl.String)


def assign_departments(
    event_codes: pa.Array | pa.ChunkedArray | pl.Series,
    district_codes: pa.Array | pa.ChunkedArray | pl.Series | None = None,
    matrix: pa.Table | None = None,
) -> pa.Array:
    """The responsible department of each (event_code, district_code), vectorised.

    Resolution: the most specific matrix row wins. A row for the record's own district beats any
    `*` row; within the same district level, the longest matching code prefix (6 > 4 > 2 digits) wins.
    So a district that moves major class 05 to a street office overrides even the shipped item-level
    rows of 05. A null district uses only the `*` rows. `matrix` defaults to `responsibility_matrix()`.
    Raises `UnresolvedEventCodeError` naming every (event_code, district_code) left without a department.
    """
    matrix = responsibility_matrix() if matrix is None else matrix
    events = _as_series(event_codes, "event_code")
    districts = (
        pl.Series("district_code", [None] * len(events), dtype=pl.String)
        if district_codes is None
        else _as_series(district_codes, "district_code")
    )
    if len(districts) != len(events):
        raise ValueError(f"event_codes ({len(events)}) and district_codes ({len(districts)}) differ in length")
    frame = pl.DataFrame([events, districts])
    pairs = frame.unique()
    rules = pl.from_arrow(matrix.select(["district_code", "event_code", "department_code"]))
    resolved = pl.lit(None, dtype=pl.String)
    # Most specific first: own district 6/4/2 digits, then '*' 6/4/2 digits.
    candidates = []
    for own_district in (True, False):
        for width in (6, 4, 2):
            key = pairs.select(
                pl.col("event_code"),
                pl.col("district_code"),
                (pl.col("district_code") if own_district else pl.lit(ANY_DISTRICT)).alias("_d"),
                pl.col("event_code").str.slice(0, width).alias("_e"),
            ).with_columns(pl.when(pl.col("event_code").str.len_chars() >= width).then(pl.col("_e")).alias("_e"))
            hit = key.join(
                rules.rename({"district_code": "_d", "event_code": "_e", "department_code": f"_dep{len(candidates)}"}),
                on=["_d", "_e"],
                how="left",
                maintain_order="left",
            )
            candidates.append(hit.get_column(f"_dep{len(candidates)}"))
    resolved = pl.coalesce(candidates) if candidates else resolved
    pairs = pairs.with_columns(resolved.alias("department_code"))
    missing = pairs.filter(pl.col("department_code").is_null())
    if missing.height:
        listed = ", ".join(
            f"{e!r} in district {d or '*'}" for e, d, _ in missing.sort("event_code").head(20).iter_rows()
        )
        raise UnresolvedEventCodeError(
            f"{missing.height} event code(s) have no responsible department: {listed}; add rows to "
            "responsibility_matrix.csv or the district config (responsibility.overrides), or fix the event codes"
        )
    out = frame.join(pairs, on=["event_code", "district_code"], how="left", nulls_equal=True, maintain_order="left")
    return out.get_column("department_code").to_arrow()
