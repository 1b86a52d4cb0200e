"""Names as other departments write them: normalisation, pinyin, and the linkage of ID-less certificates."""

from __future__ import annotations

import json
from datetime import date

import polars as pl
import pyarrow as pa
import pytest
from pypinyin import Style, pinyin

from demo_data.crosscheck import HOMOPHONES, homophone_slip
from thematic_libs.names import describe_name_match, name_keys, normalise_name
from thematic_libs.social_assistance.linkage import LINKED, REVIEW, link_candidates
from thematic_libs.social_assistance.rules import load_config

CONFIG = load_config()["linkage"]
THRESHOLD, REVIEW_THRESHOLD = CONFIG["threshold"], CONFIG["review_threshold"]


def member_id(birth: str, male: bool, serial: int) -> str:
    """A member ID number: the linkage reads birth date (7-14) and sex (17th: odd male) off it."""
    return f"440112{birth.replace('-', '')}{serial:02d}{1 if male else 2}X"


MEMBERS = {
    "陈伟": ("1950-03-07", True),
    "张晓宇": ("1962-11-20", True),
    "刘子轩": ("1971-05-09", False),
    "阿依古丽·买买提": ("1948-02-11", False),
    "王建国": ("1955-08-30", True),
    "李丽": ("1960-01-15", False),
    "张伟": ("1966-06-06", True),
    "欧阳娜娜": ("1958-04-03", False),
}


def certificate(name: str, like: str, birth: str | None = None, male: bool | None = None) -> dict:
    born, is_male = MEMBERS[like]
    return {
        "name": name,
        "gender": "1" if (is_male if male is None else male) else "2",
        "birth_date": date.fromisoformat(birth or born),
    }


# (certificate, the member it is a variant of, the level the evidence must name)
VARIANTS = {
    "traditional characters": (certificate("陳偉", "陈伟"), "陈伟", "traditional characters in 陳偉"),
    "homophone slip": (certificate("张筱宇", "张晓宇"), "张晓宇", "pinyin equal with tones: 筱/晓"),
    "homophone slip 2": (certificate("刘子萱", "刘子轩"), "刘子轩", "pinyin equal with tones: 萱/轩"),
    "traditional + homophone": (certificate("張筱宇", "张晓宇"), "张晓宇", "pinyin equal with tones"),
    "middle dot": (certificate("阿依古丽•买买提", "阿依古丽·买买提"), "阿依古丽·买买提", "another middle-dot form"),
    "full-width space": (certificate("陈\u3000伟", "陈伟"), "陈伟", "equal after normalisation (陈伟)"),
    "surname separated": (certificate("欧阳 娜娜", "欧阳娜娜"), "欧阳娜娜", "a space inside"),
    "month and day swapped": (
        certificate("陈伟", "陈伟", birth="1950-07-03"),
        "陈伟",
        "birth date with month and day swapped",
    ),
}
NEAR_MISSES = {
    "namesake, another birth date": certificate("陈伟", "陈伟", birth="1957-06-09"),
    "homophone, the other sex": certificate("张筱宇", "张晓宇", male=False),
    "same surname, another given name": certificate("张强", "张伟"),
    "one character typed wrong": certificate("王建图", "王建国"),
    "name equal, the other sex, another birth date": certificate("李丽", "李丽", birth="1961-01-15", male=True),
}


def _run(certificates: dict[str, dict]) -> dict[str, dict]:
    members = pa.table(
        {
            "member_id": [member_id(b, m, i) for i, (b, m) in enumerate(MEMBERS.values())],
            "member_name": list(MEMBERS),
        }
    )
    table = pa.table(
        {
            "certificate_no": list(certificates),
            "name": [c["name"] for c in certificates.values()],
            "gender": [c["gender"] for c in certificates.values()],
            "birth_date": pa.array([c["birth_date"] for c in certificates.values()], pa.date32()),
        }
    )
    pairs = link_candidates(table, members, CONFIG).to_pylist()
    return {p["certificate_no"]: p for p in pairs}


