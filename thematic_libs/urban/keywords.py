"""The event catalogue's keywords: per-item scores of a text, and the keyword classifier built on them.

The trained appeal classifier (`thematic_libs.urban.classifier`) uses the scores as features; the
keyword classifier itself is kept as the baseline `yiwang classifier evaluate` compares against.

Rules (from the catalogue's `keywords` column, `|`-separated):
- every keyword of an item found in the text (overlapping matches count, each distinct keyword
  once, ASCII case-insensitive) adds its length in characters to the item's score, so a specific
  phrase (井盖缺失, 4) outweighs a generic one (井盖, 2);
- the item with the highest score wins; ties go to the item whose longest matched keyword is longer,
  then to the lower event code (catalogue order);
- no keyword of any item in the text: event_code, score and matched_keyword are null ("unclassified").

Vectorised with polars' Aho-Corasick `str.extract_many`: one pass over the texts, then a
group-by over the (text, keyword) matches, so a million texts take seconds.
"""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl
import pyarrow as pa

from thematic_libs.reference import load_event_catalogue

RESULT_SCHEMA = pa.schema(
    [
        pa.field("event_code", pa.string()),
        pa.field("score", pa.int64()),
        pa.field("matched_keyword", pa.string()),
    ]
)


def keyword_table(major_codes: Iterable[str] | None = None) -> pl.DataFrame:
    """One row per (keyword, event_code) of the catalogue, with its weight (length in characters).

    `major_codes` restricts the items (e.g. `thematic_libs.reference.URBAN_MAJOR_CODES`); None = all.
    """
    catalogue = pl.from_arrow(load_event_catalogue().select(["event_code", "major_code", "keywords"]))
    if major_codes is not None:
        catalogue = catalogue.filter(pl.col("major_code").is_in(list(major_codes)))
    return (
        catalogue.select("event_code", pl.col("keywords").str.split("|").alias("keyword"))
        .explode("keyword")
        .with_columns(pl.col("keyword").str.strip_chars())
        .filter(pl.col("keyword") != "")
        .unique(["keyword", "event_code"])
        .with_columns(pl.col("keyword").str.len_chars().cast(pl.Int64).alias("weight"))
        .sort("event_code", "keyword")
    )


def keyword_scores(texts: pl.Series, keywords: pl.DataFrame) -> pl.DataFrame:
    """One row per (text row, event code) with at least one keyword of `keywords` in the text:
    `row` (position in `texts`), `event_code`, `score` (sum of matched keywords' weights), `longest`
    (the longest matched keyword's weight) and `matched_keyword` (the longest; ties alphabetical)."""
    schema = {
        "row": pl.UInt32,
        "event_code": pl.String,
        "score": pl.Int64,
        "longest": pl.Int64,
        "matched_keyword": pl.String,
    }
    patterns = keywords.get_column("keyword").unique().sort()
    frame = pl.DataFrame({"row": pl.int_range(0, len(texts), eager=True, dtype=pl.UInt32), "text": texts})
    if not patterns.len() or not frame.height:
        return pl.DataFrame(schema=schema)
    matches = (
        frame.select(
            "row",
            pl.col("text")
            .str.extract_many(patterns.implode(), overlapping=True, ascii_case_insensitive=True)
            .alias("keyword"),
        )
        .explode("keyword")
        .drop_nulls("keyword")
    )
    if not matches.height:
        return pl.DataFrame(schema=schema)
    # extract_many returns the pattern as it appears in the text: map case variants back.
    lower = keywords.select(pl.col("keyword").str.to_lowercase().alias("_k"), "keyword", "event_code", "weight")
    return (
        matches.select("row", pl.col("keyword").str.to_lowercase().alias("_k"))
        .unique()
        .join(lower, on="_k", how="inner")
        .group_by("row", "event_code")
        .agg(
            pl.col("weight").sum().alias("score"),
            pl.col("weight").max().alias("longest"),
            pl.col("keyword")
            .sort_by([pl.col("weight"), pl.col("keyword")], descending=[True, False])
            .first()
            .alias("matched_keyword"),
        )
        .cast(schema)
    )


def classify(texts: pa.Array | pa.ChunkedArray | pl.Series, major_codes: Iterable[str] | None = None) -> pa.Table:
    """Classify each text; returns a table aligned with `texts`: event_code, score, matched_keyword.

    `matched_keyword` is the winning item's longest keyword found in the text (ties: alphabetical).
    Null texts and texts without any keyword give nulls. `major_codes` restricts the candidate items.
    """
    series = texts if isinstance(texts, pl.Series) else pl.Series("text", texts)
    series = series.cast(pl.String).rename("text")
    scored = (
        keyword_scores(series, keyword_table(major_codes))
        .sort(["row", "score", "longest", "event_code"], descending=[False, True, True, False])
        .unique("row", keep="first", maintain_order=True)
        .select("row", "event_code", "score", "matched_keyword")
    )
    rows = pl.DataFrame({"row": pl.int_range(0, len(series), eager=True, dtype=pl.UInt32)})
    out = rows.join(scored, on="row", how="left", maintain_order="left").drop("row")
    return out.to_arrow().cast(RESULT_SCHEMA)
