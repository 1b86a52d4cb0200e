"""Linking death certificates that carry no ID number to counted members, with Splink on DuckDB.

A certificate without an ID number still has a name, a sex and a birth date; a member's sex and birth
date are read off the (normalised) ID number. Names are compared in the forms of
`thematic_libs.names` (traditional to simplified, full-width, spacing, middle dots, pinyin), so a
hospital that wrote 陳偉 for 陈伟, or a clerk who typed 张筱宇 for 张晓宇 by ear, still links.

Splink scores each candidate pair with a Fellegi-Sunter model whose m and u probabilities are fixed in
`defaults.yaml` (`crosscheck.linkage`), not trained on the run's data: ID-less certificates are a
handful, far too few to estimate from, and a fixed model makes a run reproducible. The levels, best
first (a pair takes the first that holds):

- name: equal after normalisation; pinyin equal with tones (a homophone slip); pinyin equal without
  tones; same length with one character different; Jaro-Winkler >= 0.9 on the normalised names; else;
- birth date: equal; month and day swapped; one edit apart (Damerau-Levenshtein 1); else;
- gender: equal; else.

With the default weights (prior 1 in 10,000; the Bayes factor of a level is m / u): equal name, birth
date and sex score 0.9997; traditional characters, spacing or another middle dot the same (they are
equal after normalisation); a homophone slip 0.997; pinyin equal but another tone 0.987; a swapped
month and day 0.994; a name one (non-homophone) character apart 0.85 and a one-digit birth-date typo
0.88 (both to review, not flagged); a homophone of another sex 0.79 (review); a namesake with another
birth date 0.007. A pair is linked (R01 evidence) at `threshold` (0.9) or above and goes to the review
list between `review_threshold` (0.5) and `threshold`. Each pair keeps its probability and, in
`match_levels`, the levels that fired in words a reviewer can check against the two records.

Candidate pairs share the birth date, the normalised name or the toneless pinyin. Both engines hand
their inputs here and use the same result, so the linkage cannot make them differ.
"""

from __future__ import annotations

import logging
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from thematic_libs.names import describe_name_match, name_columns
from thematic_libs.social_assistance.rules import LINK_SCHEMA

LINKED, REVIEW = "linked", "review"
PAIR_SCHEMA = pa.schema(
    [
        pa.field("certificate_no", pa.string()),
        pa.field("member_id", pa.string()),
        pa.field("match_probability", pa.float64()),
        pa.field("match_levels", pa.string()),
        pa.field("decision", pa.string()),  # linked | review
        pa.field("certificate_name", pa.string()),
        pa.field("member_name", pa.string()),
        pa.field("certificate_gender", pa.string()),
        pa.field("member_gender", pa.string()),
        pa.field("certificate_birth_date", pa.string()),
        pa.field("member_birth_date", pa.string()),
    ]
)
NAME_LEVELS = (
    ('"name_norm_l" = "name_norm_r"', "name equal after normalisation"),
    ('"name_pinyin_tones_l" = "name_pinyin_tones_r"', "pinyin equal with tones"),
    ('"name_pinyin_l" = "name_pinyin_r"', "pinyin equal without tones"),
    (
        # DuckDB's hamming() counts bytes; this counts characters (three bytes each in UTF-8).
        'length("name_norm_l") = length("name_norm_r") AND list_sum(list_transform(range(1, length("name_norm_l") + 1),'
        ' lambda i: (substr("name_norm_l", i, 1) <> substr("name_norm_r", i, 1))::INTEGER)) = 1',
        "one character different",
    ),
    ('jaro_winkler_similarity("name_norm_l", "name_norm_r") >= {jaro_winkler_threshold}', "similar names"),
)
BIRTH_LEVELS = (
    ('"birth_date_l" = "birth_date_r"', "birth date equal"),
    (
        'substr("birth_date_l", 1, 4) = substr("birth_date_r", 1, 4) '
        'AND substr("birth_date_l", 6, 2) = substr("birth_date_r", 9, 2) '
        'AND substr("birth_date_l", 9, 2) = substr("birth_date_r", 6, 2)',
        "birth date with month and day swapped",
    ),
    ('damerau_levenshtein("birth_date_l", "birth_date_r") <= 1', "birth date one digit apart"),
)
GENDER_LEVELS = (('"gender_l" = "gender_r"', "sex equal"),)


def member_identity(members: pa.Table) -> pa.Table:
    """uid, name, gender ('1' male, '2' female: odd / even 17th character) and birth date of each member."""
    ids = pc.cast(members["member_id"], pa.string())
    gender_digit = pc.cast(pc.utf8_slice_codeunits(ids, 16, 17), pa.int64())
    gender = pc.if_else(pc.equal(pc.bit_wise_and(gender_digit, 1), 1), "1", "2")
    birth = pc.binary_join_element_wise(
        pc.utf8_slice_codeunits(ids, 6, 10),
        pc.utf8_slice_codeunits(ids, 10, 12),
        pc.utf8_slice_codeunits(ids, 12, 14),
        "-",
    )
    return _with_name_keys(
        pa.table({"uid": ids, "name": members["member_name"], "gender": gender, "birth_date": birth})
    )


def certificate_identity(certificates: pa.Table) -> pa.Table:
    birth = pc.cast(certificates["birth_date"], pa.string())
    identity = pa.table(
        {
            "uid": certificates["certificate_no"],
            "name": certificates["name"],
            "gender": pc.cast(certificates["gender"], pa.string()),
            "birth_date": birth,
        }
    )
    return _with_name_keys(identity)


