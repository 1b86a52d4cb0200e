"""The quality scorecard a data officer reads per department: completeness, validity, timeliness.

`ops/quality_scorecard` is overwritten on each build and holds two grains in one table:
`grain = "contract"` (one row per batch contract, `contract_id` set) and `grain = "department"`
(one row per department, `contract_id` null), so one filter picks the view.

- completeness: share of non-null cells over every contract column, read off the not-null expectations
  (required and optional) of each contract's latest validated batch with rows up to `as_of`. A department's is
  pooled over its contracts' cells.
- validity: 1 - invalid / delivered records over the ledger's batches in the window (the `window_days`
  days up to `as_of`, by extraction time). Invalid = quarantined records of loaded batches + every
  record of a rejected batch. A rejected batch whose row count is unknown (its manifest could not be
  read) counts as the contract's mean delivered batch size, or as one record when there is none.
- timeliness: proportional to how late a contract's latest loaded batch is. With `d` the days from its
  extraction to the end of `as_of` (midnight China Standard Time) and `c` the contract's cadence in days
  (`contract.cadence_days`): 1 while `d <= c` (on time), then falling linearly to 0 at `d = (1 +
  LATE_CADENCES) * c`, i.e. `1 - (d - c) / (LATE_CADENCES * c)`, floored at 0: an hourly feed two hours
  old scores 0.5, a daily feed a day and a half old 0.75, any feed that missed two of its deliveries 0.
  A contract that never delivered scores 0. A department's timeliness is the mean of its contracts';
  `contracts_on_time` counts those with `d <= c`, `days_since_last_delivery` is its worst contract's.
- overall_score: the mean of the three scores that are known (null ones are left out).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta, timezone
from pathlib import Path

import polars as pl

from ingestion.contract import Contract, batch_contracts
from ingestion.ledger import latest_decisions, read_ledger
from ingestion.replace import replace_table
from ingestion.warehouse import QUALITY_SCORECARD, Warehouse
from quality.results import COMPLETENESS, REQUIRED, read_results

CHINA = timezone(timedelta(hours=8))
DEFAULT_WINDOW_DAYS = 30
LATE_CADENCES = 2.0  # timeliness reaches 0 when the latest delivery is this many cadences overdue
SCORES = ("completeness", "validity", "timeliness", "overall_score")


def as_of_instant(as_of: date) -> datetime:
    """The end of the `as_of` day in China Standard Time, as a UTC instant."""
    return datetime.combine(as_of + timedelta(days=1), time(0), CHINA).astimezone(UTC)


def _contracts_frame(contracts: Iterable[Contract]) -> pl.DataFrame:
    rows = [
        {
            "contract_id": c.id,
            "department": c.department,
            "department_label": c.department_label,
            "cadence_days": c.cadence_days,
        }
        for c in contracts
    ]
    return pl.DataFrame(
        rows,
        schema={
            "contract_id": pl.String,
            "department": pl.String,
            "department_label": pl.String,
            "cadence_days": pl.Float64,
        },
    )


def _delivered_at() -> pl.Expr:
    return pl.coalesce(pl.col("extracted_at"), pl.col("processed_at"))


def _ledger_counts(ledger: pl.DataFrame, start: datetime, end: datetime) -> pl.DataFrame:
    """Batches and records per contract in the window, with rejected batches counted as all invalid."""
    window = ledger.filter(_delivered_at().is_between(start, end, closed="right"))
    mean_rows = window.group_by("contract_id").agg(pl.col("rows_delivered").mean().alias("_mean_rows"))
    rejected = pl.col("status") == "rejected"
    delivered = pl.coalesce(pl.col("rows_delivered"), pl.col("_mean_rows").round(0).cast(pl.Int64), pl.lit(1))
    return (
        window.join(mean_rows, on="contract_id", how="left")
        .with_columns(delivered.alias("_delivered"))
        .group_by("contract_id")
        .agg(
            (~rejected).sum().cast(pl.Int64).alias("batches_loaded"),
            rejected.sum().cast(pl.Int64).alias("batches_rejected"),
            pl.col("_delivered").sum().cast(pl.Int64).alias("rows_delivered"),
            pl.col("rows_loaded").sum().cast(pl.Int64).alias("rows_loaded"),
            pl.col("rows_quarantined").sum().cast(pl.Int64).alias("rows_quarantined"),
            pl.when(rejected)
            .then(pl.col("_delivered"))
            .otherwise(pl.col("rows_quarantined"))
            .sum()
            .cast(pl.Int64)
            .alias("rows_invalid"),
        )
    )


def _last_delivery(ledger: pl.DataFrame, end: datetime) -> pl.DataFrame:
    loaded = ledger.filter((pl.col("status") == "loaded") & (_delivered_at() <= end))
    return loaded.group_by("contract_id").agg(_delivered_at().max().alias("last_delivery_at"))


def _completeness(results: pl.DataFrame, end: datetime) -> pl.DataFrame:
    """Null and checked cells of each contract's latest validated batch up to `end` that held rows (an empty
    incremental batch, an hour without grid reports, says nothing about completeness)."""
    not_null = results.filter(
        pl.col("rule").is_in([REQUIRED, COMPLETENESS])
        & (pl.col("extracted_at") <= end)
        & (pl.col("element_count").fill_null(0) > 0)
    )
    latest = not_null.group_by("contract_id").agg(pl.col("batch_ordinal").max())
    return (
        not_null.join(latest, on=["contract_id", "batch_ordinal"], how="semi")
        .group_by("contract_id")
        .agg(
            pl.col("element_count").sum().cast(pl.Int64).alias("cells_checked"),
            pl.col("unexpected_count").sum().cast(pl.Int64).alias("cells_null"),
        )
    )


def _overall() -> pl.Expr:
    scores = [pl.col(s) for s in ("completeness", "validity", "timeliness")]
    known = pl.sum_horizontal([s.is_not_null().cast(pl.Int32) for s in scores])
    total = pl.sum_horizontal([s.fill_null(0.0) for s in scores])
    return pl.when(known > 0).then(total / known).otherwise(None).alias("overall_score")


def contract_scores(
    contracts: pl.DataFrame, ledger: pl.DataFrame, results: pl.DataFrame, as_of: date, window_days: int
) -> pl.DataFrame:
    """One row per contract: counts, the three scores and the overall score."""
    end = as_of_instant(as_of)
    counts = _ledger_counts(ledger, end - timedelta(days=window_days), end)
    zero = [
        "batches_loaded",
        "batches_rejected",
        "rows_delivered",
        "rows_loaded",
        "rows_quarantined",
        "rows_invalid",
    ]
    frame = (
        contracts.join(counts, on="contract_id", how="left")
        .join(_last_delivery(ledger, end), on="contract_id", how="left")
        .join(_completeness(results, end), on="contract_id", how="left")
        .with_columns(pl.col(zero).fill_null(0), pl.col("cells_checked", "cells_null").fill_null(0))
        .with_columns(
            ((pl.lit(end) - pl.col("last_delivery_at")).dt.total_seconds() / 86400).alias("days_since_last_delivery")
        )
        .with_columns(
            pl.when(pl.col("cadence_days").is_null())
            .then(None)
            .otherwise((pl.col("days_since_last_delivery") <= pl.col("cadence_days")).fill_null(False))
            .alias("on_time"),
            _timeliness().alias("_timeliness"),
        )
    )
    return (
        frame.with_columns(
            pl.lit("contract").alias("grain"),
            pl.lit(1).cast(pl.Int64).alias("contracts"),
            pl.col("on_time").cast(pl.Int64).alias("contracts_on_time"),
            _ratio("cells_null", "cells_checked").alias("completeness"),
            _ratio("rows_invalid", "rows_delivered").alias("validity"),
            pl.col("_timeliness").alias("timeliness"),
        )
        .drop("_timeliness")
        .with_columns(_overall())
    )


def _timeliness() -> pl.Expr:
    """1 on time, falling linearly to 0 at LATE_CADENCES cadences overdue; 0 when nothing was delivered."""
    days, cadence = pl.col("days_since_last_delivery"), pl.col("cadence_days")
    late = ((days - cadence) / (LATE_CADENCES * cadence)).clip(lower_bound=0.0)
    return (
        pl.when(cadence.is_null())
        .then(None)
        .when(days.is_null())
        .then(0.0)
        .otherwise((1.0 - late).clip(lower_bound=0.0))
        .cast(pl.Float64)
    )


def _ratio(bad: str, total: str) -> pl.Expr:
    """1 - bad / total, unknown (null) when nothing was counted."""
    return pl.when(pl.col(total) > 0).then(1 - pl.col(bad) / pl.col(total)).otherwise(None)


def department_scores(per_contract: pl.DataFrame) -> pl.DataFrame:
    """Pool the contract rows: cells and records are summed, timeliness is the mean of the contracts'."""
    summed = [
        "contracts",
        "batches_loaded",
        "batches_rejected",
        "rows_delivered",
        "rows_loaded",
        "rows_quarantined",
        "rows_invalid",
        "cells_checked",
        "cells_null",
    ]
    return (
        per_contract.group_by("department")
        .agg(
            pl.col("department_label").first(),
            pl.col(summed).sum(),
            pl.col("contracts_on_time").sum(),
            pl.col("timeliness").mean(),
            pl.col("days_since_last_delivery").max(),
            pl.col("last_delivery_at").max(),
        )
        .with_columns(
            pl.lit("department").alias("grain"),
            pl.lit(None, dtype=pl.String).alias("contract_id"),
            _ratio("cells_null", "cells_checked").alias("completeness"),
            _ratio("rows_invalid", "rows_delivered").alias("validity"),
        )
        .with_columns(_overall())
    )


