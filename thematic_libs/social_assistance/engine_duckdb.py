"""The embedded engine: the nine rules as DuckDB SQL over the bronze Delta tables.

DuckDB cannot load its delta extension offline (../shared/STACK.md). For a local warehouse it scans
the Parquet files of the planned batches itself (deltalake only lists them), which is parallel and
pushes filters and join filters into the scan; on an object store each input is a deltalake Arrow
dataset pruned to the planned batches. States are materialised once (`CREATE TABLE`) and every rule
reads them. Tables whose primary key contains the person's ID number are cut down to counted members
before the per-key deduplication (exact, since the filter is on a key column); vehicles and
provident-fund accounts to keys that ever named one; the others are deduplicated whole, because an
owner or a legal representative can change between batches.
"""

from __future__ import annotations

from collections.abc import Callable

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from ingestion.warehouse import Warehouse
from thematic_libs.social_assistance.asof import TablePlan
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
)

LINEAGE = ("_batch_id", "_source_file", "_row_number")

# table name in SQL, columns read, the ID column to cut down to counted members when it is in the key.
TABLES: dict[str, tuple[str, tuple[str, ...], str | None]] = {
    CASES: ("cases", ("case_id", "case_type", "division_code", "monthly_amount_cny", "status"), None),
    MEMBERS: ("members", ("case_id", "member_id_number", "member_name"), None),
    CREMATIONS: ("cremations", ("record_id", "id_number", "name", "death_date", "cremation_date"), None),
    CERTIFICATES: (
        "certificates",
        ("certificate_no", "id_number", "name", "gender", "birth_date", "death_date"),
        None,
    ),
    VEHICLES: (
        "vehicles",
        ("plate_no", "registered_date", "owner_id_number", "vehicle_type", "use_nature", "status"),
        None,
    ),
    ENTERPRISES: (
        "enterprises",
        (
            "uscc",
            "name",
            "entity_type",
            "legal_rep_id_number",
            "legal_rep_name",
            "registered_capital_wan_cny",
            "status",
        ),
        None,
    ),
    SHAREHOLDERS: (
        "shareholders",
        (
            "uscc",
            "shareholder_key",
            "shareholder_type",
            "shareholder_id_number",
            "shareholder_name",
            "subscribed_capital_wan_cny",
        ),
        None,
    ),
    ESTATES: (
        "estates",
        ("certificate_no", "owner_id_number", "share_ratio", "property_use", "status"),
        "owner_id_number",
    ),
    INSURANCE: (
        "insurance",
        ("id_number", "period", "insurance_type", "contribution_base_cny", "is_civil_servant", "employer_name"),
        "id_number",
    ),
    FUNDS: (
        "funds",
        ("account_no", "id_number", "period", "monthly_deposit_cny", "balance_cny", "status"),
        None,
    ),
    HOUSEHOLDS: ("households", ("id_number", "status", "status_date"), "id_number"),
}


def q(value: object) -> str:
    """A SQL literal (strings quoted and escaped)."""
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


def in_list(values: list | tuple) -> str:
    return "(" + ", ".join(q(v) for v in values) + ")" if values else "(NULL)"


def num(expr: str) -> str:
    """Text of a number with two decimals, identical in DuckDB and Spark."""
    return f"CAST(CAST({expr} AS DECIMAL(18, 2)) AS VARCHAR)"


def txt(expr: str) -> str:
    return f"CAST({expr} AS VARCHAR)"


def detail(**items: str) -> str:
    keys = ", ".join(q(k) for k in items)
    values = ", ".join(f"CAST({v} AS VARCHAR)" for v in items.values())
    return f"MAP([{keys}], [{values}])"


# Tables whose person column is not in the key: (person column, a key column). Keys that ever had a counted
# member are kept whole (every batch's row of them), which is exact: a key whose latest row names a counted
# member is among them. Only then is the latest row per key taken.
GROUPED = {VEHICLES: ("owner_id_number", "plate_no"), FUNDS: ("id_number", "account_no")}