def test_normalisation_forms() -> None:
    assert normalise_name("陳偉") == normalise_name("陈伟") == normalise_name("陈 伟") == normalise_name("陈\u3000伟")
    assert normalise_name("阿依古丽•买买提") == normalise_name("阿依古丽．买买提") == "阿依古丽·买买提"
    assert normalise_name("ＬＩ Ｍｉｎｇ") == "liming"
    assert normalise_name("  ") is None and normalise_name(None) is None
    keys = name_keys("欧阳 娜娜")
    assert keys is not None and (keys.surname, keys.given) == ("欧阳", "娜娜")
    assert name_keys("欧阳娜娜").surname == "欧阳"
    assert name_keys("陈伟").surname == "陈"
    assert name_keys("阿依古丽·买买提").surname is None
    assert name_keys("张晓宇").pinyin_tones == name_keys("张筱宇").pinyin_tones == "zhang1 xiao3 yu3"
    assert name_keys("张伟").pinyin != name_keys("张强").pinyin


def test_demo_homophones_are_homophones() -> None:
    """The generator's homophone table: every pair has the same pinyin and tone."""
    for a, b in HOMOPHONES.items():
        assert pinyin(a, style=Style.TONE3) == pinyin(b, style=Style.TONE3), (a, b)
    assert homophone_slip("张晓宇") == "张晓雨"
    assert homophone_slip("陈") is None


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_variant_class_links_with_its_evidence(variant: str) -> None:
    record, member, evidence = VARIANTS[variant]
    pairs = _run({variant: record})
    assert variant in pairs, f"{variant}: no candidate pair"
    pair = pairs[variant]
    assert pair["member_name"] == member
    assert pair["decision"] == LINKED and pair["match_probability"] >= THRESHOLD, pair
    assert evidence in pair["match_levels"], pair["match_levels"]


@pytest.mark.parametrize("near_miss", list(NEAR_MISSES))
def test_each_near_miss_stays_below_the_link_threshold(near_miss: str) -> None:
    pairs = _run({near_miss: NEAR_MISSES[near_miss]})
    pair = pairs.get(near_miss)
    assert pair is None or (pair["decision"] == REVIEW and pair["match_probability"] < THRESHOLD), pair


def test_near_misses_a_person_should_look_at_go_to_review() -> None:
    pairs = _run({k: NEAR_MISSES[k] for k in ("homophone, the other sex", "same surname, another given name")})
    assert {p["decision"] for p in pairs.values()} == {REVIEW}
    assert all(REVIEW_THRESHOLD <= p["match_probability"] < THRESHOLD for p in pairs.values())
    assert "sex differs" in pairs["homophone, the other sex"]["match_levels"]
    assert "one character different: 强/伟" in pairs["same surname, another given name"]["match_levels"]


def test_describe_name_match_words() -> None:
    assert describe_name_match("陈伟", "陈伟") == "names equal"
    assert "traditional characters in 陳偉" in describe_name_match("陳偉", "陈伟")
    assert "one character different: 图/国" in describe_name_match("王建图", "王建国")
    assert describe_name_match(None, "陈伟") == "a name is missing"


