"""Held-out figures of an appeal classifier: what `yiwang classifier evaluate` prints and a version records.

Every appeal is classified among the classes of its own source, as in production: an urban item's
appeal (01-06) among the urban items (the hotline), an enterprise appeal (07) among the 07 items.
Accuracy is measured on the appeals the classifier decides; the triage share is the rest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import polars as pl

from thematic_libs.reference import URBAN_MAJOR_CODES
from thematic_libs.urban.classifier import ENTERPRISE_MAJOR_CODES, AppealClassifier
from thematic_libs.urban.keywords import classify as keyword_classify

DOMAINS = {"urban": URBAN_MAJOR_CODES, "enterprise": ENTERPRISE_MAJOR_CODES}


@dataclass(frozen=True)
class Figures:
    appeals: int
    triage_share: float
    exact_item_accuracy: float  # on the decided appeals
    major_class_accuracy: float  # on the decided appeals
    exact_item_accuracy_overall: float  # triaged appeals count as not classified right

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def predictions(classifier: AppealClassifier, test: pl.DataFrame, min_confidence: float) -> pl.DataFrame:
    """`test` (text, event_code, ...) with `predicted` (null: triage), `candidate_code` and `confidence`."""
    parts = []
    for majors in DOMAINS.values():
        rows = test.filter(pl.col("event_code").str.slice(0, 2).is_in(list(majors)))
        if rows.height:
            result = pl.from_arrow(classifier.classify(rows.get_column("text"), majors, min_confidence))
            parts.append(
                rows.with_columns(
                    result.get_column("event_code").alias("predicted"),
                    result.get_column("candidate_code"),
                    result.get_column("confidence"),
                )
            )
    return pl.concat(parts)


def keyword_predictions(test: pl.DataFrame) -> pl.DataFrame:
    """The keyword baseline on the same appeals (it abstains when no keyword is found)."""
    parts = []
    for majors in DOMAINS.values():
        rows = test.filter(pl.col("event_code").str.slice(0, 2).is_in(list(majors)))
        if rows.height:
            result = pl.from_arrow(keyword_classify(rows.get_column("text"), majors))
            parts.append(rows.with_columns(result.get_column("event_code").alias("predicted")))
    return pl.concat(parts)


def figures(predicted: pl.DataFrame) -> Figures:
    decided = predicted.filter(pl.col("predicted").is_not_null())
    n = predicted.height
    exact = decided.filter(pl.col("predicted") == pl.col("event_code")).height
    major = decided.filter(pl.col("predicted").str.slice(0, 2) == pl.col("event_code").str.slice(0, 2)).height
    return Figures(
        appeals=n,
        triage_share=round(1 - decided.height / n, 4) if n else 0.0,
        exact_item_accuracy=round(exact / decided.height, 4) if decided.height else 0.0,
        major_class_accuracy=round(major / decided.height, 4) if decided.height else 0.0,
        exact_item_accuracy_overall=round(exact / n, 4) if n else 0.0,
    )


def per_class(predicted: pl.DataFrame) -> pl.DataFrame:
    """Per event code: support, decided, precision and recall (recall counts triaged appeals as missed)."""
    truth = predicted.group_by("event_code").agg(
        pl.len().alias("support"),
        pl.col("predicted").is_not_null().sum().alias("decided"),
        (pl.col("predicted") == pl.col("event_code")).sum().alias("correct"),
    )
    claimed = (
        predicted.filter(pl.col("predicted").is_not_null())
        .group_by(pl.col("predicted").alias("event_code"))
        .agg(pl.len().alias("predicted_count"))
    )
    return (
        truth.join(claimed, on="event_code", how="left")
        .with_columns(
            (pl.col("correct") / pl.col("predicted_count")).fill_null(0.0).round(4).alias("precision"),
            (pl.col("correct") / pl.col("support")).round(4).alias("recall"),
        )
        .select("event_code", "support", "decided", "precision", "recall")
        .sort("event_code")
    )


def confusions(predicted: pl.DataFrame, limit: int = 15) -> pl.DataFrame:
    """The most frequent (true, predicted) pairs among the decided appeals that were wrong."""
    return (
        predicted.filter(pl.col("predicted").is_not_null() & (pl.col("predicted") != pl.col("event_code")))
        .group_by("event_code", "predicted")
        .len("appeals")
        .sort(["appeals", "event_code", "predicted"], descending=[True, False, False])
        .head(limit)
    )


def by_style(predicted: pl.DataFrame) -> pl.DataFrame:
    """Figures per writing style of the corpus (colloquial, regional, typo, rambling, ...)."""
    if "style" not in predicted.columns:
        return pl.DataFrame()
    return (
        predicted.group_by("style")
        .agg(
            pl.len().alias("appeals"),
            pl.col("predicted").is_null().mean().round(4).alias("triage_share"),
            ((pl.col("predicted") == pl.col("event_code")).sum() / pl.col("predicted").is_not_null().sum())
            .round(4)
            .alias("exact_item_accuracy"),
        )
        .sort("style")
    )


def evaluate(classifier: AppealClassifier, test: pl.DataFrame, min_confidence: float) -> dict[str, object]:
    """The figures a version records: overall, per domain, and the keyword baseline's, on `test`."""
    predicted = predictions(classifier, test, min_confidence)
    baseline = keyword_predictions(test)
    domains = {}
    for name, majors in DOMAINS.items():
        rows = predicted.filter(pl.col("event_code").str.slice(0, 2).is_in(list(majors)))
        if rows.height:
            domains[name] = figures(rows).as_dict()
    return {
        "min_confidence": min_confidence,
        "overall": figures(predicted).as_dict(),
        "domains": domains,
        "keyword_baseline": figures(baseline).as_dict(),
    }


def meets_floors(overall: dict[str, float], floors: dict[str, float]) -> list[str]:
    """The floors a version's held-out figures miss (empty: it may be promoted)."""
    missed = []
    if overall["exact_item_accuracy"] < floors.get("exact_item_accuracy", 0.0):
        missed.append(f"exact-item accuracy {overall['exact_item_accuracy']:.3f} < {floors['exact_item_accuracy']}")
    if overall["major_class_accuracy"] < floors.get("major_class_accuracy", 0.0):
        missed.append(f"major-class accuracy {overall['major_class_accuracy']:.3f} < {floors['major_class_accuracy']}")
    if overall["triage_share"] > floors.get("max_triage_share", 1.0):
        missed.append(f"triage share {overall['triage_share']:.3f} > {floors['max_triage_share']}")
    return missed