def prefilter(contract_id: str, p: Params) -> str | None:
    """A condition on a key column that every rule reading the table applies anyway (so exact before dedup).

    Social insurance is read by R05 and R06 only, both for the months of the window; the period is in the
    key, so rows of other months never matter, and Parquet statistics let DuckDB skip their row groups.
    """
    if contract_id == INSURANCE:
        return f"period IN {in_list(list(p.periods))}"
    return None


def parquet_files(warehouse: Warehouse, plan: TablePlan) -> list[tuple[str, int, list[str]]] | None:
    """(batch id, ordinal, data files) of each planned batch that has files, or None if DuckDB cannot read them.

    DuckDB scans a local Delta table's Parquet files itself, in parallel and with filter and join-filter
    pushdown, which is several times faster than going through an Arrow dataset. That is exact only for a
    plain table (`Warehouse.batch_files`); object stores and anything else go through deltalake.
    """
    files = warehouse.batch_files(plan.table, plan.batch_ids)
    if files is None:
        return None
    ordinals = dict(zip(plan.batch_ids, plan.ordinals, strict=True))
    # a loaded batch whose rows were all quarantined wrote no file
    return [(batch_id, ordinals[batch_id], uris) for batch_id, uris in files.items() if uris]


def arrow_cut(dataset: ds.Dataset, plan: TablePlan, wanted: list[str], ids: pa.Array) -> pa.Table | ds.Dataset:
    """The dataset cut down to rows that can concern counted members (`ids`), read with pyarrow `is_in`.

    The same cut as `load_state` makes in SQL: by the ID column when it is in the key, by the keys that
    ever named a counted member for GROUPED tables; other tables are returned whole.
    """
    id_column = TABLES[plan.contract.id][2]
    if id_column:
        return dataset.to_table(columns=wanted, filter=pc.field(id_column).isin(ids))
    if plan.contract.id in GROUPED:
        person, group = GROUPED[plan.contract.id]
        touched = pc.unique(dataset.to_table(columns=[group], filter=pc.field(person).isin(ids))[group])
        return dataset.to_table(columns=wanted, filter=pc.field(group).isin(touched))
    return dataset


def register_source(
    con: duckdb.DuckDBPyConnection,
    warehouse: Warehouse,
    plan: TablePlan,
    name: str,
    wanted: list[str],
    native_parquet: bool = True,
    cut: bool = False,
) -> None:
    """View `<name>_src`: the `wanted` columns of the plan's bronze rows, plus `_ord`, their batch's ordinal.

    Only files of the planned batches are opened: later batches and those of other dates never are.
    `native_parquet=False` forces the deltalake Arrow dataset used for object stores; there DuckDB cannot
    push the counted-member semi-join into the scan, so with `cut` pyarrow applies it (`arrow_cut`).
    """
    columns = [c for c in wanted if c != "_batch_id"]
    files = parquet_files(warehouse, plan) if native_parquet and not plan.is_empty else None
    if files:
        select = ", ".join(columns)
        scans = " UNION ALL ".join(
            f"SELECT {select}, {q(batch_id)} AS _batch_id, {ordinal} AS _ord "
            f"FROM read_parquet({'[' + ', '.join(q(f) for f in paths) + ']'}, union_by_name = true)"
            for batch_id, ordinal, paths in files
        )
        try:
            con.execute(f"CREATE OR REPLACE VIEW {name}_src AS {scans}")
            return
        except duckdb.BinderException:
            # A wanted column absent from every file of a batch (added by a later contract version):
            # deltalake fills it with nulls as the Delta schema says, read_parquet cannot.
            files = None
    if plan.is_empty or files == []:
        source: pa.Table | ds.Dataset = plan.contract.bronze_schema().empty_table().select(wanted)
    else:
        dataset = warehouse.table(plan.table).to_pyarrow_dataset(
            file_pruning_predicate=[("_batch_id", "in", list(plan.batch_ids))]
        )
        source = dataset.filter(pc.field("_batch_id").isin(list(plan.batch_ids)))
        if cut:
            ids = con.sql("SELECT member_id FROM counted_ids").to_arrow_table()["member_id"].combine_chunks()
            source = arrow_cut(source, plan, wanted, ids)
    order = pa.table({"batch_id": pa.array(plan.batch_ids, pa.string()), "ord": pa.array(plan.ordinals, pa.int64())})
    con.register(f"{name}_arrow", source)
    con.register(f"{name}_ord", order)
    select = ", ".join(f"s.{c}" for c in wanted)
    con.execute(
        f"CREATE OR REPLACE VIEW {name}_src AS SELECT {select}, o.ord AS _ord "
        f"FROM {name}_arrow s JOIN {name}_ord o ON s._batch_id = o.batch_id"
    )


