"""Reference data: the event catalogue and its mappings, the department registry, the responsibility matrix."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from demo_data import events as demo_events
from demo_data.vocab import DISTRICT_CODE
from ingestion.contract import get_contract, load_contracts
from thematic_libs import reference as ref
from thematic_libs.config import ENV_VAR


def _codes(table: pa.Table, column: str) -> list[str]:
    return table.column(column).to_pylist()


def test_catalogue_keeps_the_urban_classes_and_adds_the_new_ones() -> None:
    catalogue = ref.load_event_catalogue()
    rows = {r["event_code"]: r for r in catalogue.to_pylist()}
    assert {"010101", "040201", "050102", "060402"} <= set(rows)
    assert rows["080101"]["item_name"] == "救助对象疑似不符合条件"
    assert (rows["080101"]["default_priority"], rows["080101"]["sla_working_days"]) == ("normal", 10)
    assert catalogue.schema.field("sla_working_days").type == pa.int32()
    majors = {r["major_code"]: r["major_name"] for r in rows.values()}
    assert majors["07"] == "企业诉求" and majors["08"] == "社会救助"


def test_demo_generator_still_draws_only_urban_classes() -> None:
    items = demo_events.load_catalogue()
    assert {i.major_code for i in items} == set(ref.URBAN_MAJOR_CODES)
    urban = [r for r in ref.load_event_catalogue().to_pylist() if r["major_code"] in ref.URBAN_MAJOR_CODES]
    assert [i.event_code for i in items] == [r["event_code"] for r in urban]


def test_every_enterprise_appeal_topic_maps_to_its_own_class_07_item() -> None:
    topics = ref.load_enterprise_appeal_topics()
    allowed = get_contract("zhengshu.enterprise_appeals").column("topic").allowed_values
    assert set(_codes(topics, "topic")) == set(allowed) == set(demo_events.APPEAL_TOPICS)
    codes = _codes(topics, "event_code")
    assert len(set(codes)) == len(codes) and all(c.startswith("07") for c in codes)


def test_every_sensor_metric_and_video_algorithm_maps_to_a_catalogue_item() -> None:
    catalogue = set(_codes(ref.load_event_catalogue(), "event_code"))
    metrics = ref.load_sensor_metric_events()
    allowed = get_contract("yingji.sensor_devices").column("metric").allowed_values
    assert set(_codes(metrics, "metric")) == set(allowed)
    assert set(_codes(metrics, "event_code")) <= catalogue
    by_metric = dict(zip(_codes(metrics, "metric"), _codes(metrics, "event_code"), strict=True))
    assert by_metric["water_depth_cm"] == "040201" and by_metric["smoke_ppm"] == "040301"
    algorithms = set(_codes(ref.load_video_algorithm_events(), "algorithm_code"))
    used = {a for scene in demo_events.CAMERA_SCENES.values() for a in scene.split(",")}
    assert used <= algorithms
    assert set(_codes(ref.load_video_algorithm_events(), "event_code")) <= catalogue


def test_every_department_code_in_demo_data_and_contracts_is_registered() -> None:
    registered = set(_codes(ref.load_departments(), "department_code"))
    used = set(demo_events.DEPARTMENTS) | set(demo_events.DEPARTMENT_NAMES)
    used |= {owner for _, _, owner, _ in demo_events.RESOURCE_TYPES}
    # Stream contracts (`stream.*`) have no owning department; every other contract names one.
    used |= {c.department for c in load_contracts().values() if not c.is_stream}
    assert used - registered == set()
    departments = ref.load_departments().to_pylist()
    assert {d["level"] for d in departments} <= {"city", "district", "street"}
    streets = {d["department_code"] for d in departments if d["level"] == "street"}
    assert {"jd_guicheng", "jd_dali"} <= streets


def test_matrix_departments_are_registered_drift() -> None:
    with open(ref.RESPONSIBILITY_MATRIX, encoding="utf-8") as f:
        matrix_departments = {row["department_code"] for row in csv.DictReader(f)}
    registered = set(_codes(ref.load_departments(), "department_code"))
    assert matrix_departments - registered == set()


def test_every_catalogue_code_resolves_for_the_demo_district() -> None:
    codes = ref.load_event_catalogue().column("event_code")
    departments = ref.assign_departments(codes, pa.array([DISTRICT_CODE] * len(codes)))
    assert departments.null_count == 0
    assert set(departments.to_pylist()) <= set(_codes(ref.load_departments(), "department_code"))
    by_code = dict(zip(codes.to_pylist(), departments.to_pylist(), strict=True))
    assert by_code["040201"] == "shuiwuju"  # minor 0402 beats major 04 (yingji)
    assert by_code["050203"] == "gongan"  # minor 0502
    assert by_code["050202"] == "jiaotong"  # item beats minor 0502
    assert by_code["050101"] == "chengguan"  # major 05
    assert by_code["080101"] == "minzheng"


def test_district_rows_beat_default_rows_and_longer_prefixes_beat_shorter() -> None:
    matrix = ref.responsibility_matrix(
        overrides=[
            {"district_code": "440605", "event_code": "05", "department_code": "jd_guicheng"},
            {"district_code": "440606", "event_code": "050202", "department_code": "jd_dali"},
            {"district_code": "440606", "event_code": "0502", "department_code": "jiaotong"},
        ]
    )
    events = pa.array(["050202", "050202", "050201", "050201", "050202", "010101", "050202"])
    districts = pa.array(["440605", "440606", "440606", "440607", None, "440605", "440605"])
    got = ref.assign_departments(events, districts, matrix=matrix).to_pylist()
    # 440605 moved all of 05 to the street office, even items that have a shipped item-level row.
    assert got == ["jd_guicheng", "jd_dali", "jiaotong", "gongan", "jiaotong", "chengguan", "jd_guicheng"]


def test_district_config_file_overrides_the_matrix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "district.yaml"
    config.write_text(
        'responsibility:\n  overrides:\n    - {event_code: "0501", department_code: jd_guicheng}\n', encoding="utf-8"
    )
    monkeypatch.setenv(ENV_VAR, str(config))
    matrix = ref.responsibility_matrix()
    override = [r for r in matrix.to_pylist() if r["origin"] == "override"]
    assert override == [
        {"district_code": "*", "event_code": "0501", "department_code": "jd_guicheng", "origin": "override"}
    ]
    got = ref.assign_departments(pa.array(["050102", "050201"]), pa.array(["440605", "440605"]))
    assert got.to_pylist() == ["jd_guicheng", "gongan"]


def test_bad_overrides_are_refused_with_the_row_and_the_rule() -> None:
    with pytest.raises(ref.ReferenceError, match=r"nobody.*not in departments\.csv"):
        ref.responsibility_matrix(overrides=[{"event_code": "0501", "department_code": "nobody"}])
    with pytest.raises(ref.ReferenceError, match=r"no catalogue event code starts with '9999'"):
        ref.responsibility_matrix(overrides=[{"event_code": "9999", "department_code": "chengguan"}])
    with pytest.raises(ref.ReferenceError, match="needs event_code and department_code"):
        ref.responsibility_matrix(overrides=[{"event_code": "0501"}])


def test_unresolved_codes_are_named() -> None:
    with pytest.raises(ref.UnresolvedEventCodeError, match=r"'990101' in district 440605.*'xx'"):
        ref.assign_departments(pa.array(["010101", "990101", "xx"]), pa.array(["440605", "440605", None]))


def test_assignment_is_vectorised_over_a_million_rows() -> None:
    codes = np.array(_codes(ref.load_event_catalogue(), "event_code"))
    rng = np.random.default_rng(3)
    events = pa.array(codes[rng.integers(len(codes), size=1_000_000)])
    districts = pa.array(np.array(["440605", "440606"])[rng.integers(2, size=1_000_000)])
    started = time.perf_counter()
    got = ref.assign_departments(events, districts)
    elapsed = time.perf_counter() - started
    assert len(got) == 1_000_000 and got.null_count == 0
    expected = dict(zip(codes.tolist(), ref.assign_departments(pa.array(codes)).to_pylist(), strict=True))
    assert got.slice(0, 1000).to_pylist() == [expected[c] for c in events.slice(0, 1000).to_pylist()]
    assert elapsed < 5, f"assigning 1M rows took {elapsed:.1f} s"
