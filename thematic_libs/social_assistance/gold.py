"""From evidence rows to the gold tables: flags and case review (restricted), report aggregates (not).

`gold/social_assistance/` is a restricted area like bronze (../shared/DESIGN.md): its rows name cases
and hold sensitive facts (amounts, balances). Persons appear there only as `member_key`, the HMAC
pseudonym that silver uses, never as an ID number. `gold/reports/crosscheck_summary` holds counts and
sums by rule, community and month only, with no case or person key, for Superset and the reports.

Every table is rewritten per as-of date in one Delta commit (`overwrite` with a predicate on `as_of`),
so a re-run for the same date replaces that date's rows and leaves the other dates alone.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import polars as pl
import pyarrow as pa
from deltalake import write_deltalake

from ingestion.contract import get_contract
from ingestion.pseudonym import Pseudonymiser
from ingestion.warehouse import Warehouse
from thematic_libs.dispatch.schema import CANDIDATE_SCHEMA
from thematic_libs.social_assistance.rules import CERTIFICATES, RAW_SCHEMA, RULES

FLAGS_TABLE = "gold/social_assistance/crosscheck_flags"
REVIEW_TABLE = "gold/social_assistance/case_review"
SUMMARY_TABLE = "gold/reports/crosscheck_summary"
LINKAGE_TABLE = "gold/social_assistance/linkage_pairs"
CST = timedelta(hours=8)

FLAGS_SCHEMA = pa.schema(
    [
        pa.field("case_id", pa.string(), nullable=False),
        pa.field("rule_code", pa.string(), nullable=False),
        pa.field("rule_name", pa.string(), nullable=False),
        pa.field("member_key", pa.string(), nullable=False),
        pa.field("evidence_contract", pa.string(), nullable=False),
        pa.field("evidence_record_key", pa.string()),  # null: the record is missing (R08)
        pa.field("evidence_detail", pa.string(), nullable=False),  # JSON
        pa.field("match_method", pa.string(), nullable=False),  # exact_id | probabilistic
        pa.field("match_probability", pa.float64()),  # probabilistic only
        pa.field("amount_at_risk_cny", pa.float64(), nullable=False),
        pa.field("community_code", pa.string()),
        pa.field("evidence_batch_id", pa.string()),  # bronze lineage of the evidence row
        pa.field("evidence_source_file", pa.string()),
        pa.field("evidence_row_number", pa.int64()),
        pa.field("as_of", pa.date32(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
    ]
)

REVIEW_SCHEMA = pa.schema(
    [
        pa.field("case_id", pa.string(), nullable=False),
        pa.field("community_code", pa.string()),
        pa.field("case_type", pa.string()),
        pa.field("monthly_amount_cny", pa.float64()),
        pa.field("rule_codes", pa.string(), nullable=False),  # e.g. "R02,R04"
        pa.field("rule_names", pa.string(), nullable=False),
        pa.field("rule_count", pa.int64(), nullable=False),
        pa.field("flagged_members", pa.int64(), nullable=False),
        pa.field("evidence_rows", pa.int64(), nullable=False),
        pa.field("amount_at_risk_cny", pa.float64(), nullable=False),
        pa.field("review_priority", pa.int64(), nullable=False),  # 1 = first
        pa.field("priority_reason", pa.string(), nullable=False),
        pa.field("as_of", pa.date32(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
    ]
)

# People linked by name rather than by ID number, at or above the review threshold: `linked` pairs are R01
# evidence (ID-less death certificates), `review` pairs wait for a person and are never flagged (below
# the link threshold, or a role holder of R03 delivered without an ID number whose name is a member's).
# Both records side by side; the member by pseudonym.
LINKAGE_SCHEMA = pa.schema(
    [
        pa.field("rule_code", pa.string(), nullable=False),
        pa.field("evidence_contract", pa.string(), nullable=False),
        pa.field("record_ref", pa.string(), nullable=False),  # certificate_no, uscc or uscc|shareholder_key
        pa.field("member_key", pa.string(), nullable=False),
        pa.field("decision", pa.string(), nullable=False),  # linked | review
        pa.field("match_probability", pa.float64()),  # null: compared by name only
        pa.field("match_levels", pa.string(), nullable=False),
        pa.field("record_name", pa.string()),
        pa.field("member_name", pa.string()),
        pa.field("record_gender", pa.string()),
        pa.field("member_gender", pa.string()),
        pa.field("record_birth_date", pa.string()),
        pa.field("member_birth_date", pa.string()),
        pa.field("as_of", pa.date32(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
    ]
)

SUMMARY_SCHEMA = pa.schema(
    [
        pa.field("as_of", pa.date32(), nullable=False),
        pa.field("month", pa.string(), nullable=False),  # YYYY-MM of the as-of date
        pa.field("rule_code", pa.string(), nullable=False),
        pa.field("rule_name", pa.string(), nullable=False),
        pa.field("community_code", pa.string()),
        pa.field("flagged_cases", pa.int64(), nullable=False),
        pa.field("amount_at_risk_cny", pa.float64(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
    ]
)


def record_key(contract_id: str, ref: str | None, member_key: str) -> str | None:
    """The evidence row's primary key as silver shows it: ID-number parts replaced by the member's pseudonym.

    `ref` holds the non-sensitive key parts in key order; where the key has an ID number, that ID
    number is the member's own (the rules join on it), so its pseudonym is the member's key.
    """
    if ref is None:
        return None
    contract = get_contract(contract_id)
    sensitive = {c.name for c in contract.sensitive_columns}
    plain = iter(ref.split("|")) if ref else iter(())
    parts = [member_key if k in sensitive else next(plain) for k in contract.primary_key]
    return "|".join(parts)


def _detail_json(detail: list[tuple[str, str | None]] | None, probability: float | None) -> str:
    items: dict[str, Any] = dict(detail or [])
    if probability is not None:
        items["match_probability"] = probability
    return json.dumps(items, ensure_ascii=False, sort_keys=True)


def build_flags(raw: pa.Table, pseudonymiser: Pseudonymiser, as_of: date, run_id: str) -> pa.Table:
    """`crosscheck_flags` rows from the engines' evidence rows (RAW_SCHEMA)."""
    raw = raw.cast(RAW_SCHEMA)
    rows = raw.to_pylist()
    keys = {m: pseudonymiser.pseudonym(m) for m in {r["member_id"] for r in rows}}
    out = [
        {
            "case_id": r["case_id"],
            "rule_code": r["rule_code"],
            "rule_name": RULES[r["rule_code"]],
            "member_key": keys[r["member_id"]],
            "evidence_contract": r["evidence_contract"],
            "evidence_record_key": record_key(r["evidence_contract"], r["evidence_ref"], keys[r["member_id"]]),
            "evidence_detail": _detail_json(r["detail"], r["match_probability"]),
            "match_method": r["match_method"],
            "match_probability": r["match_probability"],
            "amount_at_risk_cny": round(float(r["amount_at_risk_cny"] or 0.0), 2),
            "community_code": r["community_code"],
            "evidence_batch_id": r["evidence_batch_id"],
            "evidence_source_file": r["evidence_source_file"],
            "evidence_row_number": r["evidence_row_number"],
            "as_of": as_of,
            "run_id": run_id,
        }
        for r in rows
    ]
    flags = pa.Table.from_pylist(out, schema=FLAGS_SCHEMA) if out else FLAGS_SCHEMA.empty_table()
    order = [
        ("case_id", "ascending"),
        ("rule_code", "ascending"),
        ("member_key", "ascending"),
        ("evidence_contract", "ascending"),
        ("evidence_record_key", "ascending"),
        ("evidence_detail", "ascending"),
    ]
    return flags.sort_by(order)