def _with_name_keys(identity: pa.Table) -> pa.Table:
    for column, values in name_columns(identity["name"].to_pylist()).items():
        identity = identity.append_column(column, pa.array(values, pa.string()))
    return identity


def _comparison(
    column: str, levels: tuple[tuple[str, str], ...], weights: dict[str, Any], null_column: str | None = None
) -> Any:
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    m, u = list(weights["m"]), list(weights["u"])
    if len(m) != len(levels) + 1 or len(u) != len(levels) + 1:
        raise ValueError(
            f"crosscheck.linkage.{column}: m and u need {len(levels) + 1} probabilities each "
            f"({', '.join(label for _, label in levels)}, else); fix the district config"
        )
    parameters = {k: v for k, v in weights.items() if k not in ("m", "u")}
    created = [cll.NullLevel(null_column or column)]
    for (condition, label), m_level, u_level in zip(levels, m, u, strict=False):
        created.append(
            cll.CustomLevel(condition.format(**parameters), label).configure(
                m_probability=float(m_level), u_probability=float(u_level)
            )
        )
    created.append(cll.ElseLevel().configure(m_probability=float(m[-1]), u_probability=float(u[-1])))
    return cl.CustomComparison(created, output_column_name=column)


def _settings(config: dict[str, Any]) -> Any:
    from splink import SettingsCreator, block_on

    return SettingsCreator(
        link_type="link_only",
        unique_id_column_name="uid",
        probability_two_random_records_match=float(config["prior_match_probability"]),
        comparisons=[
            _comparison("name", NAME_LEVELS, config["name"], null_column="name_norm"),
            _comparison("birth_date", BIRTH_LEVELS, config["birth_date"]),
            _comparison("gender", GENDER_LEVELS, config["gender"]),
        ],
        blocking_rules_to_generate_predictions=[block_on("birth_date"), block_on("name_norm"), block_on("name_pinyin")],
        retain_intermediate_calculation_columns=True,
        retain_matching_columns=True,
        additional_columns_to_retain=["name", "name_norm", "name_pinyin_tones", "name_pinyin"],
    )


def _level_words(gamma: int | None, levels: tuple[tuple[str, str], ...], other: str) -> str:
    """Splink numbers a comparison's levels from the best (n) down to 0 (else); -1 is null."""
    if gamma is None or gamma < 0:
        return "missing"
    index = len(levels) - gamma
    return levels[index][1] if 0 <= index < len(levels) else other


def link_candidates(certificates: pa.Table, members: pa.Table, config: dict[str, Any]) -> pa.Table:
    """Every candidate pair at or above `review_threshold` (PAIR_SCHEMA), decided `linked` or `review`."""
    if certificates.num_rows == 0 or members.num_rows == 0:
        return PAIR_SCHEMA.empty_table()
    from splink import DuckDBAPI, Linker

    logging.getLogger("splink").setLevel(logging.WARNING)
    threshold = float(config["threshold"])
    review = min(float(config.get("review_threshold", threshold)), threshold)
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
        predictions = linker.inference.predict(threshold_match_probability=review)
        side = "source_dataset_l = 'certificates'"
        pairs = con.sql(
            f"SELECT CASE WHEN {side} THEN uid_l ELSE uid_r END AS certificate_no, "
            f"CASE WHEN {side} THEN uid_r ELSE uid_l END AS member_id, "
            "round(match_probability, 6) AS match_probability, "
            f"CASE WHEN {side} THEN name_l ELSE name_r END AS certificate_name, "
            f"CASE WHEN {side} THEN name_r ELSE name_l END AS member_name, "
            f"CASE WHEN {side} THEN gender_l ELSE gender_r END AS certificate_gender, "
            f"CASE WHEN {side} THEN gender_r ELSE gender_l END AS member_gender, "
            f"CASE WHEN {side} THEN birth_date_l ELSE birth_date_r END AS certificate_birth_date, "
            f"CASE WHEN {side} THEN birth_date_r ELSE birth_date_l END AS member_birth_date, "
            "gamma_name, gamma_birth_date, gamma_gender "
            f"FROM {predictions.physical_name} WHERE match_probability >= {review} "
            "ORDER BY certificate_no, member_id"
        ).to_arrow_table()
    finally:
        con.close()
    rows = pairs.to_pylist()
    for row in rows:
        name = describe_name_match(row["certificate_name"], row["member_name"])
        birth = _level_words(row.pop("gamma_birth_date"), BIRTH_LEVELS, "birth dates differ")
        gender = _level_words(row.pop("gamma_gender"), GENDER_LEVELS, "sex differs")
        level = _level_words(row.pop("gamma_name"), NAME_LEVELS, "names differ")
        row["match_levels"] = f"name: {name} [{level}]; {birth}; {gender}"
        row["decision"] = LINKED if row["match_probability"] >= threshold else REVIEW
    return pa.Table.from_pylist(rows, schema=PAIR_SCHEMA) if rows else PAIR_SCHEMA.empty_table()


def linked_pairs(candidates: pa.Table) -> pa.Table:
    """The pairs decided `linked`, as the engines join them (LINK_SCHEMA)."""
    linked = candidates.filter(pc.equal(candidates["decision"], LINKED))
    return linked.select(LINK_SCHEMA.names).cast(LINK_SCHEMA)


def link_certificates(certificates: pa.Table, members: pa.Table, config: dict[str, Any]) -> pa.Table:
    """(certificate_no, member_id, match_probability, match_levels) of every pair at or above the threshold."""
    return linked_pairs(link_candidates(certificates, members, config))
