"""Role holders without an ID number whose name is a counted member's: candidates for a reviewer, never flags.

R03 (a member runs or owns a business) joins the enterprise register on ID numbers. A legal
representative or a personal shareholder delivered without an ID number can still be a member, but
a name alone cannot tell namesakes apart (there is no sex or birth date to compare), so such a pair
is never evidence: it goes to the linkage review list (`gold/social_assistance/linkage_pairs`,
decision `review`, no probability) with the two names and what the comparison found. Names are
compared in the one normalised form of `thematic_libs.names` (traditional characters, full-width
forms, spacing and middle dots do not hide a match); only equal normalised names are listed, and only
names that one counted member alone carries: a name two members share says nothing about which one.
At 5 million residents of the demo (whose name vocabulary repeats far more than a real register's)
that leaves 776 of 12,786 equal-name pairs.

Runs on DuckDB on the driver for both engines, like the linkage of ID-less death certificates.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from ingestion.warehouse import Warehouse
from thematic_libs.names import describe_name_match, name_columns
from thematic_libs.social_assistance.asof import TablePlan
from thematic_libs.social_assistance.engine_duckdb import in_list, load_state, r03_qualifies
from thematic_libs.social_assistance.rules import ENTERPRISES, SHAREHOLDERS, Params

NAME_PAIR_SCHEMA = pa.schema(
    [
        pa.field("evidence_contract", pa.string()),
        pa.field("record_ref", pa.string()),
        pa.field("member_id", pa.string()),
        pa.field("match_levels", pa.string()),
        pa.field("record_name", pa.string()),
        pa.field("member_name", pa.string()),
    ]
)


def role_holders_without_id(warehouse: Warehouse, plans: dict[str, TablePlan], params: Params) -> pa.Table:
    """Legal representatives and personal shareholders of R03-qualifying enterprises without an ID number."""
    con = duckdb.connect()
    try:
        for contract in (ENTERPRISES, SHAREHOLDERS):
            load_state(con, warehouse, plans[contract], params)
        qualifies = r03_qualifies(params)
        types = in_list(params["r03"]["shareholder_types"])
        return con.sql(
            f"SELECT '{ENTERPRISES}' AS evidence_contract, e.uscc AS record_ref, e.legal_rep_name AS name, "
            f"'legal representative of ' || e.name AS role FROM enterprises e "
            f"WHERE (e.legal_rep_id_number IS NULL OR trim(e.legal_rep_id_number) = '') AND {qualifies} "
            f"UNION ALL SELECT '{SHAREHOLDERS}', s.uscc || '|' || s.shareholder_key, s.shareholder_name, "
            f"'shareholder of ' || e.name FROM shareholders s JOIN enterprises e ON e.uscc = s.uscc "
            f"WHERE (s.shareholder_id_number IS NULL OR trim(s.shareholder_id_number) = '') "
            f"AND s.shareholder_type IN {types} AND {qualifies}"
        ).to_arrow_table()
    finally:
        con.close()


def name_only_pairs(holders: pa.Table, members: pa.Table) -> pa.Table:
    """(record, member) pairs whose names are equal after normalisation (NAME_PAIR_SCHEMA)."""
    if holders.num_rows == 0 or members.num_rows == 0:
        return NAME_PAIR_SCHEMA.empty_table()
    con = duckdb.connect()
    try:
        con.register(
            "holders",
            holders.append_column("name_norm", pa.array(name_columns(holders["name"].to_pylist())["name_norm"])),
        )
        con.register(
            "people",
            members.append_column(
                "name_norm", pa.array(name_columns(members["member_name"].to_pylist())["name_norm"], pa.string())
            ),
        )
        rows = (
            con.sql(
                "SELECT DISTINCT h.evidence_contract, h.record_ref, p.member_id, h.role, h.name AS record_name, "
                "p.member_name FROM holders h JOIN people p ON h.name_norm = p.name_norm "
                "WHERE p.name_norm IN (SELECT name_norm FROM people GROUP BY name_norm "
                "HAVING count(DISTINCT member_id) = 1) "
                "ORDER BY h.evidence_contract, h.record_ref, p.member_id"
            )
            .to_arrow_table()
            .to_pylist()
        )
    finally:
        con.close()
    for row in rows:
        name = describe_name_match(row["record_name"], row["member_name"])
        row["match_levels"] = (
            f"name only: {name}; {row.pop('role')} delivered without an ID number, so no sex or birth date "
            "to compare: a namesake cannot be ruled out"
        )
    return pa.Table.from_pylist(rows, schema=NAME_PAIR_SCHEMA) if rows else NAME_PAIR_SCHEMA.empty_table()