def case_rule_amounts(flags: pl.DataFrame) -> pl.DataFrame:
    """One row per (case, rule): the amount at risk of that rule for the case (the largest of its evidence)."""
    return flags.group_by("case_id", "rule_code", "rule_name", "community_code").agg(pl.col("amount_at_risk_cny").max())


def build_review(flags: pa.Table, raw: pa.Table, config: dict[str, Any], as_of: date, run_id: str) -> pa.Table:
    """`case_review`: one row per flagged case with its rules, amount at risk and a review priority.

    The amount at risk of a case is the largest of its rules' amounts, not their sum: every rule puts
    the same monthly payment at risk, and R01 already counts the months paid since the death.
    """
    if flags.num_rows == 0:
        return REVIEW_SCHEMA.empty_table()
    frame = pl.from_arrow(flags)
    assert isinstance(frame, pl.DataFrame)
    cases = pl.from_arrow(raw.select(["case_id", "case_type", "monthly_amount_cny"]))
    assert isinstance(cases, pl.DataFrame)
    cases = cases.unique("case_id")
    per_rule = case_rule_amounts(frame).sort("case_id", "rule_code")
    review = (
        per_rule.group_by("case_id", "community_code")
        .agg(
            pl.col("rule_code").sort().str.join(",").alias("rule_codes"),
            pl.col("rule_name").sort_by("rule_code").str.join("；").alias("rule_names"),
            pl.len().cast(pl.Int64).alias("rule_count"),
            pl.col("amount_at_risk_cny").max().round(2).alias("amount_at_risk_cny"),
        )
        .join(
            frame.group_by("case_id").agg(
                pl.col("member_key").n_unique().cast(pl.Int64).alias("flagged_members"),
                pl.len().cast(pl.Int64).alias("evidence_rows"),
            ),
            on="case_id",
        )
        .join(cases, on="case_id", how="left")
    )
    rows = []
    for r in review.sort("case_id").iter_rows(named=True):
        priority, reason = review_priority(r["rule_codes"].split(","), r["amount_at_risk_cny"], config["review"])
        rows.append({**r, "review_priority": priority, "priority_reason": reason, "as_of": as_of, "run_id": run_id})
    return pa.Table.from_pylist(rows, schema=REVIEW_SCHEMA)


