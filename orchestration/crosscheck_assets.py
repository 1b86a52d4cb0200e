"""The social-assistance cross-check (救助核查): nine rules over seven departments' data, as of a date.

It reads bronze (restricted: the amounts and ID numbers it needs are pseudonymised in silver) and
writes the restricted `gold/social_assistance/` tables plus an aggregate for reports. The as-of date
is the run's `--as-of`; without one, the latest extraction date (CST) of any loaded batch, so that a
re-run on the same data gives the same flags whatever the wall clock says.
"""

# No `from __future__ import annotations`: Dagster inspects the real annotations of assets.
from datetime import date

import polars as pl
from dagster import AssetExecutionContext, AssetKey, AssetSpec, MaterializeResult, MetadataValue, multi_asset

from ingestion.contract import get_contract
from ingestion.ledger import read_ledger
from ingestion.warehouse import Warehouse
from orchestration.ingestion_assets import bronze_key
from orchestration.resources import PlatformResource
from thematic_libs.sharing.asset_metadata import product_asset_facts
from thematic_libs.social_assistance.gold import FLAGS_TABLE, LINKAGE_TABLE, REVIEW_TABLE, SUMMARY_TABLE
from thematic_libs.social_assistance.rules import INPUT_CONTRACTS, CrosscheckError
from thematic_libs.social_assistance.run import run_crosscheck


def latest_extraction_date(warehouse: Warehouse) -> date | None:
    """The latest local (CST) extraction date of any loaded batch: the default as-of date."""
    ledger = read_ledger(warehouse)
    if ledger.height == 0:
        return None
    loaded = ledger.filter(pl.col("status") == "loaded")
    return loaded.select(pl.col("extracted_at").dt.convert_time_zone("Asia/Shanghai").dt.date().max()).item()


@multi_asset(
    specs=[
        AssetSpec(
            AssetKey(FLAGS_TABLE.split("/")),
            deps=[bronze_key(get_contract(c)) for c in INPUT_CONTRACTS],
            description="救助核查 One row per rule, member and piece of evidence (restricted).",
            kinds={"delta", "duckdb"},
            **product_asset_facts(FLAGS_TABLE),
        ),
        AssetSpec(
            AssetKey(REVIEW_TABLE.split("/")),
            description="One row per flagged case with its rules, amount at risk and priority (restricted).",
            kinds={"delta"},
            **product_asset_facts(REVIEW_TABLE),
        ),
        AssetSpec(
            AssetKey(SUMMARY_TABLE.split("/")),
            description="Flags by rule, community and month with the amount at risk: aggregates for reports.",
            kinds={"delta"},
            **product_asset_facts(SUMMARY_TABLE),
        ),
        AssetSpec(
            AssetKey(LINKAGE_TABLE.split("/")),
            description=(
                "People linked by name (ID-less death certificates; ID-less R03 role holders): both records, "
                "probability, the levels that fired; linked or to review (restricted)."
            ),
            kinds={"delta"},
            **product_asset_facts(LINKAGE_TABLE),
        ),
    ],
    group_name="social_assistance",
    name="social_assistance_crosscheck",
)
def crosscheck(context: AssetExecutionContext, platform: PlatformResource):
    warehouse = platform.get_warehouse()
    as_of = platform.as_of_date() or latest_extraction_date(warehouse)
    if as_of is None:
        context.log.warning("no loaded batch yet: the cross-check has nothing to check")
        for spec in context.selected_asset_keys:
            yield MaterializeResult(asset_key=spec, metadata={"note": "no data"})
        return
    try:
        result = run_crosscheck(warehouse, as_of, run_id=context.run_id, key=platform.pseudonymiser())
    except CrosscheckError as error:
        # One department's missing or rejected data must not stop the run: the last good rows stay (and
        # the tickets built from them); the summary names what was skipped and why.
        context.log.warning(f"cross-check as of {as_of} skipped: {error}")
        for spec in context.selected_asset_keys:
            yield MaterializeResult(
                asset_key=spec,
                metadata={"skipped": f"cross-check as of {as_of}: {error}", "note": "last good output kept"},
            )
        return
    common = {"as_of": as_of.isoformat(), "engine": result.engine, "seconds": result.seconds}
    yield MaterializeResult(
        asset_key=AssetKey(FLAGS_TABLE.split("/")),
        metadata={
            **common,
            "flag_rows": result.flag_rows,
            "cases_by_rule": MetadataValue.json(result.cases_by_rule),
            "skipped_rules": MetadataValue.json(list(result.skipped_rules)),
            "empty_inputs": MetadataValue.json(list(result.empty_inputs)),
            **(
                {
                    "skipped": f"rules {', '.join(result.skipped_rules)} as of {as_of}: no data of "
                    f"{', '.join(result.empty_inputs)} by then (the other rules ran)"
                }
                if result.skipped_rules
                else {}
            ),
        },
    )
    yield MaterializeResult(
        asset_key=AssetKey(REVIEW_TABLE.split("/")),
        metadata={**common, "flagged_cases": result.flagged_cases, "amount_at_risk_cny": result.amount_at_risk_cny},
    )
    yield MaterializeResult(asset_key=AssetKey(SUMMARY_TABLE.split("/")), metadata=common)
    yield MaterializeResult(
        asset_key=AssetKey(LINKAGE_TABLE.split("/")),
        metadata={**common, "linked_pairs": result.linked_pairs, "pairs_to_review": result.pairs_to_review},
    )
