"""The nine rules, the inputs they read and the parameters of one run (as-of date plus district thresholds).

Both engines (DuckDB, Spark) and the pandas baseline implement the same rules from these definitions
and produce rows of `RAW_SCHEMA`: one row per piece of evidence, still carrying the raw normalised ID
number in `member_id`. `gold.py` turns them into the restricted gold tables, where the person appears
only as the HMAC pseudonym `member_key`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import pyarrow as pa

from thematic_libs.config import load_section

PACKAGE = "thematic_libs.social_assistance"
SECTION = "crosscheck"

# Rule code -> name (user-facing Chinese label, English after the slash).
RULES: dict[str, str] = {
    "R01": "救助对象已死亡 / member deceased",
    "R02": "家庭成员拥有机动车 / member owns a vehicle",
    "R03": "家庭成员经营或投资企业 / member runs or invests in an enterprise",
    "R04": "家庭名下多套住房或商业用房 / household owns several homes or business property",
    "R05": "养老保险缴费基数较高 / high pension contribution base",
    "R06": "家庭成员为公职人员 / member is a civil servant",
    "R07": "住房公积金余额或缴存额较高 / high provident-fund balance or deposits",
    "R08": "户籍迁出、注销或查无户籍 / household registration moved out, cancelled or missing",
    "R09": "同一人被计入多个救助案件 / person counted in several active cases",
}

CASES = "minzheng.assistance_cases"
MEMBERS = "minzheng.assistance_members"
CREMATIONS = "minzheng.cremation_records"
CERTIFICATES = "weijian.death_certificates"
VEHICLES = "gongan.vehicle_registration"
ENTERPRISES = "shichang.enterprise_registration"
SHAREHOLDERS = "shichang.shareholders"
ESTATES = "ziranziyuan.real_estate"
INSURANCE = "renshe.social_insurance"
FUNDS = "gongjijin.provident_fund"
HOUSEHOLDS = "gongan.household_registration"

INPUT_CONTRACTS = (
    CASES,
    MEMBERS,
    CREMATIONS,
    CERTIFICATES,
    VEHICLES,
    ENTERPRISES,
    SHAREHOLDERS,
    ESTATES,
    INSURANCE,
    FUNDS,
    HOUSEHOLDS,
)

# What every engine returns. `evidence_ref` holds the non-sensitive primary-key values of the evidence
# row joined by `|`; gold.py puts the member's pseudonym where the key has an ID number. `detail` values
# are text in a form both engines print identically (numbers as decimals with two places).
RAW_SCHEMA = pa.schema(
    [
        pa.field("case_id", pa.string()),
        pa.field("rule_code", pa.string()),
        pa.field("member_id", pa.string()),
        pa.field("evidence_contract", pa.string()),
        pa.field("evidence_ref", pa.string()),
        pa.field("evidence_batch_id", pa.string()),
        pa.field("evidence_source_file", pa.string()),
        pa.field("evidence_row_number", pa.int64()),
        pa.field("detail", pa.map_(pa.string(), pa.string())),
        pa.field("match_method", pa.string()),
        pa.field("match_probability", pa.float64()),
        pa.field("amount_at_risk_cny", pa.float64()),
        pa.field("community_code", pa.string()),
        pa.field("case_type", pa.string()),
        pa.field("monthly_amount_cny", pa.float64()),
    ]
)

# Output of the probabilistic linkage, shared by both engines (see linkage.py).
LINK_SCHEMA = pa.schema(
    [
        pa.field("certificate_no", pa.string()),
        pa.field("member_id", pa.string()),
        pa.field("match_probability", pa.float64()),
        pa.field("match_levels", pa.string()),  # the comparison levels that fired, in words
    ]
)


class CrosscheckError(ValueError):
    """A run that cannot produce a trustworthy result; the message says what to fix."""


def load_config(override: dict[str, Any] | None = None) -> dict[str, Any]:
    """Defaults plus the district's overrides (YIWANG_DISTRICT_CONFIG), plus `override` for this call."""
    config = load_section(PACKAGE, SECTION)
    if override:
        config = _deep_update(config, override)
    if config["engine"] not in ("duckdb", "spark"):
        raise CrosscheckError(f"crosscheck.engine is {config['engine']!r}; use duckdb or spark")
    return config


def _deep_update(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in changes.items():
        if key not in base:
            raise CrosscheckError(f"crosscheck.{key} is not a known setting")
        merged[key] = _deep_update(base[key], value) if isinstance(value, dict) else value
    return merged


def month_add(year: int, month: int, delta: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + delta
    return index // 12, index % 12 + 1


def window_periods(as_of: date, months: int) -> list[str]:
    """`YYYY-MM` of the `months` calendar months before the month of the as-of date, oldest first."""
    return ["{:04d}-{:02d}".format(*month_add(as_of.year, as_of.month, -k)) for k in range(months, 0, -1)]


def whole_months(since: date, as_of: date) -> int:
    """Whole months from `since` to `as_of` (a month counts once its day of month is reached); never negative."""
    months = (as_of.year - since.year) * 12 + as_of.month - since.month - (1 if as_of.day < since.day else 0)
    return max(months, 0)


@dataclass(frozen=True)
class Params:
    """Everything a rule reads besides the data: the as-of date, its window and the thresholds."""

    as_of: date
    periods: tuple[str, ...]
    config: dict[str, Any]

    @classmethod
    def build(cls, as_of: date, config: dict[str, Any]) -> Params:
        return cls(as_of, tuple(window_periods(as_of, int(config["window_months"]))), config)

    def __getitem__(self, key: str) -> Any:
        return self.config[key]
