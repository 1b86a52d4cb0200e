"""The scale-out engine: the same nine rules as a Spark Connect job, DataFrame API only.

Written against the Spark Connect client (`pyspark-client`), tested on Sail here and meant for Apache
Spark 4.2 + delta-spark in production (../shared/STACK.md): no SQL strings, no RDDs, no JVM-side
helpers, nothing Sail lacks. It reads the same bronze Delta tables and the same as-of plan as the
DuckDB engine and returns the same evidence rows (RAW_SCHEMA), so the two can be compared row by row.
The probabilistic linkage of ID-less death certificates runs in Splink on DuckDB on the driver: its
inputs (ID-less certificates, counted members) are small even for a city.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import reduce
from typing import Any

import pyarrow as pa

from ingestion.warehouse import Warehouse
from thematic_libs.social_assistance.asof import TablePlan
from thematic_libs.social_assistance.engine_duckdb import LINEAGE, TABLES
from thematic_libs.social_assistance.rules import (
    CASES,
    CERTIFICATES,
    CREMATIONS,
    ENTERPRISES,
    ESTATES,
    FUNDS,
    HOUSEHOLDS,
    INSURANCE,
    LINK_SCHEMA,
    MEMBERS,
    RAW_SCHEMA,
    SHAREHOLDERS,
    VEHICLES,
    Params,
)

SPARK_TYPES = {
    pa.string(): "string",
    pa.int64(): "bigint",
    pa.float64(): "double",
    pa.bool_(): "boolean",
    pa.date32(): "date",
    pa.timestamp("us", tz="UTC"): "timestamp",
}


@contextmanager
def spark_session(remote: str) -> Iterator[Any]:
    """A Spark Connect session on `remote`, or on an in-process Sail server (127.0.0.1) when it is empty."""
    from pyspark.sql import SparkSession

    server = None
    if not remote:
        from pysail.spark import SparkConnectServer

        server = SparkConnectServer(ip="127.0.0.1", port=0)
        server.start(background=True)
        host, port = server.listening_address
        remote = f"sc://{host}:{port}"
    spark = SparkSession.builder.remote(remote).getOrCreate()
    try:
        yield spark
    finally:
        spark.stop()
        if server is not None:
            server.stop()


def _ddl(schema: pa.Schema) -> str:
    return ", ".join(f"{f.name} {SPARK_TYPES[f.type]}" for f in schema)


def load_state(spark: Any, warehouse: Warehouse, plan: TablePlan, counted_ids: Any | None) -> Any:
    """One row per primary key as of the date, with its bronze lineage (see engine_duckdb.load_state)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    _, columns, id_column = TABLES[plan.contract.id]
    wanted = list(dict.fromkeys([*columns, *plan.contract.primary_key, *LINEAGE]))
    if plan.is_empty:
        schema = plan.contract.bronze_schema()
        return spark.createDataFrame([], _ddl(pa.schema([schema.field(c) for c in wanted])))
    frame = (
        spark.read.format("delta")
        .load(warehouse.uri(plan.table))
        .filter(F.col("_batch_id").isin(list(plan.batch_ids)))
        .select(*wanted)
    )
    if counted_ids is not None and id_column:
        frame = frame.join(counted_ids.withColumnRenamed("member_id", id_column), on=id_column, how="left_semi")
    if not plan.needs_dedupe:
        return frame
    order = spark.createDataFrame(
        list(zip(plan.batch_ids, plan.ordinals, strict=True)), "_batch_id string, _ord bigint"
    )
    latest = Window.partitionBy(*plan.contract.primary_key).orderBy(F.col("_ord").desc())
    return (
        frame.join(order, on="_batch_id")
        .withColumn("_rn", F.row_number().over(latest))
        .filter(F.col("_rn") == 1)
        .select(*wanted)
    )


def num(column: Any) -> Any:
    return column.cast("decimal(18,2)").cast("string")


def detail(**items: Any) -> Any:
    from pyspark.sql import functions as F

    pairs = []
    for key, value in items.items():
        pairs += [F.lit(key), value.cast("string")]
    return F.create_map(*pairs)


