"""Linking death certificates that carry no ID number to counted members, with Splink on DuckDB.

A certificate without an ID number still has a name, a sex and a birth date; a member's sex and birth
date are read off the (normalised) ID number. Splink scores each candidate pair with a Fellegi-Sunter
model whose m and u probabilities are fixed in `defaults.yaml` (`crosscheck.linkage`), not trained on
the run's data: ID-less certificates are a handful, far too few to estimate from, and a fixed model
makes a run reproducible. Candidate pairs share the birth date or the name; a pair is a match when its
probability reaches `threshold` (0.9 by default): exact name, sex and birth date score 0.9995, a namesake
with another birth date 0.002. The probability is kept with the evidence.

Both engines hand their inputs here and use the same result, so the linkage cannot make them differ.
"""

from __future__ import annotations

import logging
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from thematic_libs.social_assistance.rules import LINK_SCHEMA


def member_identity(members: pa.Table) -> pa.Table:
    """uid, name, gender ('1' male, '2' female: odd / even 17th character) and birth date of each member."""
    ids = members["member_id"]
    gender_digit = pc.cast(pc.utf8_slice_codeunits(ids, 16, 17), pa.int64())
    gender = pc.if_else(pc.equal(pc.bit_wise_and(gender_digit, 1), 1), "1", "2")
    birth = pc.binary_join_element_wise(
        pc.utf8_slice_codeunits(ids, 6, 10),
        pc.utf8_slice_codeunits(ids, 10, 12),
        pc.utf8_slice_codeunits(ids, 12, 14),
        "-",
    )
    return pa.table({"uid": ids, "name": members["member_name"], "gender": gender, "birth_date": birth})


def certificate_identity(certificates: pa.Table) -> pa.Table:
    birth = pc.cast(certificates["birth_date"], pa.string())
    return pa.table(
        {
            "uid": certificates["certificate_no"],
            "name": certificates["name"],
            "gender": certificates["gender"],
            "birth_date": birth,
        }
    )


def _settings(config: dict[str, Any]) -> Any:
    import splink.comparison_library as cl
    from splink import SettingsCreator, block_on

    name, birth, gender = config["name"], config["birth_date"], config["gender"]
    return SettingsCreator(
        link_type="link_only",
        unique_id_column_name="uid",
        probability_two_random_records_match=float(config["prior_match_probability"]),
        comparisons=[
            cl.JaroWinklerAtThresholds("name", [float(name["jaro_winkler_threshold"])]).configure(
                m_probabilities=list(name["m"]), u_probabilities=list(name["u"])
            ),
            cl.DamerauLevenshteinAtThresholds("birth_date", [1]).configure(
                m_probabilities=list(birth["m"]), u_probabilities=list(birth["u"])
            ),
            cl.ExactMatch("gender").configure(m_probabilities=list(gender["m"]), u_probabilities=list(gender["u"])),
        ],
        blocking_rules_to_generate_predictions=[block_on("birth_date"), block_on("name")],
        retain_intermediate_calculation_columns=False,
        retain_matching_columns=False,
    )


def link_certificates(certificates: pa.Table, members: pa.Table, config: dict[str, Any]) -> pa.Table:
    """(certificate_no, member_id, match_probability) of every pair at or above the threshold."""
    if certificates.num_rows == 0 or members.num_rows == 0:
        return LINK_SCHEMA.empty_table()
    from splink import DuckDBAPI, Linker

    logging.getLogger("splink").setLevel(logging.WARNING)
    con = duckdb.connect()
    try:
        con.register("certs_in", certificate_identity(certificates))
        con.register("members_in", member_identity(members))
        con.execute("CREATE TABLE certs AS SELECT * FROM certs_in")
        con.execute("CREATE TABLE people AS SELECT * FROM members_in")
        linker = Linker(
            ["certs", "people"],
            _settings(config),
            db_api=DuckDBAPI(connection=con),
            input_table_aliases=["certificates", "members"],
        )
        threshold = float(config["threshold"])
        predictions = linker.inference.predict(threshold_match_probability=threshold)
        pairs = con.sql(
            "SELECT CASE WHEN source_dataset_l = 'certificates' THEN uid_l ELSE uid_r END AS certificate_no, "
            "CASE WHEN source_dataset_l = 'certificates' THEN uid_r ELSE uid_l END AS member_id, "
            f"round(match_probability, 6) AS match_probability FROM {predictions.physical_name} "
            f"WHERE match_probability >= {threshold} ORDER BY certificate_no, member_id"
        ).to_arrow_table()
    finally:
        con.close()
    return pairs.cast(LINK_SCHEMA)