def review_priority(rules: list[str], amount: float, config: dict[str, Any]) -> tuple[int, str]:
    """1 for clear-cut or costly cases (a death, double counting, a large amount), 2 for several rules, else 3."""
    first = sorted(set(rules) & set(config["priority_1_rules"]))
    if first:
        return 1, f"rule {','.join(first)}"
    if amount >= float(config["priority_1_amount_cny"]):
        return 1, f"amount at risk >= {config['priority_1_amount_cny']}"
    if len(set(rules)) >= int(config["priority_2_min_rules"]):
        return 2, f"{len(set(rules))} rules"
    return 3, "one rule"


def build_summary(flags: pa.Table, as_of: date, run_id: str) -> pa.Table:
    """Counts and amounts by rule and community for the as-of month: no case, no person."""
    if flags.num_rows == 0:
        return SUMMARY_SCHEMA.empty_table()
    frame = pl.from_arrow(flags)
    assert isinstance(frame, pl.DataFrame)
    summary = (
        case_rule_amounts(frame)
        .group_by("rule_code", "rule_name", "community_code")
        .agg(
            pl.len().cast(pl.Int64).alias("flagged_cases"),
            pl.col("amount_at_risk_cny").sum().round(2).alias("amount_at_risk_cny"),
        )
        .with_columns(
            pl.lit(as_of).alias("as_of"), pl.lit(f"{as_of:%Y-%m}").alias("month"), pl.lit(run_id).alias("run_id")
        )
        .sort("rule_code", "community_code")
    )
    return summary.select(SUMMARY_SCHEMA.names).to_arrow().cast(SUMMARY_SCHEMA)


