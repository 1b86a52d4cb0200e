"""Hotline keyword classifier: rules, ties, nulls, and accuracy against the labelled demo appeals."""

from __future__ import annotations

import json
import time

import polars as pl
import pyarrow as pa
import pytest

from ingestion.demo import generate_landing_zone
from thematic_libs.reference import URBAN_MAJOR_CODES
from thematic_libs.urban.keywords import RESULT_SCHEMA, classify, keyword_table

# Measured on the scale-0.05 zone (seed 7): item and major accuracy 1.000 over the appeals with a
# text (the demo words appeals with the catalogue's own keywords). Floors a little below.
ITEM_ACCURACY_FLOOR = 0.97
MAJOR_ACCURACY_FLOOR = 0.98


@pytest.fixture(scope="module")
def labelled_appeals(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    """Appeal texts of a small demo landing zone with their true event codes."""
    out = tmp_path_factory.mktemp("landing")
    generate_landing_zone(out, scale=0.05, seed=7, progress=False)
    rows = []
    for part in sorted(out.glob("city/zhengshu/hotline_appeals/*/part-*.jsonl")):
        for line in part.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a planted malformed record
                continue
            rows.append({"appeal_id": str(record.get("appeal_id")), "content": record.get("content")})
    appeals = pl.DataFrame(rows, schema={"appeal_id": pl.String, "content": pl.String})
    labels = pl.read_csv(out / "_labels" / "hotline_event_codes.csv", schema_overrides={"event_code": pl.String})
    return appeals.join(labels, on="appeal_id").filter(pl.col("content").is_not_null() & (pl.col("content") != ""))


def test_accuracy_on_labelled_demo_appeals(labelled_appeals: pl.DataFrame) -> None:
    assert labelled_appeals.height > 500
    result = pl.from_arrow(classify(labelled_appeals.get_column("content")))
    truth = labelled_appeals.get_column("event_code")
    predicted = result.get_column("event_code")
    item = (predicted == truth).fill_null(False).mean()
    major = (predicted.str.slice(0, 2) == truth.str.slice(0, 2)).fill_null(False).mean()
    assert item >= ITEM_ACCURACY_FLOOR, f"item accuracy {item:.3f}"
    assert major >= MAJOR_ACCURACY_FLOOR, f"major-class accuracy {major:.3f}"


def test_longer_keywords_weigh_more_and_ties_are_deterministic() -> None:
    texts = pa.array(
        [
            "小区门口的井盖缺失了",  # 井盖 (040101) + 井盖缺失 (040101): 2 + 4
            "路边有人摆摊，还有露天烧烤",  # 摆摊 (050102, 2) vs 露天烧烤 + 烧烤 (050302, 4 + 2)
            "家门口积水又有浓烟",  # 积水 (040201, 2) vs 浓烟 (040301, 2): tie -> lower event code
            "今天天气很好",
            None,
            "",
        ]
    )
    result = classify(texts).to_pylist()
    assert result[0] == {"event_code": "040101", "score": 6, "matched_keyword": "井盖缺失"}
    assert result[1] == {"event_code": "050302", "score": 6, "matched_keyword": "露天烧烤"}
    assert result[2] == {"event_code": "040201", "score": 2, "matched_keyword": "积水"}
    assert result[3:] == [{"event_code": None, "score": None, "matched_keyword": None}] * 3


def test_restricting_to_urban_classes_and_the_schema() -> None:
    texts = pl.Series(["企业反映贷款贴息政策难以落实", "小广告贴满了墙"])
    everything = classify(texts)
    assert everything.schema == RESULT_SCHEMA
    assert everything.column("event_code").to_pylist() == ["070102", "020101"]
    urban = classify(texts, major_codes=URBAN_MAJOR_CODES)
    assert urban.column("event_code").to_pylist() == [None, "020101"]
    assert set(keyword_table(URBAN_MAJOR_CODES).get_column("event_code").str.slice(0, 2)) == set(URBAN_MAJOR_CODES)


def test_throughput(labelled_appeals: pl.DataFrame) -> None:
    texts = labelled_appeals.get_column("content").sample(200_000, with_replacement=True, seed=1)
    started = time.perf_counter()
    result = classify(texts)
    elapsed = time.perf_counter() - started
    assert result.num_rows == 200_000 and result.column("event_code").null_count == 0
    # Measured ~500k texts/s on 2 shared cores; the bound only catches a per-row regression.
    assert elapsed < 10, f"200k texts took {elapsed:.1f} s"


def test_output_is_aligned_with_input_for_chunked_arrays() -> None:
    texts = pa.chunked_array([["垃圾桶满了没人清"], ["夜间施工太吵", "共享单车乱停"]])
    assert classify(texts).column("event_code").to_pylist() == ["010104", "030102", "050202"]


def test_keyword_table_covers_every_catalogue_keyword() -> None:
    keywords = keyword_table()
    assert keywords.filter(pl.col("weight") != pl.col("keyword").str.len_chars()).height == 0
    assert {"井盖缺失", "低保核查", "用地指标"} <= set(keywords.get_column("keyword"))