def load_state(
    con: duckdb.DuckDBPyConnection,
    warehouse: Warehouse,
    plan: TablePlan,
    params: Params | None = None,
    cut: bool = False,
    native_parquet: bool = True,
) -> None:
    """`CREATE TABLE <name>`: one row per primary key as of the date, with its bronze lineage.

    With `cut` the rows are first cut down to those that can matter, all inside DuckDB so that the scan
    gets the filters: tables keyed by the person's ID number to counted members (table `counted_ids`),
    vehicles and provident-fund accounts to keys that ever named one; `prefilter` applies as well.
    """
    name, columns, id_column = TABLES[plan.contract.id]
    wanted = list(dict.fromkeys([*columns, *plan.contract.primary_key, *LINEAGE]))
    register_source(con, warehouse, plan, name, wanted, native_parquet, cut)
    conditions = []
    if cut and id_column:
        conditions.append(f"{id_column} IN (SELECT member_id FROM counted_ids)")
    elif cut and plan.contract.id in GROUPED:
        person, group = GROUPED[plan.contract.id]
        conditions.append(
            f"{group} IN (SELECT {group} FROM {name}_src WHERE {person} IN (SELECT member_id FROM counted_ids))"
        )
    extra = prefilter(plan.contract.id, params) if params is not None else None
    if extra:
        conditions.append(extra)
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    select = ", ".join(wanted)
    latest = ""
    if plan.needs_dedupe:
        keys = ", ".join(plan.contract.primary_key)
        latest = f" QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY _ord DESC) = 1"
    con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT {select} FROM {name}_src{where}{latest}")


def counted_members_sql(p: Params) -> str:
    return f"""
        CREATE OR REPLACE TABLE counted AS
        SELECT m.case_id, m.member_id_number AS member_id, m.member_name,
               m._batch_id, m._source_file, m._row_number,
               c.division_code AS community_code, c.case_type, c.monthly_amount_cny
        FROM members m JOIN cases c ON c.case_id = m.case_id
        WHERE c.status IN {in_list(p["counted_case_statuses"])};
        CREATE OR REPLACE TABLE counted_ids AS SELECT DISTINCT member_id FROM counted;
    """


def _evidence(
    rule: str,
    contract: str,
    ref: str,
    alias: str,
    details: str,
    death: str = "NULL",
    probabilistic: bool = False,
) -> str:
    """The common column list of one rule's evidence rows (`c` is the counted member, `l` the linkage)."""
    method = "'probabilistic'" if probabilistic else "'exact_id'"
    probability = "l.match_probability" if probabilistic else "CAST(NULL AS DOUBLE)"
    return (
        f"c.case_id, '{rule}' AS rule_code, c.member_id, '{contract}' AS evidence_contract, "
        f"{ref} AS evidence_ref, {alias}._batch_id AS evidence_batch_id, "
        f"{alias}._source_file AS evidence_source_file, {alias}._row_number AS evidence_row_number, "
        f"{details} AS detail, {method} AS match_method, {probability} AS match_probability, "
        f"CAST({death} AS DATE) AS death_date, c.community_code, c.case_type, c.monthly_amount_cny"
    )


