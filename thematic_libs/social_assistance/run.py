"""`run_crosscheck`: one call that orchestration (Dagster, the CLI) makes per as-of date."""

from __future__ import annotations

import time as _time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa

from ingestion.pseudonym import Pseudonymiser
from ingestion.warehouse import Warehouse
from thematic_libs.social_assistance.asof import TablePlan, plan_inputs
from thematic_libs.social_assistance.gold import (
    FLAGS_TABLE,
    LINKAGE_TABLE,
    REVIEW_TABLE,
    SUMMARY_TABLE,
    build_flags,
    build_linkage,
    build_review,
    build_summary,
    candidates_from_review,
    read_as_of,
    replace_as_of,
)
from thematic_libs.social_assistance.linkage import PAIR_SCHEMA, link_candidates, linked_pairs
from thematic_libs.social_assistance.name_matches import NAME_PAIR_SCHEMA, name_only_pairs, role_holders_without_id
from thematic_libs.social_assistance.rules import (
    CASES,
    HOUSEHOLDS,
    INPUT_CONTRACTS,
    MEMBERS,
    RULES,
    CrosscheckError,
    Params,
    load_config,
)


@dataclass(frozen=True)
class CrosscheckResult:
    """What a run produced (the tables themselves are in the warehouse)."""

    as_of: date
    run_id: str
    engine: str
    flagged_cases: int
    flag_rows: int
    cases_by_rule: dict[str, int]
    amount_at_risk_cny: float
    empty_inputs: tuple[str, ...] = ()
    skipped_rules: tuple[str, ...] = ()
    seconds: float = 0.0
    linked_pairs: int = 0
    pairs_to_review: int = 0
    tables: tuple[str, ...] = field(default=(FLAGS_TABLE, REVIEW_TABLE, SUMMARY_TABLE, LINKAGE_TABLE))


def resolve_pseudonymiser(key: bytes | Pseudonymiser | None) -> Pseudonymiser:
    """The pseudonym key as given, else from configuration (YIWANG_PSEUDONYM_KEY or the settings' key file)."""
    if isinstance(key, Pseudonymiser):
        return key
    if key is not None:
        return Pseudonymiser(key)
    from ingestion.settings import Settings

    return Pseudonymiser.from_environment(Settings.from_env().key_file)


def check_plans(plans: dict[str, TablePlan], as_of: date) -> tuple[tuple[str, ...], frozenset[str]]:
    """Inputs without data as of the date, and the rules that cannot be judged without them."""
    for required in (CASES, MEMBERS):
        if plans[required].is_empty:
            raise CrosscheckError(
                f"no loaded batch of {required} was extracted on or before {as_of}: the cross-check has no cases "
                "to check. Ingest the civil-affairs deliveries first, or choose a later as-of date"
            )
    empty = tuple(cid for cid, plan in plans.items() if plan.is_empty)
    # Without a household-registration snapshot every member would look "missing": R08 is not judged.
    skip = frozenset({"R08"}) if plans[HOUSEHOLDS].is_empty else frozenset()
    return empty, skip


