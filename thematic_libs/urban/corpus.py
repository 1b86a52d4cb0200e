"""The labelled corpus of everyday appeals, and a district's own labels.

`corpus/appeals.csv` (provenance in `corpus/README.md`): `text_id, event_code, style, split, text`,
at least 40 appeals per item of the urban classes (01-06) and of the enterprise appeals (07),
split once into `train` and `test`. Nothing is tuned on `test`: it only measures.

A district's labels are a UTF-8 CSV with at least the columns `text` and `event_code`; every row is
checked (a known event code of majors 01-07, a non-empty text) and a bad row is refused with its
line number, the rule and what to do.
"""

from __future__ import annotations

import csv
import hashlib
from importlib import resources
from pathlib import Path

import polars as pl

from thematic_libs.reference import load_event_catalogue

CORPUS_FILE = "corpus/appeals.csv"
SPLITS = ("train", "test")
LABEL_MAJORS = ("01", "02", "03", "04", "05", "06", "07")
SCHEMA = {"text_id": pl.String, "event_code": pl.String, "style": pl.String, "split": pl.String, "text": pl.String}


class LabelError(ValueError):
    """A labels file the classifier cannot train on."""


def load_corpus() -> pl.DataFrame:
    """The packaged corpus, every column a string."""
    with resources.files("thematic_libs.urban").joinpath(CORPUS_FILE).open("rb") as handle:
        return pl.read_csv(handle, schema_overrides=SCHEMA)


def corpus_split(split: str) -> pl.DataFrame:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    return load_corpus().filter(pl.col("split") == split)


def labelled_codes() -> set[str]:
    """Event codes a label may carry: catalogue items of the classes the classifier covers."""
    catalogue = pl.from_arrow(load_event_catalogue().select(["event_code", "major_code"]))
    return set(catalogue.filter(pl.col("major_code").is_in(LABEL_MAJORS)).get_column("event_code"))


def read_labels(path: Path) -> pl.DataFrame:
    """A district's labels: `text, event_code` (plus `source`, the file name), each row checked."""
    if not path.is_file():
        raise LabelError(f"labels file {path} does not exist; give a CSV with the columns text,event_code")
    codes = labelled_codes()
    rows: list[dict[str, str]] = []
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = {"text", "event_code"} - set(reader.fieldnames or [])
            if missing:
                raise LabelError(
                    f"{path}: no column {', '.join(sorted(missing))} in the header; "
                    "a labels file needs the columns text,event_code"
                )
            for line, record in enumerate(reader, start=2):
                text = (record.get("text") or "").strip()
                code = (record.get("event_code") or "").strip().zfill(6)
                if not text:
                    raise LabelError(f"{path} line {line}: empty text; remove the row or write the appeal's text")
                if code not in codes:
                    raise LabelError(
                        f"{path} line {line}: event_code {record.get('event_code')!r} is not an item of the "
                        f"catalogue's classes {LABEL_MAJORS[0]}-{LABEL_MAJORS[-1]}; use a 6-digit code of "
                        "thematic_libs/reference/event_catalogue.csv"
                    )
                rows.append({"text": text, "event_code": code})
    except UnicodeDecodeError as error:
        raise LabelError(f"{path}: not UTF-8 ({error.reason} at byte {error.start}); save the file as UTF-8") from None
    if not rows:
        raise LabelError(f"{path}: no labelled rows; add rows of text,event_code")
    return pl.DataFrame(rows, schema={"text": pl.String, "event_code": pl.String}).with_columns(
        pl.lit(path.name).alias("source")
    )


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