def _r01(p: Params) -> str | None:
    as_of = f"DATE {q(p.as_of.isoformat())}"
    sources = set(p["r01"]["sources"])
    parts = []
    if CREMATIONS in sources:
        cremation = detail(source=q("cremation"), death_date="r.death_date", cremation_date="r.cremation_date")
        ev = _evidence("R01", CREMATIONS, "r.record_id", "r", cremation, "r.death_date")
        parts.append(
            f"SELECT {ev} FROM counted c JOIN cremations r ON r.id_number = c.member_id WHERE r.death_date <= {as_of}"
        )
    if CERTIFICATES in sources:
        certificate = detail(source=q("death_certificate"), death_date="r.death_date")
        ev = _evidence("R01", CERTIFICATES, "r.certificate_no", "r", certificate, "r.death_date")
        parts.append(
            f"SELECT {ev} FROM counted c JOIN certificates r ON r.id_number = c.member_id WHERE r.death_date <= {as_of}"
        )
        linked = detail(
            source=q("death_certificate"),
            death_date="r.death_date",
            certificate_name="r.name",
            certificate_gender="r.gender",
            certificate_birth_date="r.birth_date",
            match_levels="l.match_levels",
        )
        ev = _evidence("R01", CERTIFICATES, "r.certificate_no", "r", linked, "r.death_date", probabilistic=True)
        parts.append(
            f"SELECT {ev} FROM linked l JOIN certificates r ON r.certificate_no = l.certificate_no "
            f"JOIN counted c ON c.member_id = l.member_id WHERE r.death_date <= {as_of}"
        )
    return " UNION ALL ".join(parts) if parts else None


def _r02(p: Params) -> str:
    r = p["r02"]
    ref = "v.plate_no || '|' || CAST(v.registered_date AS VARCHAR)"
    facts = detail(plate_no="v.plate_no", vehicle_type="v.vehicle_type", use_nature="v.use_nature", status="v.status")
    return (
        f"SELECT {_evidence('R02', VEHICLES, ref, 'v', facts)} "
        f"FROM counted c JOIN vehicles v ON v.owner_id_number = c.member_id "
        f"WHERE v.status IN {in_list(r['vehicle_statuses'])} AND v.use_nature IN {in_list(r['use_natures'])} "
        f"AND v.vehicle_type IN {in_list(r['vehicle_types'])}"
    )


def r03_qualifies(p: Params) -> str:
    """SQL condition on enterprise `e`: a registration that R03 counts (status, type or capital)."""
    r = p["r03"]
    return (
        f"e.status IN {in_list(r['enterprise_statuses'])} AND (e.entity_type IN {in_list(r['entity_types'])} "
        f"OR e.registered_capital_wan_cny >= {float(r['min_registered_capital_wan_cny'])})"
    )


def _r03(p: Params) -> str:
    r = p["r03"]
    qualifies = r03_qualifies(p)
    firm = {
        "uscc": "e.uscc",
        "enterprise_name": "e.name",
        "entity_type": "e.entity_type",
        "status": "e.status",
        "registered_capital_wan_cny": num("e.registered_capital_wan_cny"),
    }
    rep = _evidence("R03", ENTERPRISES, "e.uscc", "e", detail(role=q("legal_representative"), **firm))
    holder_facts = detail(role=q("shareholder"), subscribed_capital_wan_cny=num("s.subscribed_capital_wan_cny"), **firm)
    holder = _evidence("R03", SHAREHOLDERS, "s.uscc || '|' || s.shareholder_key", "s", holder_facts)
    return (
        f"SELECT {rep} FROM counted c JOIN enterprises e ON e.legal_rep_id_number = c.member_id WHERE {qualifies} "
        f"UNION ALL SELECT {holder} FROM counted c JOIN shareholders s ON s.shareholder_id_number = c.member_id "
        f"JOIN enterprises e ON e.uscc = s.uscc "
        f"WHERE s.shareholder_type IN {in_list(r['shareholder_types'])} AND {qualifies}"
    )