def evaluate(
    warehouse: Warehouse,
    as_of: date,
    engine: str,
    config: dict[str, Any],
    spark: Any = None,
) -> tuple[pa.Table, pa.Table, pa.Table, tuple[str, ...], frozenset[str]]:
    """The raw evidence rows (RAW_SCHEMA) of every rule, from the chosen engine; the linkage's candidate
    pairs (PAIR_SCHEMA: linked and to review); ID-less role holders named like a member (NAME_PAIR_SCHEMA)."""
    plans = plan_inputs(warehouse, as_of, INPUT_CONTRACTS)
    empty, skip = check_plans(plans, as_of)
    params = Params.build(as_of, config)
    candidates: list[pa.Table] = []
    counted: list[pa.Table] = []

    def link(certificates: pa.Table, members: pa.Table) -> pa.Table:
        counted.append(members)
        candidates.append(link_candidates(certificates, members, config["linkage"]))
        return linked_pairs(candidates[-1])

    if engine == "duckdb":
        from thematic_libs.social_assistance.engine_duckdb import run_duckdb

        raw = run_duckdb(warehouse, plans, params, link, skip)
    elif engine == "spark":
        from thematic_libs.social_assistance.engine_spark import run_spark, spark_session

        if spark is None:
            with spark_session(config["spark"]["remote"]) as session:
                raw = run_spark(session, warehouse, plans, params, link, skip)
        else:
            raw = run_spark(spark, warehouse, plans, params, link, skip)
    else:
        raise CrosscheckError(f"unknown engine {engine!r}; use duckdb or spark (crosscheck.engine)")
    pairs = pa.concat_tables(candidates) if candidates else PAIR_SCHEMA.empty_table()
    name_pairs = NAME_PAIR_SCHEMA.empty_table()
    if counted and "R03" not in skip:
        name_pairs = name_only_pairs(role_holders_without_id(warehouse, plans, params), counted[0])
    return raw, pairs, name_pairs, empty, skip


def run_crosscheck(
    warehouse: Warehouse,
    as_of: date,
    engine: str | None = None,
    run_id: str | None = None,
    key: bytes | Pseudonymiser | None = None,
    *,
    config: dict[str, Any] | None = None,
    spark: Any = None,
) -> CrosscheckResult:
    """Run the nine rules as of `as_of` and (re)write that date's rows of the three gold tables.

    `engine` defaults to `crosscheck.engine` of the district configuration; `spark` may pass an open
    Spark Connect session (otherwise one is opened on `crosscheck.spark.remote`, or an in-process Sail
    server when that is empty). Idempotent: a re-run for the same date replaces that date's rows.
    """
    started = _time.perf_counter()
    config = config or load_config()
    engine = engine or config["engine"]
    run_id = run_id or f"crosscheck-{as_of:%Y%m%d}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    pseudonymiser = resolve_pseudonymiser(key)
    raw, pairs, name_pairs, empty, skip = evaluate(warehouse, as_of, engine, config, spark)
    flags = build_flags(raw, pseudonymiser, as_of, run_id)
    linkage = build_linkage(pairs, name_pairs, pseudonymiser, as_of, run_id)
    review = build_review(flags, raw, config, as_of, run_id)
    summary = build_summary(flags, as_of, run_id)
    replace_as_of(warehouse, FLAGS_TABLE, flags, as_of)
    replace_as_of(warehouse, REVIEW_TABLE, review, as_of)
    replace_as_of(warehouse, SUMMARY_TABLE, summary, as_of)
    replace_as_of(warehouse, LINKAGE_TABLE, linkage, as_of)
    by_rule = {code: 0 for code in RULES}
    for code, _case in set(zip(flags["rule_code"].to_pylist(), flags["case_id"].to_pylist(), strict=True)):
        by_rule[code] += 1
    return CrosscheckResult(
        as_of=as_of,
        run_id=run_id,
        engine=engine,
        flagged_cases=review.num_rows,
        flag_rows=flags.num_rows,
        cases_by_rule=by_rule,
        amount_at_risk_cny=round(sum(review["amount_at_risk_cny"].to_pylist()), 2),
        empty_inputs=empty,
        skipped_rules=tuple(sorted(skip)),
        seconds=round(_time.perf_counter() - started, 3),
        linked_pairs=sum(d == "linked" for d in linkage["decision"].to_pylist()),
        pairs_to_review=sum(d == "review" for d in linkage["decision"].to_pylist()),
    )


def ticket_candidates(warehouse: Warehouse, as_of: date, config: dict[str, Any] | None = None) -> pa.Table:
    """Dispatch ticket candidates (thematic_libs.dispatch CANDIDATE_SCHEMA), one per case flagged as of `as_of`."""
    return candidates_from_review(read_as_of(warehouse, REVIEW_TABLE, as_of), config or load_config())
