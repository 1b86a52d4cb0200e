"""A straightforward pandas implementation of the nine rules: the benchmark's baseline.

Same inputs (the as-of plan), same linkage, same evidence rows (RAW_SCHEMA) as the engines, written the
way an analyst would: read each table whole into pandas, keep the latest row per key, merge, filter.
It lives in bench/ because only the benchmark and the tests use it: it measures the engines, and the tests check
that it agrees with them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
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
    MEMBERS,
    RAW_SCHEMA,
    SHAREHOLDERS,
    VEHICLES,
    Params,
    whole_months,
)


def load_state(warehouse: Warehouse, plan: TablePlan) -> pd.DataFrame:
    _, columns, _ = TABLES[plan.contract.id]
    wanted = list(dict.fromkeys([*columns, *plan.contract.primary_key, *LINEAGE]))
    if plan.is_empty:
        table = plan.contract.bronze_schema().empty_table().select(wanted)
    else:
        table = warehouse.table(plan.table).to_pyarrow_table(
            filters=[("_batch_id", "in", list(plan.batch_ids))], columns=wanted
        )
    frame = table.to_pandas()
    if plan.needs_dedupe:
        frame["_ord"] = frame["_batch_id"].map(dict(zip(plan.batch_ids, plan.ordinals, strict=True)))
        frame = frame.sort_values("_ord").drop_duplicates(list(plan.contract.primary_key), keep="last")
        frame = frame.drop(columns="_ord")
    return frame


def _num(values: pd.Series) -> pd.Series:
    return values.map(lambda v: None if pd.isna(v) else f"{v:.2f}")


def _text(values: pd.Series) -> pd.Series:
    def one(v: object) -> str | None:
        if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NaT:
            return None
        if isinstance(v, bool | np.bool_):
            return "true" if v else "false"
        return str(v)

    return values.map(one)


def _evidence(
    j: pd.DataFrame, rule: str, contract: str, ref: pd.Series, facts: dict[str, pd.Series], death: str | None = None
) -> pd.DataFrame:
    keys = list(facts)
    texts = [_text(v).tolist() if not isinstance(v, str) else [v] * len(j) for v in facts.values()]
    details = [list(zip(keys, vals, strict=True)) for vals in zip(*texts, strict=True)] if len(j) else []
    return pd.DataFrame(
        {
            "case_id": j["case_id"].to_numpy(),
            "rule_code": rule,
            "member_id": j["member_id"].to_numpy(),
            "evidence_contract": contract,
            "evidence_ref": ref.to_numpy() if len(j) else [],
            "evidence_batch_id": j["_batch_id"].to_numpy(),
            "evidence_source_file": j["_source_file"].to_numpy(),
            "evidence_row_number": j["_row_number"].to_numpy(),
            "detail": details,
            "match_method": "probabilistic" if "match_probability" in j else "exact_id",
            "match_probability": j["match_probability"].to_numpy() if "match_probability" in j else np.nan,
            "death_date": j[death].to_numpy() if death else None,
            "community_code": j["community_code"].to_numpy(),
            "case_type": j["case_type"].to_numpy(),
            "monthly_amount_cny": j["monthly_amount_cny"].to_numpy(),
        }
    )


def run_pandas(
    warehouse: Warehouse,
    plans: dict[str, TablePlan],
    params: Params,
    link: Callable[[pa.Table, pa.Table], pa.Table],
    skip: frozenset[str] = frozenset(),
) -> pa.Table:
    p = params
    periods = list(p.periods)
    cases = load_state(warehouse, plans[CASES])
    members = load_state(warehouse, plans[MEMBERS])
    counted = members.rename(columns={"member_id_number": "member_id"}).merge(
        cases.drop(columns=list(LINEAGE)), on="case_id"
    )
    counted = counted[counted["status"].isin(p["counted_case_statuses"])].rename(
        columns={"division_code": "community_code"}
    )
    base = counted[["case_id", "member_id", "community_code", "case_type", "monthly_amount_cny"]]
    s = {name: load_state(warehouse, plans[cid]) for cid, (name, _, _) in TABLES.items() if cid not in (CASES, MEMBERS)}
    out: list[pd.DataFrame] = []

    def on_member(frame: pd.DataFrame, column: str) -> pd.DataFrame:
        return base.merge(frame.rename(columns={column: "member_id"}), on="member_id")

    # R01
    as_of = p.as_of
    crem = on_member(s["cremations"], "id_number")
    crem = crem[crem["death_date"] <= as_of]
    out.append(
        _evidence(
            crem,
            "R01",
            CREMATIONS,
            crem["record_id"],
            {"source": "cremation", "death_date": crem["death_date"], "cremation_date": crem["cremation_date"]},
            "death_date",
        )
    )
    certs = s["certificates"]
    cj = on_member(certs, "id_number")
    cj = cj[cj["death_date"] <= as_of]
    out.append(
        _evidence(
            cj,
            "R01",
            CERTIFICATES,
            cj["certificate_no"],
            {"source": "death_certificate", "death_date": cj["death_date"]},
            "death_date",
        )
    )
    idless = certs[certs["id_number"].isna() & (certs["death_date"] <= as_of)]
    pairs = link(
        pa.Table.from_pandas(idless[["certificate_no", "name", "gender", "birth_date"]], preserve_index=False),
        pa.Table.from_pandas(counted[["member_id", "member_name"]].drop_duplicates(), preserve_index=False),
    ).to_pandas()
    lj = pairs.merge(certs.drop(columns="id_number"), on="certificate_no").merge(base, on="member_id")
    lj = lj[lj["death_date"] <= as_of]
    facts = {
        "source": "death_certificate",
        "death_date": lj["death_date"],
        "certificate_name": lj["name"],
        "certificate_gender": lj["gender"],
        "certificate_birth_date": lj["birth_date"],
        "match_levels": lj["match_levels"],
    }
    out.append(_evidence(lj, "R01", CERTIFICATES, lj["certificate_no"], facts, "death_date"))

    # R02
    r = p["r02"]
    v = on_member(s["vehicles"], "owner_id_number")
    v = v[
        v["status"].isin(r["vehicle_statuses"])
        & v["use_nature"].isin(r["use_natures"])
        & v["vehicle_type"].isin(r["vehicle_types"])
    ]
    ref = v["plate_no"] + "|" + v["registered_date"].astype(str)
    facts = {k: v[k] for k in ("plate_no", "vehicle_type", "use_nature", "status")}
    out.append(_evidence(v, "R02", VEHICLES, ref, facts))

    # R03
    r = p["r03"]
    firms = s["enterprises"]
    ok = firms["status"].isin(r["enterprise_statuses"]) & (
        firms["entity_type"].isin(r["entity_types"])
        | (firms["registered_capital_wan_cny"] >= float(r["min_registered_capital_wan_cny"]))
    )
    firms = firms[ok]

    def firm(j: pd.DataFrame, name: str) -> dict[str, pd.Series]:
        return {
            "uscc": j["uscc"],
            "enterprise_name": j[name],
            "entity_type": j["entity_type"],
            "status": j["status"],
            "registered_capital_wan_cny": _num(j["registered_capital_wan_cny"]),
        }

    legal = on_member(firms, "legal_rep_id_number")
    out.append(
        _evidence(legal, "R03", ENTERPRISES, legal["uscc"], {"role": "legal_representative", **firm(legal, "name")})
    )
    holders = s["shareholders"]
    holders = on_member(holders[holders["shareholder_type"].isin(r["shareholder_types"])], "shareholder_id_number")
    hj = holders.merge(firms.drop(columns=[*LINEAGE, "legal_rep_id_number"]), on="uscc")
    facts = {
        "role": "shareholder",
        "subscribed_capital_wan_cny": _num(hj["subscribed_capital_wan_cny"]),
        **firm(hj, "name"),
    }
    out.append(_evidence(hj, "R03", SHAREHOLDERS, hj["uscc"] + "|" + hj["shareholder_key"], facts))

    # R04
    r = p["r04"]
    est = on_member(s["estates"], "owner_id_number")
    est = est[~est["status"].isin(r["excluded_statuses"])]
    residential = est["property_use"].isin(r["residential_uses"])
    n_res = est[residential].groupby("case_id")["certificate_no"].nunique()
    est = est.assign(n_res=est["case_id"].map(n_res).fillna(0).astype("int64"))
    est = est[
        est["property_use"].isin(r["business_uses"])
        | (residential & (est["n_res"] > int(r["max_residential_certificates"])))
    ]
    facts = {
        "certificate_no": est["certificate_no"],
        "property_use": est["property_use"],
        "status": est["status"],
        "share_ratio": _num(est["share_ratio"]),
        "case_residential_certificates": est["n_res"],
    }
    out.append(_evidence(est, "R04", ESTATES, est["certificate_no"], facts))

    # R05
    r = p["r05"]
    ins = s["insurance"]
    high = ins[
        ins["period"].isin(periods)
        & ins["insurance_type"].isin(r["insurance_types"])
        & (ins["contribution_base_cny"] >= float(r["min_contribution_base_cny"]))
    ]
    high = high.assign(n_months=high.groupby("id_number")["period"].transform("nunique").astype("int64"))
    high = on_member(high[high["n_months"] >= int(r["min_months"])], "id_number")
    facts = {
        "period": high["period"],
        "insurance_type": high["insurance_type"],
        "contribution_base_cny": _num(high["contribution_base_cny"]),
        "months_at_or_above": high["n_months"],
    }
    out.append(_evidence(high, "R05", INSURANCE, high["period"] + "|" + high["insurance_type"], facts))

    # R06
    civil = on_member(ins[ins["is_civil_servant"] & ins["period"].isin(periods)], "id_number")
    facts = {k: civil[k] for k in ("period", "insurance_type", "employer_name", "is_civil_servant")}
    out.append(_evidence(civil, "R06", INSURANCE, civil["period"] + "|" + civil["insurance_type"], facts))

    # R07
    r = p["r07"]
    funds = s["funds"]
    last = funds.sort_values("period").drop_duplicates("account_no", keep="last")[["account_no", "period", "status"]]
    f = funds.merge(last.rename(columns={"period": "last_period", "status": "account_status"}), on="account_no")
    rich = (f["period"] == f["last_period"]) & (f["balance_cny"] >= float(r["min_balance_cny"]))
    deposits = f["period"].isin(periods) & (f["monthly_deposit_cny"] >= float(r["min_monthly_deposit_cny"]))
    f = f.assign(reason=np.where(rich, "balance", "deposit"))
    f = on_member(f[f["account_status"].isin(r["account_statuses"]) & (rich | deposits)], "id_number")
    facts = {
        "account_no": f["account_no"],
        "period": f["period"],
        "status": f["account_status"],
        "balance_cny": _num(f["balance_cny"]),
        "monthly_deposit_cny": _num(f["monthly_deposit_cny"]),
        "reason": f["reason"],
    }
    out.append(_evidence(f, "R07", FUNDS, f["account_no"] + "|" + f["period"], facts))

    # R08
    if "R08" not in skip:
        r = p["r08"]
        h = base.merge(
            s["households"].rename(columns={"id_number": "member_id"}).assign(ref=""), on="member_id", how="left"
        )
        flagged = h["status"].isin(r["flagged_statuses"])
        if r["flag_missing"]:
            flagged |= h["ref"].isna()
        h = h[flagged]
        facts = {
            "registration": h["status"].fillna("missing"),
            "status_date": h["status_date"],
            "snapshot_batch": str(plans[HOUSEHOLDS].last_batch_id),
        }
        out.append(_evidence(h, "R08", HOUSEHOLDS, h["ref"].where(h["ref"].notna(), None), facts))

    # R09
    n_cases = counted.groupby("member_id")["case_id"].nunique()
    multi = n_cases[n_cases > int(p["r09"]["max_active_cases"])]
    mine = base[base["member_id"].isin(multi.index)]
    others = counted[["member_id", "case_id", *LINEAGE]].rename(columns={"case_id": "other_case_id"})
    j = mine.merge(others, on="member_id")
    j = j[j["other_case_id"] != j["case_id"]]
    j = j.assign(n_cases=j["member_id"].map(multi))
    facts = {"other_case_id": j["other_case_id"], "cases_counted": j["n_cases"]}
    out.append(_evidence(j, "R09", MEMBERS, j["other_case_id"], facts))

    rows = pd.concat([o for o in out if len(o)], ignore_index=True)
    months = rows["death_date"].map(lambda d: whole_months(d, as_of) if isinstance(d, type(as_of)) else 0)
    rows["amount_at_risk_cny"] = np.where(
        rows["rule_code"] == "R01", rows["monthly_amount_cny"] * months, rows["monthly_amount_cny"]
    )
    rows["match_probability"] = rows["match_probability"].astype("float64")
    rows["evidence_ref"] = rows["evidence_ref"].astype(object).where(rows["evidence_ref"].notna(), None)
    return pa.Table.from_pandas(rows[RAW_SCHEMA.names], schema=RAW_SCHEMA, preserve_index=False)