COLUMNS = [
    "grain",
    "department",
    "department_label",
    "contract_id",
    "as_of",
    "contracts",
    "contracts_on_time",
    "batches_loaded",
    "batches_rejected",
    "rows_delivered",
    "rows_loaded",
    "rows_quarantined",
    "rows_invalid",
    "cells_checked",
    "cells_null",
    "completeness",
    "validity",
    "timeliness",
    "days_since_last_delivery",
    "last_delivery_at",
    "overall_score",
    "built_at",
]


def score(
    ledger: pl.DataFrame,
    results: pl.DataFrame,
    as_of: date,
    contracts: Iterable[Contract] | None = None,
    window_days: int = DEFAULT_WINDOW_DAYS,
) -> pl.DataFrame:
    """The scorecard from frames (no I/O): department rows first, then contract rows."""
    per_contract = contract_scores(
        _contracts_frame(contracts if contracts is not None else batch_contracts().values()),
        ledger,
        results,
        as_of,
        window_days,
    )
    departments = department_scores(per_contract)
    extra = [pl.lit(as_of).alias("as_of"), pl.lit(datetime.now(UTC)).alias("built_at")]
    frames = [f.with_columns(extra).select(COLUMNS) for f in (departments, per_contract)]
    return pl.concat(frames, how="vertical_relaxed").sort(
        pl.col("grain") != "department", "department", "contract_id", nulls_last=False
    )