def evidence(
    frame: Any,
    rule: str,
    contract: str,
    ref: Any,
    details: Any,
    death: Any = None,
    probability: Any = None,
) -> Any:
    """The common columns of one rule's evidence rows; `frame` has the counted member's columns and `ev_*` lineage."""
    from pyspark.sql import functions as F

    return frame.select(
        F.col("case_id"),
        F.lit(rule).alias("rule_code"),
        F.col("member_id"),
        F.lit(contract).alias("evidence_contract"),
        ref.cast("string").alias("evidence_ref"),
        F.col("ev_batch_id").alias("evidence_batch_id"),
        F.col("ev_source_file").alias("evidence_source_file"),
        F.col("ev_row_number").cast("bigint").alias("evidence_row_number"),
        details.alias("detail"),
        F.lit("probabilistic" if probability is not None else "exact_id").alias("match_method"),
        (probability if probability is not None else F.lit(None)).cast("double").alias("match_probability"),
        (death if death is not None else F.lit(None)).cast("date").alias("death_date"),
        F.col("community_code"),
        F.col("case_type"),
        F.col("monthly_amount_cny"),
    )


def lineage(frame: Any) -> Any:
    return (
        frame.withColumnRenamed("_batch_id", "ev_batch_id")
        .withColumnRenamed("_source_file", "ev_source_file")
        .withColumnRenamed("_row_number", "ev_row_number")
    )