def build_linkage(
    pairs: pa.Table, name_pairs: pa.Table, pseudonymiser: Pseudonymiser, as_of: date, run_id: str
) -> pa.Table:
    """`linkage_pairs` rows from the death-certificate linkage (PAIR_SCHEMA) and the name-only role holders
    (NAME_PAIR_SCHEMA), the member's ID number replaced by its pseudonym."""
    rows = [
        {
            "rule_code": "R01",
            "evidence_contract": CERTIFICATES,
            "record_ref": r["certificate_no"],
            "member_id": r["member_id"],
            "decision": r["decision"],
            "match_probability": r["match_probability"],
            "match_levels": r["match_levels"],
            **{f"record_{f}": r[f"certificate_{f}"] for f in ("name", "gender", "birth_date")},
            **{f"member_{f}": r[f"member_{f}"] for f in ("name", "gender", "birth_date")},
        }
        for r in pairs.to_pylist()
    ] + [{**r, "rule_code": "R03", "decision": "review", "match_probability": None} for r in name_pairs.to_pylist()]
    keys = {m: pseudonymiser.pseudonym(m) for m in {r["member_id"] for r in rows}}
    for row in rows:
        row["member_key"] = keys[row.pop("member_id")]
        row["as_of"], row["run_id"] = as_of, run_id
    return pa.Table.from_pylist(rows, schema=LINKAGE_SCHEMA) if rows else LINKAGE_SCHEMA.empty_table()


def replace_as_of(warehouse: Warehouse, table: str, data: pa.Table, as_of: date) -> None:
    """Replace the rows of one as-of date in one Delta commit (creating the table the first time)."""
    write_deltalake(
        warehouse.uri(table),
        data,
        mode="overwrite",
        predicate=f"as_of = '{as_of.isoformat()}'",
        storage_options=warehouse.options(),
    )


def read_as_of(warehouse: Warehouse, table: str, as_of: date) -> pa.Table:
    if not warehouse.exists(table):
        raise FileNotFoundError(f"{table} does not exist yet; run the cross-check first (run_crosscheck)")
    import pyarrow.compute as pc

    data = warehouse.table(table).to_pyarrow_table()
    return data.filter(pc.equal(data["as_of"], pa.scalar(as_of, pa.date32())))


def as_of_end(as_of: date) -> datetime:
    """The last instant of the as-of date in CST, as UTC: the same value on every re-run for that date."""
    return datetime.combine(as_of, time(23, 59, 59, 999999), tzinfo=UTC) - CST


def candidates_from_review(review: pa.Table, config: dict[str, Any]) -> pa.Table:
    """One dispatch ticket candidate per flagged case (CANDIDATE_SCHEMA), carrying the case id only.

    `dedupe_key` is `crosscheck|<case_id>`, so a case keeps one open ticket however often it is flagged.
    `occurred_at` is the end of the as-of date (CST), so re-runs for the same date derive the same ticket.
    Title and description name the case and its rule codes, never a person, an ID number or an amount.
    """
    rows = []
    for r in review.to_pylist():
        community = r["community_code"]
        rows.append(
            {
                "source": "crosscheck",
                "source_ref": r["case_id"],
                "event_code": str(config["ticket"]["event_code"]),
                "title": f"救助对象疑似不符合条件：案件 {r['case_id']}（{r['rule_codes']}）",
                "description": (
                    f"社会救助交叉比对（截至 {r['as_of']:%Y-%m-%d}）：案件 {r['case_id']} 命中规则 {r['rule_codes']}，"
                    f"复核优先级 {r['review_priority']}。证据见 gold/social_assistance/case_review。"
                ),
                "occurred_at": as_of_end(r["as_of"]),
                "lon": None,
                "lat": None,
                "grid_code": None,
                "community_code": community,
                "district_code": community[:6] if community else None,
                "is_urgent": False,
                "evidence_uri": f"{REVIEW_TABLE}?case_id={r['case_id']}&as_of={r['as_of']:%Y-%m-%d}",
                "dedupe_key": f"crosscheck|{r['case_id']}",
                "department_code": str(config["ticket"]["department_code"]),
            }
        )
    return pa.Table.from_pylist(rows, schema=CANDIDATE_SCHEMA) if rows else CANDIDATE_SCHEMA.empty_table()