def build_scorecard(
    warehouse: Warehouse,
    as_of: date,
    *,
    contracts: Iterable[Contract] | None = None,
    window_days: int = DEFAULT_WINDOW_DAYS,
) -> pl.DataFrame:
    """Score every batch contract and its department as of a day; overwrite ops/quality_scorecard."""
    # a batch landed again (yiwang batches rerun) counts once, as last decided
    scorecard = score(latest_decisions(read_ledger(warehouse)), read_results(warehouse), as_of, contracts, window_days)
    replace_table(warehouse, QUALITY_SCORECARD, scorecard.to_arrow())
    return scorecard


SCORE_LABELS = {
    "completeness": "完整性 completeness",
    "validity": "有效性 validity",
    "timeliness": "及时性 timeliness",
    "overall_score": "综合 overall",
}


def department_names() -> dict[str, str]:
    """Department code -> its Chinese name (区民政局), from the reference departments."""
    from thematic_libs.reference import load_departments

    table = load_departments()
    return dict(zip(table["department_code"].to_pylist(), table["name_zh"].to_pylist(), strict=True))


def row_labels(codes: list[str], chinese: bool) -> list[str]:
    """A department's row label: its Chinese name and code (`区民政局 minzheng`), or the code without a CJK font."""
    names = department_names() if chinese else {}
    return [f"{names[code]} {code}" if code in names else code for code in codes]


def render_scorecard_png(scorecard: pl.DataFrame, path: str | Path) -> Path:
    """A heat map, one row per department (its Chinese name) and one column per score, for a data officer.

    Chinese needs a CJK font (quality/fonts.py, installed by `make setup`); without one the rows fall back to
    the departments' pinyin codes rather than empty boxes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from quality.fonts import use_cjk_font

    chinese = use_cjk_font() is not None
    departments = scorecard.filter(pl.col("grain") == "department").sort("department")
    values = departments.select(pl.col(list(SCORES)).cast(pl.Float64)).to_numpy()
    labels = row_labels(departments["department"].to_list(), chinese)
    fig, ax = plt.subplots(figsize=(8.5, 0.42 * max(len(labels), 3) + 1.6))
    cmap = matplotlib.colormaps["RdYlGn"].with_extremes(bad="#d9d9d9")  # grey: nothing to score yet
    image = ax.imshow(values, cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    columns = [SCORE_LABELS[s] if chinese else s.replace("_", " ") for s in SCORES]
    ax.set_xticks(range(len(SCORES)), columns, fontsize=9)
    ax.set_yticks(range(len(labels)), labels)
    ax.xaxis.tick_top()
    for (row, col), value in _cells(values):
        text = "n/a" if value != value else f"{value:.0%}"
        ax.text(col, row, text, ha="center", va="center", fontsize=8)
    as_of = scorecard["as_of"].max() if scorecard.height else None
    title = f"Data quality by department, as of {as_of}"
    ax.set_title(f"各部门数据质量 · {title}" if chinese else title, pad=28, fontsize=11)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    fig.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=120)
    plt.close(fig)
    return target


def _cells(values: object) -> list[tuple[tuple[int, int], float]]:
    import numpy as np

    array = np.asarray(values, dtype=float)
    return [((r, c), float(array[r, c])) for r in range(array.shape[0]) for c in range(array.shape[1])]