def rules(s: dict[str, Any], p: Params, linked: Any) -> dict[str, Any]:
    """Every rule's evidence rows as a DataFrame, keyed by rule code."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    as_of = F.lit(p.as_of).cast("date")
    periods = list(p.periods)
    counted = s["counted"].select("case_id", "member_id", "community_code", "case_type", "monthly_amount_cny")
    out: dict[str, Any] = {}

    # R01
    r01 = []
    sources = set(p["r01"]["sources"])
    if CREMATIONS in sources:
        crem = lineage(s["cremations"]).withColumnRenamed("id_number", "member_id")
        j = counted.join(crem, on="member_id").filter(F.col("death_date") <= as_of)
        facts = detail(
            source=F.lit("cremation"), death_date=F.col("death_date"), cremation_date=F.col("cremation_date")
        )
        r01.append(evidence(j, "R01", CREMATIONS, F.col("record_id"), facts, F.col("death_date")))
    if CERTIFICATES in sources:
        certs = lineage(s["certificates"])
        j = counted.join(certs.withColumnRenamed("id_number", "member_id"), on="member_id").filter(
            F.col("death_date") <= as_of
        )
        facts = detail(source=F.lit("death_certificate"), death_date=F.col("death_date"))
        r01.append(evidence(j, "R01", CERTIFICATES, F.col("certificate_no"), facts, F.col("death_date")))
        j = (
            linked.join(certs.drop("id_number"), on="certificate_no")
            .join(counted, on="member_id")
            .filter(F.col("death_date") <= as_of)
        )
        facts = detail(
            source=F.lit("death_certificate"),
            death_date=F.col("death_date"),
            certificate_name=F.col("name"),
            certificate_gender=F.col("gender"),
            certificate_birth_date=F.col("birth_date"),
            match_levels=F.col("match_levels"),
        )
        r01.append(
            evidence(
                j, "R01", CERTIFICATES, F.col("certificate_no"), facts, F.col("death_date"), F.col("match_probability")
            )
        )
    if r01:
        out["R01"] = reduce(lambda a, b: a.unionByName(b), r01)

    # R02
    r = p["r02"]
    v = lineage(s["vehicles"]).withColumnRenamed("owner_id_number", "member_id")
    j = counted.join(v, on="member_id").filter(
        F.col("status").isin(r["vehicle_statuses"])
        & F.col("use_nature").isin(r["use_natures"])
        & F.col("vehicle_type").isin(r["vehicle_types"])
    )
    facts = detail(
        plate_no=F.col("plate_no"),
        vehicle_type=F.col("vehicle_type"),
        use_nature=F.col("use_nature"),
        status=F.col("status"),
    )
    ref = F.concat_ws("|", F.col("plate_no"), F.col("registered_date").cast("string"))
    out["R02"] = evidence(j, "R02", VEHICLES, ref, facts)

    # R03
    r = p["r03"]
    e = s["enterprises"]
    qualifies = F.col("e_status").isin(r["enterprise_statuses"]) & (
        F.col("entity_type").isin(r["entity_types"])
        | (F.col("registered_capital_wan_cny") >= float(r["min_registered_capital_wan_cny"]))
    )
    firm = {
        "uscc": F.col("uscc"),
        "enterprise_name": F.col("e_name"),
        "entity_type": F.col("entity_type"),
        "status": F.col("e_status"),
        "registered_capital_wan_cny": num(F.col("registered_capital_wan_cny")),
    }
    firms = e.withColumnRenamed("status", "e_status").withColumnRenamed("name", "e_name")
    reps = lineage(firms).withColumnRenamed("legal_rep_id_number", "member_id")
    j = counted.join(reps, on="member_id").filter(qualifies)
    legal = evidence(j, "R03", ENTERPRISES, F.col("uscc"), detail(role=F.lit("legal_representative"), **firm))
    holders = lineage(s["shareholders"]).withColumnRenamed("shareholder_id_number", "member_id")
    j = (
        counted.join(holders, on="member_id")
        .filter(F.col("shareholder_type").isin(r["shareholder_types"]))
        .join(firms.drop(*LINEAGE, "legal_rep_id_number"), on="uscc")
        .filter(qualifies)
    )
    facts = detail(
        role=F.lit("shareholder"), subscribed_capital_wan_cny=num(F.col("subscribed_capital_wan_cny")), **firm
    )
    holder = evidence(j, "R03", SHAREHOLDERS, F.concat_ws("|", F.col("uscc"), F.col("shareholder_key")), facts)
    out["R03"] = legal.unionByName(holder)

    # R04
    r = p["r04"]
    est = lineage(s["estates"]).withColumnRenamed("owner_id_number", "member_id")
    j = counted.join(est, on="member_id").filter(~F.col("status").isin(r["excluded_statuses"]))
    residential = F.col("property_use").isin(r["residential_uses"])
    per_case = Window.partitionBy("case_id")
    j = j.withColumn(
        # coalesce: Sail gives null, not 0, for the size of an all-null window's collect_set
        "n_res",
        F.coalesce(F.size(F.collect_set(F.when(residential, F.col("certificate_no"))).over(per_case)), F.lit(0)).cast(
            "bigint"
        ),
    ).filter(
        F.col("property_use").isin(r["business_uses"])
        | (residential & (F.col("n_res") > int(r["max_residential_certificates"])))
    )
    facts = detail(
        certificate_no=F.col("certificate_no"),
        property_use=F.col("property_use"),
        status=F.col("status"),
        share_ratio=num(F.col("share_ratio")),
        case_residential_certificates=F.col("n_res"),
    )
    out["R04"] = evidence(j, "R04", ESTATES, F.col("certificate_no"), facts)

    # R05
    r = p["r05"]
    ins = lineage(s["insurance"]).withColumnRenamed("id_number", "member_id")
    high = ins.filter(
        F.col("period").isin(periods)
        & F.col("insurance_type").isin(r["insurance_types"])
        & (F.col("contribution_base_cny") >= float(r["min_contribution_base_cny"]))
    ).withColumn("n_months", F.size(F.collect_set("period").over(Window.partitionBy("member_id"))).cast("bigint"))
    j = counted.join(high.filter(F.col("n_months") >= int(r["min_months"])), on="member_id")
    facts = detail(
        period=F.col("period"),
        insurance_type=F.col("insurance_type"),
        contribution_base_cny=num(F.col("contribution_base_cny")),
        months_at_or_above=F.col("n_months"),
    )
    ins_ref = F.concat_ws("|", F.col("period"), F.col("insurance_type"))
    out["R05"] = evidence(j, "R05", INSURANCE, ins_ref, facts)

    # R06
    j = counted.join(ins, on="member_id").filter(F.col("is_civil_servant") & F.col("period").isin(periods))
    facts = detail(
        period=F.col("period"),
        insurance_type=F.col("insurance_type"),
        employer_name=F.col("employer_name"),
        is_civil_servant=F.col("is_civil_servant"),
    )
    out["R06"] = evidence(j, "R06", INSURANCE, ins_ref, facts)

    # R07
    r = p["r07"]
    funds = lineage(s["funds"]).withColumnRenamed("id_number", "member_id")
    latest = Window.partitionBy("account_no").orderBy(F.col("period").desc())
    last = (
        funds.withColumn("_rn", F.row_number().over(latest))
        .filter(F.col("_rn") == 1)
        .select("account_no", F.col("period").alias("last_period"), F.col("status").alias("account_status"))
    )
    rich = (F.col("period") == F.col("last_period")) & (F.col("balance_cny") >= float(r["min_balance_cny"]))
    deposits = F.col("period").isin(periods) & (F.col("monthly_deposit_cny") >= float(r["min_monthly_deposit_cny"]))
    f = (
        funds.join(last, on="account_no")
        .filter(F.col("account_status").isin(r["account_statuses"]) & (rich | deposits))
        .withColumn("reason", F.when(rich, F.lit("balance")).otherwise(F.lit("deposit")))
    )
    j = counted.join(f, on="member_id")
    facts = detail(
        account_no=F.col("account_no"),
        period=F.col("period"),
        status=F.col("account_status"),
        balance_cny=num(F.col("balance_cny")),
        monthly_deposit_cny=num(F.col("monthly_deposit_cny")),
        reason=F.col("reason"),
    )
    out["R07"] = evidence(j, "R07", FUNDS, F.concat_ws("|", F.col("account_no"), F.col("period")), facts)

    # R08
    r = p["r08"]
    h = lineage(s["households"]).withColumnRenamed("id_number", "member_id").withColumn("ref", F.lit(""))
    j = counted.join(h, on="member_id", how="left")
    condition = F.col("status").isin(r["flagged_statuses"])
    if r["flag_missing"]:
        condition = condition | F.col("ref").isNull()
    j = j.filter(condition)
    facts = detail(
        registration=F.coalesce(F.col("status"), F.lit("missing")),
        status_date=F.col("status_date"),
        snapshot_batch=F.lit(s["households_batch"]),
    )
    out["R08"] = evidence(j, "R08", HOUSEHOLDS, F.col("ref"), facts)

    # R09
    c = s["counted"]
    multi = (
        c.groupBy("member_id")
        .agg(F.countDistinct("case_id").alias("n_cases"))
        .filter(F.col("n_cases") > int(p["r09"]["max_active_cases"]))
    )
    others = lineage(c).select(
        "member_id", F.col("case_id").alias("other_case_id"), "ev_batch_id", "ev_source_file", "ev_row_number"
    )
    j = (
        counted.join(multi, on="member_id")
        .join(others, on="member_id")
        .filter(F.col("other_case_id") != F.col("case_id"))
    )
    facts = detail(other_case_id=F.col("other_case_id"), cases_counted=F.col("n_cases"))
    out["R09"] = evidence(j, "R09", MEMBERS, F.col("other_case_id"), facts)
    return out


def whole_months(as_of: Any, since: Any) -> Any:
    from pyspark.sql import functions as F

    months = (
        (F.year(as_of) - F.year(since)) * 12
        + F.month(as_of)
        - F.month(since)
        - F.when(F.dayofmonth(as_of) < F.dayofmonth(since), 1).otherwise(0)
    )
    return F.greatest(months, F.lit(0))


def run_spark(
    spark: Any,
    warehouse: Warehouse,
    plans: dict[str, TablePlan],
    params: Params,
    link: Callable[[pa.Table, pa.Table], pa.Table],
    skip: frozenset[str] = frozenset(),
) -> pa.Table:
    """Every rule's evidence rows (RAW_SCHEMA), computed by Spark Connect."""
    from pyspark.sql import functions as F

    cases = load_state(spark, warehouse, plans[CASES], None)
    members = load_state(spark, warehouse, plans[MEMBERS], None)
    counted = (
        members.withColumnRenamed("member_id_number", "member_id")
        .join(cases.drop(*LINEAGE), on="case_id")
        .filter(F.col("status").isin(params["counted_case_statuses"]))
        .select(
            "case_id",
            "member_id",
            "member_name",
            *LINEAGE,
            F.col("division_code").alias("community_code"),
            "case_type",
            "monthly_amount_cny",
        )
    )
    counted_ids = counted.select("member_id").distinct()
    states: dict[str, Any] = {"counted": counted}
    for cid in (CREMATIONS, CERTIFICATES, VEHICLES, ENTERPRISES, SHAREHOLDERS, ESTATES, INSURANCE, FUNDS, HOUSEHOLDS):
        states[TABLES[cid][0]] = load_state(spark, warehouse, plans[cid], counted_ids)
    states["households_batch"] = plans[HOUSEHOLDS].last_batch_id
    certificates = (
        states["certificates"]
        .filter(F.col("id_number").isNull() & (F.col("death_date") <= F.lit(params.as_of).cast("date")))
        .select("certificate_no", "name", "gender", "birth_date")
        .toArrow()
    )
    people = counted.select("member_id", "member_name").distinct().toArrow()
    pairs = link(certificates, people)
    linked = spark.createDataFrame(pairs.to_pandas(), _ddl(LINK_SCHEMA))
    selected = [frame for code, frame in rules(states, params, linked).items() if code not in skip]
    union = reduce(lambda a, b: a.unionByName(b), selected)
    amount = F.when(
        F.col("rule_code") == "R01",
        F.col("monthly_amount_cny") * whole_months(F.lit(params.as_of).cast("date"), F.col("death_date")),
    ).otherwise(F.col("monthly_amount_cny"))
    result = union.withColumn("amount_at_risk_cny", amount.cast("double")).select(*RAW_SCHEMA.names).toArrow()
    return result.cast(RAW_SCHEMA)
