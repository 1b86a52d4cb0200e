"""Choosing the classifier's regularisation and abstention threshold on the training split only.

`yiwang classifier tune` runs stratified k-fold cross-validation over the corpus's training split
(plus a district's labels) for each candidate `regularisation_c`, and reports, for each abstention
threshold, the out-of-fold triage share and accuracy on the decided appeals. The held-out test split
is never read here: the defaults in `defaults.yaml` were chosen from this table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import polars as pl
from sklearn.model_selection import StratifiedKFold

from thematic_libs.urban.classifier import AppealClassifier, ClassifierConfig
from thematic_libs.urban.evaluation import DOMAINS, figures


def out_of_fold(training: pl.DataFrame, config: ClassifierConfig, folds: int, seed: int = 0) -> pl.DataFrame:
    """`training` with the out-of-fold best code (`candidate_code`) and its `confidence`, each appeal
    classified among its own domain's classes by a model that never saw it."""
    codes = training.get_column("event_code").to_numpy()
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    best = np.empty(training.height, dtype=object)
    confidence = np.zeros(training.height)
    for train_index, test_index in splitter.split(np.zeros(len(codes)), codes):
        fold = training[train_index]
        model = AppealClassifier.fit(fold.get_column("text").to_list(), fold.get_column("event_code").to_list(), config)
        held = training[test_index]
        for majors in DOMAINS.values():
            in_domain = held.get_column("event_code").str.slice(0, 2).is_in(list(majors)).to_numpy()
            if in_domain.any():
                result = model.classify(held.filter(in_domain).get_column("text"), majors)
                best[test_index[in_domain]] = result.column("candidate_code").to_pylist()
                confidence[test_index[in_domain]] = result.column("confidence").to_numpy()
    return training.with_columns(pl.Series("candidate_code", best, pl.String), pl.Series("confidence", confidence))


def threshold_table(scored: pl.DataFrame, thresholds: Sequence[float]) -> pl.DataFrame:
    """Out-of-fold figures per threshold, overall and for the hotline's urban items alone (`hotline_*`)."""
    rows = []
    for threshold in thresholds:
        decided = scored.with_columns(
            pl.when(pl.col("confidence") >= threshold).then(pl.col("candidate_code")).alias("predicted")
        )
        hotline = figures(decided.filter(pl.col("event_code").str.slice(0, 2).is_in(list(DOMAINS["urban"]))))
        rows.append(
            {
                "min_confidence": threshold,
                **figures(decided).as_dict(),
                **{f"hotline_{k}": v for k, v in hotline.as_dict().items() if k != "appeals"},
            }
        )
    return pl.DataFrame(rows)


def tune(
    training: pl.DataFrame,
    config: ClassifierConfig,
    regularisation: Sequence[float],
    thresholds: Sequence[float],
    folds: int = 5,
    combine_majors: Sequence[bool] = (False, True),
) -> pl.DataFrame:
    """One row per (combine_majors, regularisation_c, min_confidence) with the out-of-fold figures."""
    tables = []
    for combine in combine_majors:
        for c in regularisation:
            scored = out_of_fold(training, replace(config, regularisation_c=c, combine_majors=combine), folds)
            tables.append(
                threshold_table(scored, thresholds).with_columns(
                    pl.lit(combine).alias("combine_majors"), pl.lit(c).alias("regularisation_c")
                )
            )
    return pl.concat(tables).select(
        "combine_majors", "regularisation_c", pl.exclude("combine_majors", "regularisation_c")
    )


def choose(table: pl.DataFrame, triage_target: float = 0.08) -> dict[str, object]:
    """The rule the defaults follow: for each model, the threshold whose out-of-fold triage share is
    closest to `triage_target` from below; of those, the model with the best hotline major-class
    accuracy (the figure hardest to reach), then the best hotline exact-item accuracy."""
    below = table.filter(pl.col("triage_share") <= triage_target)
    per_model = below.sort("triage_share", descending=True).unique(
        ["combine_majors", "regularisation_c"], keep="first", maintain_order=True
    )
    best = per_model.sort(["hotline_major_class_accuracy", "hotline_exact_item_accuracy"], descending=True).row(
        0, named=True
    )
    return best
