"""Early waterlogging warnings (内涝预警) per grid, from gold `emergency/waterlogging_risk`.

A grid is warned when its district's latest rainfall forecast passes the level (rain_next_24h_mm at or
above min_rain_next_24h_mm, or a rainstorm warning colour in warning_levels) *and* the grid has flooded
before (at least min_history_days days with waterlogging events within dbt var emergency_history_days):
rain alone is not a reason to send people to a grid that drains well. min_risk_level, when set, also
keeps only grids whose risk_level reaches it. A grid without a forecast is not warned.

`warning_id` = 'EW' + the first 12 hex digits of sha256(f"{grid_code}|{iso}"), iso being forecast_issued_at
in UTC as `isoformat(timespec="microseconds")`:
the same forecast gives the same id on every run, a new issue a new one.
"""

from __future__ import annotations

import hashlib

import polars as pl

from thematic_libs.emergency.incidents import ISO_UTC
from thematic_libs.emergency.settings import RISK_LEVELS, IncidentConfig

WARNING_SCHEMA: dict[str, pl.DataType] = {
    "warning_id": pl.String(),
    "grid_code": pl.String(),
    "community_code": pl.String(),
    "street_code": pl.String(),
    "district_code": pl.String(),
    "lon": pl.Float64(),  # grid centre
    "lat": pl.Float64(),
    "forecast_issued_at": pl.Datetime("us", "UTC"),
    "rain_next_24h_mm": pl.Float64(),
    "max_warning_level": pl.String(),
    "history_days_with_events": pl.Int64(),
    "risk_score": pl.Int64(),
    "risk_level": pl.String(),
    "reason": pl.String(),
}

_COLOUR_NAMES = {"blue": "蓝色", "yellow": "黄色", "orange": "橙色", "red": "红色"}
_RISK_COLUMNS = (
    "grid_code",
    "community_code",
    "street_code",
    "district_code",
    "center_lon",
    "center_lat",
    "forecast_issued_at",
    "max_warning_level",
    "rain_next_24h_mm",
    "history_days_with_events",
    "risk_score",
    "risk_level",
)


def _issued_utc(risk: pl.DataFrame) -> pl.Expr:
    """forecast_issued_at as Datetime(us, UTC); a naive timestamp is taken to be UTC."""
    dtype = risk.schema["forecast_issued_at"]
    expr = pl.col("forecast_issued_at")
    if dtype == pl.String:
        expr = expr.str.to_datetime(time_unit="us", time_zone="UTC")
    elif isinstance(dtype, pl.Datetime):
        expr = expr.dt.replace_time_zone("UTC") if dtype.time_zone is None else expr.dt.convert_time_zone("UTC")
    return expr.cast(pl.Datetime("us", "UTC"))


def _warning_id(grid_code: str, issued_at_iso: str) -> str:
    return "EW" + hashlib.sha256(f"{grid_code}|{issued_at_iso}".encode()).hexdigest()[:12]


def _reason(rain_mm: float, level: str | None, days: int, history_label: str) -> str:
    """E.g. 预报24小时降雨 62.0 mm (橙色预警), 近一年 3 天发生内涝."""
    colour = f" ({_COLOUR_NAMES[level]}预警)" if level in _COLOUR_NAMES else ""
    return f"预报24小时降雨 {rain_mm:.1f} mm{colour}, {history_label} {days} 天发生内涝"


def early_warnings(risk: pl.DataFrame, config: IncidentConfig | None = None) -> pl.DataFrame:
    """Warnings (WARNING_SCHEMA, by risk_score descending, then grid_code) for the grids of `risk`."""
    rule = (config or IncidentConfig.load()).early_warning
    missing = [name for name in _RISK_COLUMNS if name not in risk.columns]
    if missing:
        raise ValueError(f"waterlogging risk lacks the column(s) {', '.join(missing)}")
    rows = risk.select(
        pl.col("grid_code").cast(pl.String),
        pl.col("community_code").cast(pl.String),
        pl.col("street_code").cast(pl.String),
        pl.col("district_code").cast(pl.String),
        pl.col("center_lon").cast(pl.Float64).alias("lon"),
        pl.col("center_lat").cast(pl.Float64).alias("lat"),
        _issued_utc(risk).alias("forecast_issued_at"),
        pl.col("rain_next_24h_mm").cast(pl.Float64).fill_null(0.0),
        pl.col("max_warning_level").cast(pl.String),
        pl.col("history_days_with_events").cast(pl.Int64).fill_null(0),
        pl.col("risk_score").cast(pl.Int64),
        pl.col("risk_level").cast(pl.String),
    )
    forecast_passes = (pl.col("rain_next_24h_mm") >= rule.min_rain_next_24h_mm) | pl.col("max_warning_level").is_in(
        list(rule.warning_levels)
    ).fill_null(False)
    keep = (
        pl.col("forecast_issued_at").is_not_null()
        & forecast_passes
        & (pl.col("history_days_with_events") >= rule.min_history_days)
    )
    if rule.min_risk_level is not None:
        wanted = list(RISK_LEVELS[RISK_LEVELS.index(rule.min_risk_level) :])
        keep = keep & pl.col("risk_level").is_in(wanted).fill_null(False)
    warned = rows.filter(keep).sort(["risk_score", "grid_code"], descending=[True, False], nulls_last=True)
    issued_iso = warned["forecast_issued_at"].dt.to_string(ISO_UTC)
    ids = [_warning_id(grid, issued) for grid, issued in zip(warned["grid_code"], issued_iso, strict=True)]
    reasons = [
        _reason(rain, level, days, rule.history_label)
        for rain, level, days in zip(
            warned["rain_next_24h_mm"], warned["max_warning_level"], warned["history_days_with_events"], strict=True
        )
    ]
    return warned.with_columns(pl.Series("warning_id", ids, pl.String), pl.Series("reason", reasons, pl.String)).select(
        [pl.col(name).cast(dtype) for name, dtype in WARNING_SCHEMA.items()]
    )
