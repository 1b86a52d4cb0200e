"""The keyword classifier (the baseline, and the keyword features of the trained classifier): rules, ties, nulls."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from thematic_libs.reference import URBAN_MAJOR_CODES
from thematic_libs.urban.keywords import RESULT_SCHEMA, classify, keyword_table


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


def test_output_is_aligned_with_input_for_chunked_arrays() -> None:
    texts = pa.chunked_array([["垃圾桶满了没人清"], ["夜间施工太吵", "共享单车乱停"]])
    assert classify(texts).column("event_code").to_pylist() == ["010104", "030102", "050202"]


def test_keyword_table_covers_every_catalogue_keyword() -> None:
    keywords = keyword_table()
    assert keywords.filter(pl.col("weight") != pl.col("keyword").str.len_chars()).height == 0
    assert {"井盖缺失", "低保核查", "用地指标"} <= set(keywords.get_column("keyword"))