def test_generated_zone_links_every_variant_and_lists_near_misses_for_review(tmp_path) -> None:
    """The demo plants ID-less certificates with variant names: each is flagged with its evidence, each
    near miss is not flagged, and the linkage table carries both records side by side, pseudonymised."""
    from demo_data import generate_landing_zone
    from ingestion.contract import get_contract
    from ingestion.pipeline import ingest_contract
    from ingestion.warehouse import Warehouse
    from thematic_libs.social_assistance.gold import FLAGS_TABLE, LINKAGE_TABLE
    from thematic_libs.social_assistance.rules import INPUT_CONTRACTS
    from thematic_libs.social_assistance.run import run_crosscheck

    landing = tmp_path / "landing"
    generate_landing_zone(landing, scale=0.1, seed=5, progress=False)
    warehouse = Warehouse.at(tmp_path / "warehouse")
    for contract_id in INPUT_CONTRACTS:
        ingest_contract(get_contract(contract_id), landing, warehouse)
    as_of = date(2026, 11, 15)  # the demo's as-of date (demo_data/timeline.py)
    result = run_crosscheck(warehouse, as_of, engine="duckdb", key=b"k" * 32)
    labels = pl.read_csv(landing / "_labels" / "crosscheck_cases.csv")
    variants = labels.filter(pl.col("description").str.starts_with("ID-less death certificate"))
    near = labels.filter(pl.col("description").str.starts_with("near miss: ID-less"))
    assert variants.height == 6 and near.height == 2
    flags = pl.from_arrow(warehouse.table(FLAGS_TABLE).to_pyarrow_table()).filter(pl.col("rule_code") == "R01")
    flagged = dict(zip(flags["case_id"], flags["evidence_detail"], strict=True))
    for case_id, description in zip(variants["case_id"], variants["description"], strict=True):
        assert case_id in flagged, description
        assert json.loads(flagged[case_id])["match_levels"], description
    assert not set(near["case_id"]) & set(flagged)
    pairs = pl.from_arrow(warehouse.table(LINKAGE_TABLE).to_pyarrow_table())
    assert set(pairs["decision"]) == {LINKED, REVIEW}
    certificates = pairs.filter(pl.col("rule_code") == "R01")
    assert result.linked_pairs == certificates.filter(pl.col("decision") == LINKED).height >= 8
    assert set(variants["description"]) and certificates.filter(pl.col("decision") == REVIEW).height >= 2
    assert result.pairs_to_review >= 2
    assert pairs["member_key"].str.len_chars().to_list() == [32] * pairs.height  # pseudonyms, no ID numbers
    assert not pairs.select(pl.all().cast(pl.String).str.contains(r"^\d{17}[\dX]$").any()).row(0)[0]


def test_role_holders_without_an_id_number_named_like_a_member_go_to_review() -> None:
    from thematic_libs.social_assistance.name_matches import name_only_pairs

    holders = pa.table(
        {
            "evidence_contract": ["shichang.shareholders", "shichang.enterprise_registration", "shichang.shareholders"],
            "record_ref": ["91440605MA4U000001|S1", "91440605MA4U000002", "91440605MA4U000003|S9"],
            "name": ["陳偉", "欧阳 娜娜", "张强"],
            "role": ["shareholder of 某某五金厂", "legal representative of 某某陶瓷", "shareholder of 某某铝材"],
        }
    )
    members = pa.table(
        {"member_id": ["440112195003070011X", "440112195804030062X"], "member_name": ["陈伟", "欧阳娜娜"]}
    )
    pairs = name_only_pairs(holders, members).to_pylist()
    assert [(p["record_ref"], p["member_name"]) for p in pairs] == [
        ("91440605MA4U000002", "欧阳娜娜"),
        ("91440605MA4U000001|S1", "陈伟"),
    ]
    assert "traditional characters in 陳偉" in pairs[1]["match_levels"]
    assert "a namesake cannot be ruled out" in pairs[0]["match_levels"]


def test_a_name_two_members_share_is_not_listed() -> None:
    from thematic_libs.social_assistance.name_matches import name_only_pairs

    holders = pa.table(
        {
            "evidence_contract": ["shichang.shareholders"],
            "record_ref": ["91440605MA4U000001|S1"],
            "name": ["陈伟"],
            "role": ["shareholder of 某某五金厂"],
        }
    )
    members = pa.table({"member_id": ["440112195003070011X", "440112196003070011X"], "member_name": ["陈伟", "陳偉"]})
    assert name_only_pairs(holders, members).num_rows == 0