def _r04(p: Params) -> str:
    r = p["r04"]
    residential, business = in_list(r["residential_uses"]), in_list(r["business_uses"])
    facts = detail(
        certificate_no="x.certificate_no",
        property_use="x.property_use",
        status="x.status",
        share_ratio=num("x.share_ratio"),
        case_residential_certificates="x.n_res",
    )
    return (
        f"SELECT {_evidence('R04', ESTATES, 'x.certificate_no', 'x', facts)} "
        f"FROM counted c JOIN (SELECT e.*, c2.case_id AS owner_case, "
        f"count(DISTINCT CASE WHEN e.property_use IN {residential} THEN e.certificate_no END) "
        f"OVER (PARTITION BY c2.case_id) AS n_res "
        f"FROM counted c2 JOIN estates e ON e.owner_id_number = c2.member_id "
        f"WHERE e.status NOT IN {in_list(r['excluded_statuses'])}) x "
        f"ON x.owner_case = c.case_id AND x.owner_id_number = c.member_id "
        f"WHERE x.property_use IN {business} "
        f"OR (x.property_use IN {residential} AND x.n_res > {int(r['max_residential_certificates'])})"
    )


def _r05(p: Params) -> str:
    r = p["r05"]
    facts = detail(
        period="i.period",
        insurance_type="i.insurance_type",
        contribution_base_cny=num("i.contribution_base_cny"),
        months_at_or_above="i.n_months",
    )
    ev = _evidence("R05", INSURANCE, "i.period || '|' || i.insurance_type", "i", facts)
    return (
        f"SELECT {ev} FROM counted c JOIN (SELECT *, count(DISTINCT period) OVER (PARTITION BY id_number) AS n_months "
        f"FROM insurance WHERE period IN {in_list(list(p.periods))} "
        f"AND insurance_type IN {in_list(r['insurance_types'])} "
        f"AND contribution_base_cny >= {float(r['min_contribution_base_cny'])}) i ON i.id_number = c.member_id "
        f"WHERE i.n_months >= {int(r['min_months'])}"
    )


def _r06(p: Params) -> str:
    facts = detail(
        period="i.period",
        insurance_type="i.insurance_type",
        employer_name="i.employer_name",
        is_civil_servant="i.is_civil_servant",
    )
    ev = _evidence("R06", INSURANCE, "i.period || '|' || i.insurance_type", "i", facts)
    return (
        f"SELECT {ev} FROM counted c JOIN insurance i ON i.id_number = c.member_id "
        f"WHERE i.is_civil_servant AND i.period IN {in_list(list(p.periods))}"
    )


def _r07(p: Params) -> str:
    r = p["r07"]
    rich = f"f.period = a.period AND f.balance_cny >= {float(r['min_balance_cny'])}"
    deposits = (
        f"f.period IN {in_list(list(p.periods))} AND f.monthly_deposit_cny >= {float(r['min_monthly_deposit_cny'])}"
    )
    facts = detail(
        account_no="f.account_no",
        period="f.period",
        status="f.account_status",
        balance_cny=num("f.balance_cny"),
        monthly_deposit_cny=num("f.monthly_deposit_cny"),
        reason="f.reason",
    )
    ev = _evidence("R07", FUNDS, "f.account_no || '|' || f.period", "f", facts)
    return (
        f"SELECT {ev} FROM counted c JOIN (SELECT f.*, a.status AS account_status, "
        f"CASE WHEN {rich} THEN 'balance' ELSE 'deposit' END AS reason FROM funds f JOIN ("
        f"SELECT account_no, period, status FROM funds QUALIFY row_number() OVER "
        f"(PARTITION BY account_no ORDER BY period DESC) = 1) a ON a.account_no = f.account_no "
        f"WHERE a.status IN {in_list(r['account_statuses'])} AND (({rich}) OR ({deposits}))) f "
        f"ON f.id_number = c.member_id"
    )


def _r08(p: Params) -> str:
    r = p["r08"]
    missing = "h.id_number IS NULL" if r["flag_missing"] else "FALSE"
    facts = detail(
        registration="coalesce(h.status, 'missing')", status_date="h.status_date", snapshot_batch="hb.batch_id"
    )
    return (
        f"SELECT {_evidence('R08', HOUSEHOLDS, 'h.ref', 'h', facts)} "
        f"FROM counted c LEFT JOIN (SELECT *, '' AS ref FROM households) h ON h.id_number = c.member_id "
        f"CROSS JOIN households_batch hb WHERE {missing} OR h.status IN {in_list(r['flagged_statuses'])}"
    )


