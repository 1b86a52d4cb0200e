"""Social-assistance cross-check (issue 4) on a generated landing zone with planted true and near-miss cases."""

from __future__ import annotations

import json
import os
import re
from datetime import date
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from bench.crosscheck_pandas import run_pandas
from ingestion.contract import get_contract
from ingestion.pipeline import ingest_contract
from ingestion.pseudonym import Pseudonymiser
from ingestion.warehouse import Warehouse
from thematic_libs.dispatch.schema import CANDIDATE_SCHEMA
from thematic_libs.social_assistance import (
    FLAGS_TABLE,
    REVIEW_TABLE,
    SUMMARY_TABLE,
    CrosscheckError,
    load_config,
    run_crosscheck,
    ticket_candidates,
)
from thematic_libs.social_assistance.asof import plan_inputs
from thematic_libs.social_assistance.engine_duckdb import parquet_files, run_duckdb
from thematic_libs.social_assistance.gold import build_flags
from thematic_libs.social_assistance.linkage import link_certificates
from thematic_libs.social_assistance.rules import FUNDS, INPUT_CONTRACTS, INSURANCE, RULES, Params, window_periods
from thematic_libs.social_assistance.run import evaluate

REPO = Path(__file__).resolve().parent.parent
AS_OF = date(2026, 11, 15)
KEY = b"crosscheck-test-key-0123456789ab"
PSEUDONYMS = Pseudonymiser(KEY)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A small landing zone (2,000 residents), its 11 input contracts landed in bronze, one DuckDB run."""
    from demo_data import generate_landing_zone

    root = tmp_path_factory.mktemp("crosscheck")
    landing = root / "landing"
    generate_landing_zone(landing, scale=0.1, seed=11, progress=False)
    warehouse = Warehouse.at(root / "warehouse")
    for contract_id in INPUT_CONTRACTS:
        ingest_contract(get_contract(contract_id), landing, warehouse)
    result = run_crosscheck(warehouse, AS_OF, engine="duckdb", run_id="test-run-1", key=KEY)
    labels = pl.read_csv(landing / "_labels" / "crosscheck_cases.csv")
    return root, landing, warehouse, result, labels


def _flags(warehouse: Warehouse, as_of: date = AS_OF) -> pl.DataFrame:
    frame = pl.from_arrow(warehouse.table(FLAGS_TABLE).to_pyarrow_table())
    assert isinstance(frame, pl.DataFrame)
    return frame.filter(pl.col("as_of") == as_of)


def _flagged(flags: pl.DataFrame, rule: str) -> set[str]:
    return set(flags.filter(pl.col("rule_code") == rule)["case_id"].to_list())


def _labelled(labels: pl.DataFrame, rule: str, expected: str, text: str = "") -> set[str]:
    chosen = labels.filter(
        (pl.col("rule_code") == rule) & (pl.col("expected") == expected) & pl.col("description").str.contains(text)
    )
    return set(chosen["case_id"].to_list())


def test_window_is_the_six_months_before_the_as_of_month():
    assert window_periods(date(2026, 11, 15), 6) == ["2026-05", "2026-06", "2026-07", "2026-08", "2026-09", "2026-10"]
    assert window_periods(date(2026, 2, 1), 3) == ["2025-11", "2025-12", "2026-01"]


def test_precision_and_recall_per_rule_against_the_answer_key(world):
    _, _, warehouse, result, labels = world
    flags = _flags(warehouse)
    planted = set(labels["case_id"].to_list())
    for rule in RULES:
        expected = _labelled(labels, rule, "flag")
        found = _flagged(flags, rule)
        assert expected, f"the answer key has no positive for {rule}"
        true_positives = len(expected & found)
        precision = true_positives / len(found) if found else 0.0
        recall = true_positives / len(expected)
        assert precision >= 0.98 and recall >= 0.98, (rule, sorted(found - expected), sorted(expected - found))
        # Cases the key does not list are ordinary: they must raise nothing at all.
        assert found <= planted, (rule, sorted(found - planted))
    assert result.flagged_cases == flags["case_id"].n_unique()


@pytest.mark.parametrize(
    ("rule", "text"),
    [
        ("R02", "scrapped"),
        ("R02", "motorcycle"),
        ("R02", "employer owns a car"),
        ("R02", "terminated case"),
        ("R03", "deregistered"),
        ("R03", "small individual business"),
        ("R04", "cancelled commercial"),
        ("R04", "parking"),
        ("R04", "co-owned"),
        ("R05", "only two months"),
        ("R06", "older than six months"),
        ("R07", "closed provident fund"),
        ("R07", "sealed provident fund"),
        ("R01", "namesake"),
        ("R01", "after the as-of date"),
        ("R09", "terminated"),
    ],
)
def test_each_near_miss_is_not_flagged(world, rule, text):
    _, _, warehouse, _, labels = world
    near_misses = _labelled(labels, rule, "no_flag", text)
    assert near_misses, f"the answer key has no {rule} near miss about {text!r}"
    flagged = set(_flags(warehouse)["case_id"].to_list())
    assert not (near_misses & flagged), (rule, text, sorted(near_misses & flagged))


@pytest.mark.parametrize(
    ("rule", "text"),
    [
        ("R01", "lower-case x"),
        ("R01", "15-digit"),
        ("R02", "full-width"),
        ("R03", "spaces"),
        ("R04", "spaces"),
        ("R05", "15-digit"),
        ("R07", "lower-case x"),
    ],
)
def test_messy_id_forms_still_link(world, rule, text):
    _, _, warehouse, _, labels = world
    cases = _labelled(labels, rule, "flag", text)
    assert cases, f"no planted {rule} case about {text!r}"
    flags = _flags(warehouse).filter(pl.col("case_id").is_in(list(cases)) & (pl.col("rule_code") == rule))
    assert set(flags["case_id"].to_list()) == cases
    assert set(flags["match_method"].to_list()) == {"exact_id"}


def test_member_key_is_the_silver_pseudonym_of_the_member(world):
    _, _, warehouse, _, _ = world
    flags = _flags(warehouse)
    members = pl.from_arrow(warehouse.table("bronze/minzheng/assistance_members").to_pyarrow_table())
    assert isinstance(members, pl.DataFrame)
    pseudonyms = {PSEUDONYMS.pseudonym(i) for i in members["member_id_number"].unique().to_list()}
    assert set(flags["member_key"].to_list()) <= pseudonyms
    assert all(re.fullmatch(r"[0-9a-f]{32}", k) for k in flags["member_key"].to_list())


def test_id_less_death_certificate_links_with_its_probability(world):
    _, _, warehouse, _, labels = world
    cases = _labelled(labels, "R01", "flag", "WITHOUT ID number")
    assert len(cases) == 2
    flags = _flags(warehouse).filter(pl.col("case_id").is_in(list(cases)) & (pl.col("rule_code") == "R01"))
    assert set(flags["case_id"].to_list()) == cases
    threshold = load_config()["linkage"]["threshold"]
    for row in flags.iter_rows(named=True):
        assert row["match_method"] == "probabilistic"
        assert row["evidence_contract"] == "weijian.death_certificates"
        evidence = json.loads(row["evidence_detail"])
        assert evidence["match_probability"] == row["match_probability"] >= threshold
        assert row["evidence_batch_id"] and row["evidence_source_file"] and row["evidence_row_number"] >= 1
        assert row["amount_at_risk_cny"] >= 0


def test_namesake_with_another_birth_date_does_not_match():
    config = load_config()["linkage"]
    certificates = pa.table(
        {
            "certificate_no": ["SW1", "SW2"],
            "name": ["陈志强", "陈志强"],
            "gender": ["1", "1"],
            "birth_date": pa.array([date(1950, 3, 4), date(1957, 6, 9)], pa.date32()),
        }
    )
    members = pa.table({"member_id": ["440605195003041231"], "member_name": ["陈志强"]})
    pairs = link_certificates(certificates, members, config).to_pylist()
    assert [(p["certificate_no"], p["member_id"]) for p in pairs] == [("SW1", "440605195003041231")]
    assert pairs[0]["match_probability"] >= config["threshold"]


def test_r01_amount_is_monthly_amount_times_whole_months_since_death(world):
    _, _, warehouse, _, labels = world
    flags = _flags(warehouse).filter(pl.col("rule_code") == "R01")
    review = pl.from_arrow(warehouse.table(REVIEW_TABLE).to_pyarrow_table())
    assert isinstance(review, pl.DataFrame)
    monthly = dict(zip(review["case_id"].to_list(), review["monthly_amount_cny"].to_list(), strict=True))
    for row in flags.iter_rows(named=True):
        death = date.fromisoformat(json.loads(row["evidence_detail"])["death_date"])
        months = (AS_OF.year - death.year) * 12 + AS_OF.month - death.month - (AS_OF.day < death.day)
        assert row["amount_at_risk_cny"] == pytest.approx(monthly[row["case_id"]] * max(months, 0))
    case = next(iter(_labelled(labels, "R01", "flag", "death 2026-09-20")))
    row = flags.filter(pl.col("case_id") == case).row(0, named=True)
    assert row["amount_at_risk_cny"] == pytest.approx(monthly[case] * 1)  # 09-20 -> 11-15: one whole month


@pytest.fixture(scope="module")
def spark():
    from pysail.spark import SparkConnectServer
    from pyspark.sql import SparkSession

    server = SparkConnectServer(ip="127.0.0.1", port=0)
    server.start(background=True)
    host, port = server.listening_address
    session = SparkSession.builder.remote(f"sc://{host}:{port}").getOrCreate()
    yield session
    session.stop()
    server.stop()


def test_duckdb_spark_and_pandas_give_identical_flags(world, spark):
    _, _, warehouse, _, _ = world
    config = load_config()
    duck, _, _, _, _ = evaluate(warehouse, AS_OF, "duckdb", config)
    sparked, _, _, _, _ = evaluate(warehouse, AS_OF, "spark", config, spark=spark)
    plans = plan_inputs(warehouse, AS_OF, INPUT_CONTRACTS)
    baseline = run_pandas(
        warehouse, plans, Params.build(AS_OF, config), lambda c, m: link_certificates(c, m, config["linkage"])
    )
    flags = [build_flags(raw, PSEUDONYMS, AS_OF, "same") for raw in (duck, sparked, baseline)]
    assert flags[0].num_rows > 40
    assert flags[0].equals(flags[1]), "DuckDB and Spark differ"
    assert flags[0].equals(flags[2]), "DuckDB and the pandas baseline differ"


def test_spark_engine_through_run_crosscheck_writes_the_same_flags(world, spark, tmp_path):
    _, _, warehouse, _, _ = world
    before = _flags(warehouse).drop("run_id")
    run_crosscheck(warehouse, AS_OF, engine="spark", run_id="spark-run", key=KEY, spark=spark)
    after = _flags(warehouse)
    assert set(after["run_id"].to_list()) == {"spark-run"}
    assert after.drop("run_id").equals(before)
    run_crosscheck(warehouse, AS_OF, engine="duckdb", run_id="test-run-1", key=KEY)


def test_native_parquet_scan_and_deltalake_datasets_give_the_same_evidence(world):
    """Local tables are scanned by DuckDB itself; the deltalake path (object stores) must agree row for row."""
    _, _, warehouse, _, _ = world
    config = load_config()
    plans = plan_inputs(warehouse, AS_OF, INPUT_CONTRACTS)
    params = Params.build(AS_OF, config)

    def link(certificates, members):
        return link_certificates(certificates, members, config["linkage"])

    native = run_duckdb(warehouse, plans, params, link)
    through_deltalake = run_duckdb(warehouse, plans, params, link, native_parquet=False)
    assert native.num_rows > 40
    assert native.equals(through_deltalake)


def test_native_scan_opens_only_the_files_of_planned_batches(world):
    _, _, warehouse, _, _ = world
    early = date(2026, 7, 20)
    for contract_id in (INSURANCE, FUNDS):
        plan = plan_inputs(warehouse, early, (contract_id,))[contract_id]
        later = plan_inputs(warehouse, AS_OF, (contract_id,))[contract_id]
        assert set(plan.batch_ids) < set(later.batch_ids)
        files = parquet_files(warehouse, plan)
        assert files is not None and [b for b, _, _ in files] == list(plan.batch_ids)
        opened = {Path(f).parent.name for _, _, paths in files for f in paths}
        assert opened == {f"_batch_id={b}" for b in plan.batch_ids}


def test_an_earlier_as_of_ignores_later_batches_and_keeps_other_dates(world):
    _, _, warehouse, _, labels = world
    early = date(2026, 10, 20)
    result = run_crosscheck(warehouse, early, engine="duckdb", run_id="early", key=KEY)
    flags = _flags(warehouse, early)
    assert result.flag_rows == flags.height > 0
    # Every piece of evidence comes from a batch extracted by then (batch ids start with the extraction date).
    batches = [b for b in flags["evidence_batch_id"].to_list() if b]
    assert batches and max(b[:8] for b in batches) <= "20261020"
    # Deaths after the earlier date are not known yet; deaths before it may only be known later (not yet delivered).
    late_deaths = _labelled(labels, "R01", "flag", "death 2026-10-25") | _labelled(labels, "R01", "flag", "10-30")
    assert late_deaths and not (late_deaths & _flagged(flags, "R01"))
    # The run for the default as-of date is still there, untouched.
    assert set(_flags(warehouse)["run_id"].to_list()) == {"test-run-1"}


def test_rerun_for_the_same_date_replaces_its_rows(world):
    _, _, warehouse, first, _ = world
    again = run_crosscheck(warehouse, AS_OF, engine="duckdb", run_id="test-run-1", key=KEY)
    flags = _flags(warehouse)
    assert flags.height == first.flag_rows == again.flag_rows
    review = pl.from_arrow(warehouse.table(REVIEW_TABLE).to_pyarrow_table())
    assert isinstance(review, pl.DataFrame)
    assert review.filter(pl.col("as_of") == AS_OF).height == first.flagged_cases


def test_case_review_has_one_row_per_flagged_case_with_rules_and_priority(world):
    _, _, warehouse, _, labels = world
    review = pl.from_arrow(warehouse.table(REVIEW_TABLE).to_pyarrow_table())
    assert isinstance(review, pl.DataFrame)
    review = review.filter(pl.col("as_of") == AS_OF)
    assert review["case_id"].is_unique().all()
    assert set(review["case_id"].to_list()) == set(_flags(warehouse)["case_id"].to_list())
    death = next(iter(_labelled(labels, "R01", "flag", "lower-case x")))
    row = review.filter(pl.col("case_id") == death).row(0, named=True)
    assert row["rule_codes"] == "R01" and row["review_priority"] == 1
    car = next(iter(_labelled(labels, "R02", "flag", "truck")))
    row = review.filter(pl.col("case_id") == car).row(0, named=True)
    assert row["rule_codes"] == "R02" and row["review_priority"] == 3
    assert row["amount_at_risk_cny"] == row["monthly_amount_cny"] > 0


def test_outputs_outside_bronze_hold_no_id_number_and_reports_no_personal_key(world):
    _, _, warehouse, _, _ = world
    members = pl.from_arrow(warehouse.table("bronze/minzheng/assistance_members").to_pyarrow_table())
    assert isinstance(members, pl.DataFrame)
    ids = set(members["member_id_number"].to_list())
    tables = [warehouse.table(t).to_pyarrow_table() for t in (FLAGS_TABLE, REVIEW_TABLE, SUMMARY_TABLE)]
    tables.append(ticket_candidates(warehouse, AS_OF))
    for table in tables:
        text = json.dumps(table.to_pylist(), ensure_ascii=False, default=str)
        assert not any(i in text for i in ids)
        assert not re.search(r"\d{17}[\dX]", text)
    summary = tables[2]
    assert not {"case_id", "member_key", "evidence_record_key"} & set(summary.column_names)
    frame = pl.from_arrow(summary)
    assert isinstance(frame, pl.DataFrame)
    by_rule = frame.filter(pl.col("as_of") == AS_OF).group_by("rule_code").agg(pl.col("flagged_cases").sum())
    flags = _flags(warehouse)
    for rule, count in by_rule.iter_rows():
        assert count == _flagged(flags, rule).__len__()


def test_ticket_candidates_one_per_flagged_case_carrying_the_case_id_only(world):
    _, _, warehouse, result, _ = world
    candidates = ticket_candidates(warehouse, AS_OF)
    assert candidates.schema.equals(CANDIDATE_SCHEMA)
    rows = candidates.to_pylist()
    assert len(rows) == result.flagged_cases
    names = set(
        pl.from_arrow(warehouse.table("bronze/minzheng/assistance_members").to_pyarrow_table())["member_name"].to_list()
    )
    for row in rows:
        assert row["source"] == "crosscheck" and row["event_code"] == "080101"
        assert row["dedupe_key"] == f"crosscheck|{row['source_ref']}"
        assert row["department_code"] == "minzheng"
        assert row["source_ref"] in row["title"] and re.fullmatch(r"\d{12}", row["community_code"])
        assert not any(name in row["title"] + row["description"] for name in names)
        assert row["occurred_at"].isoformat() == "2026-11-15T15:59:59.999999+00:00"


def test_a_district_override_changes_a_threshold(world, tmp_path, monkeypatch):
    _, _, warehouse, _, labels = world
    override = tmp_path / "district.yaml"
    override.write_text("crosscheck:\n  r05:\n    min_contribution_base_cny: 3700\n", encoding="utf-8")
    monkeypatch.setenv("YIWANG_DISTRICT_CONFIG", str(override))
    config = load_config()
    assert config["r05"]["min_contribution_base_cny"] == 3700
    raw, _, _, _, _ = evaluate(warehouse, AS_OF, "duckdb", config)
    r05 = {r["case_id"] for r in raw.to_pylist() if r["rule_code"] == "R05"}
    assert r05 == _labelled(labels, "R05", "flag", "4000") | _labelled(labels, "R05", "flag", "3800")
    override.write_text("crosscheck:\n  r05:\n    min_base: 3700\n", encoding="utf-8")
    with pytest.raises(ValueError, match="min_base"):
        load_config()


def test_an_as_of_before_any_assistance_delivery_is_a_clear_error(world):
    _, _, warehouse, _, _ = world
    with pytest.raises(CrosscheckError, match=r"minzheng\.assistance_cases.*2026-08-01"):
        run_crosscheck(warehouse, date(2026, 8, 1), engine="duckdb", key=KEY)


def _run_reviewer_notebook(warehouse, case: str, tmp_path) -> tuple[str, list[dict]]:
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(REPO / "notebooks" / "crosscheck_review.ipynb", as_version=4)
    env = {"YIWANG_WAREHOUSE": warehouse.root, "CROSSCHECK_AS_OF": AS_OF.isoformat(), "CROSSCHECK_CASE_ID": case}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(
            notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
        ).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    text = "\n".join(str(o.get("text", "")) + json.dumps(o.get("data", {}), ensure_ascii=False) for o in outputs)
    return text, outputs


def test_reviewer_notebook_runs_headless(world, tmp_path):
    _, _, warehouse, _, labels = world
    case = next(iter(_labelled(labels, "R04", "flag", "spaces")))
    text, outputs = _run_reviewer_notebook(warehouse, case, tmp_path)
    assert case in text
    assert "ziranziyuan.real_estate" in text and "part-00000.csv" in text
    assert "error" not in [o.get("output_type") for o in outputs]


def test_reviewer_notebook_shows_why_a_name_was_linked(world, tmp_path):
    _, _, warehouse, _, labels = world
    case = next(iter(_labelled(labels, "R01", "flag", "traditional characters and a homophone slip")))
    text, outputs = _run_reviewer_notebook(warehouse, case, tmp_path)
    assert "error" not in [o.get("output_type") for o in outputs]
    assert "linked, match probability" in text and "pinyin equal with tones" in text
    assert "traditional characters in" in text
    assert "to review" in text and "review, match probability 0." in text  # the near misses wait for a person
    assert any("image/png" in o.get("data", {}) for o in outputs)