def _r09(p: Params) -> str:
    facts = detail(other_case_id="o.case_id", cases_counted="n.n_cases")
    return (
        f"SELECT {_evidence('R09', MEMBERS, 'o.case_id', 'o', facts)} "
        f"FROM counted c JOIN (SELECT member_id, count(DISTINCT case_id) AS n_cases FROM counted GROUP BY member_id "
        f"HAVING count(DISTINCT case_id) > {int(p['r09']['max_active_cases'])}) n ON n.member_id = c.member_id "
        f"JOIN counted o ON o.member_id = c.member_id AND o.case_id <> c.case_id"
    )


def rule_sql(p: Params) -> dict[str, str]:
    """One SELECT per rule, all with the same columns."""
    rules = {"R01": _r01(p), "R02": _r02(p), "R03": _r03(p), "R04": _r04(p), "R05": _r05(p)}
    rules |= {"R06": _r06(p), "R07": _r07(p), "R08": _r08(p), "R09": _r09(p)}
    return {code: sql for code, sql in rules.items() if sql}


def months_sql(as_of_literal: str, since: str) -> str:
    a, d = as_of_literal, since
    return (
        f"greatest((year({a}) - year({d})) * 12 + month({a}) - month({d}) "
        f"- CASE WHEN day({a}) < day({d}) THEN 1 ELSE 0 END, 0)"
    )


def run_duckdb(
    warehouse: Warehouse,
    plans: dict[str, TablePlan],
    params: Params,
    link: Callable[[pa.Table, pa.Table], pa.Table],
    skip: frozenset[str] = frozenset(),
    threads: int | None = None,
    native_parquet: bool = True,
) -> pa.Table:
    """Every rule's evidence rows (RAW_SCHEMA). `link(certificates, members)` is the probabilistic linkage.

    `native_parquet=False` reads local tables through deltalake Arrow datasets too, as on an object store.
    """
    con = duckdb.connect()
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    try:
        load_state(con, warehouse, plans[CASES], params, native_parquet=native_parquet)
        load_state(con, warehouse, plans[MEMBERS], params, native_parquet=native_parquet)
        con.execute(counted_members_sql(params))
        for cid in (CREMATIONS, CERTIFICATES, VEHICLES, ENTERPRISES, SHAREHOLDERS, ESTATES, INSURANCE, FUNDS):
            load_state(con, warehouse, plans[cid], params, cut=True, native_parquet=native_parquet)
        load_state(con, warehouse, plans[HOUSEHOLDS], params, cut=True, native_parquet=native_parquet)
        con.register("households_batch", pa.table({"batch_id": [plans[HOUSEHOLDS].last_batch_id]}))
        certificates = con.sql(
            "SELECT certificate_no, name, gender, birth_date FROM certificates "
            f"WHERE id_number IS NULL AND death_date <= DATE {q(params.as_of.isoformat())}"
        ).to_arrow_table()
        members = con.sql("SELECT DISTINCT member_id, member_name FROM counted").to_arrow_table()
        con.register("linked", link(certificates, members))
        selects = [sql for code, sql in rule_sql(params).items() if code not in skip]
        as_of = f"DATE {q(params.as_of.isoformat())}"
        union = " UNION ALL ".join(f"({s})" for s in selects)
        amount = (
            f"CASE WHEN rule_code = 'R01' THEN monthly_amount_cny * {months_sql(as_of, 'death_date')} "
            "ELSE monthly_amount_cny END"
        )
        names = ", ".join(f for f in RAW_SCHEMA.names if f != "amount_at_risk_cny")
        result = con.sql(
            f"SELECT {names}, CAST({amount} AS DOUBLE) AS amount_at_risk_cny FROM ({union}) "
            "ORDER BY case_id, rule_code, evidence_contract, evidence_ref, member_id"
        ).to_arrow_table()
    finally:
        con.close()
    return result.select(RAW_SCHEMA.names).cast(RAW_SCHEMA)
