"""Settings of the emergency library: `emergency:` of defaults.yaml, with the district's overrides applied.

Validation happens once, here, so that the detector and the tracker can trust every number: a
misspelt device type or a negative number of minutes is a one-line ValueError naming the setting,
not an incident that silently never opens.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from thematic_libs.config import _merge, load_section

# Valid values of yingji.sensor_devices (ingestion/contracts/yingji.sensor_devices.yaml).
DEVICE_TYPES = ("water_level", "rain_gauge", "manhole_cover", "smoke", "gas", "river_quality")
METRICS = ("water_depth_cm", "rain_mm_10min", "tilt_deg", "smoke_ppm", "gas_lel_pct", "cod_mg_l")
# Rainstorm warning colours of the forecast, lowest first, and the risk levels of waterlogging_risk.
WARNING_LEVELS = ("blue", "yellow", "orange", "red")
RISK_LEVELS = ("low", "medium", "high")

_RULE_KEYS = (
    "metric",
    "incident_prefix",
    "open_after_readings",
    "open_on_rising_trend",
    "rising_trend_readings",
    "close_after_minutes",
    "hysteresis_margin",
    "severe_value",
    "history_hours",
    "quiet_after_minutes",
)


def _number(where: str, value: Any, *, minimum: float = 0.0, strict: bool = False, integer: bool = False) -> float:
    """`value` checked to be a number (an int when `integer`) >= minimum (> when `strict`)."""
    kinds = (int,) if integer else (int, float)
    wanted = "an integer" if integer else "a number"
    bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
    if isinstance(value, bool) or not isinstance(value, kinds) or value < minimum or (strict and value == minimum):
        raise ValueError(f"{where} must be {wanted} {bound}, got {value!r}")
    return value


@dataclass(frozen=True)
class DeviceRule:
    """How the readings of one device type are judged against each device's alert_threshold."""

    device_type: str
    metric: str
    incident_prefix: str
    open_after_readings: int
    open_on_rising_trend: bool
    rising_trend_readings: int
    close_after_minutes: float
    hysteresis_margin: float
    severe_value: float
    history_hours: float
    quiet_after_minutes: float

    @classmethod
    def parse(cls, device_type: str, values: Mapping[str, Any]) -> DeviceRule:
        where = f"emergency.device_types.{device_type}"
        if not isinstance(values, Mapping):
            raise ValueError(f"{where} must be a mapping of settings or null, got {values!r}")
        missing = [key for key in _RULE_KEYS if key not in values]
        if missing:
            raise ValueError(f"{where} lacks {', '.join(missing)}: a monitored device type needs every setting")
        unknown = sorted(set(values) - set(_RULE_KEYS))
        if unknown:
            raise ValueError(f"{where}.{unknown[0]} is not a known setting (known: {', '.join(_RULE_KEYS)})")
        if values["metric"] not in METRICS:
            raise ValueError(f"{where}.metric is {values['metric']!r}: metrics are {', '.join(METRICS)}")
        prefix = values["incident_prefix"]
        if not isinstance(prefix, str) or not prefix.isalnum():
            raise ValueError(f"{where}.incident_prefix must be letters or digits, got {prefix!r}")
        if not isinstance(values["open_on_rising_trend"], bool):
            raise ValueError(
                f"{where}.open_on_rising_trend must be true or false, got {values['open_on_rising_trend']!r}"
            )
        return cls(
            device_type=device_type,
            metric=values["metric"],
            incident_prefix=prefix,
            open_after_readings=int(
                _number(f"{where}.open_after_readings", values["open_after_readings"], minimum=1, integer=True)
            ),
            open_on_rising_trend=values["open_on_rising_trend"],
            rising_trend_readings=int(
                _number(f"{where}.rising_trend_readings", values["rising_trend_readings"], minimum=2, integer=True)
            ),
            close_after_minutes=float(_number(f"{where}.close_after_minutes", values["close_after_minutes"])),
            hysteresis_margin=float(_number(f"{where}.hysteresis_margin", values["hysteresis_margin"])),
            severe_value=float(_number(f"{where}.severe_value", values["severe_value"])),
            history_hours=float(_number(f"{where}.history_hours", values["history_hours"], strict=True)),
            quiet_after_minutes=float(
                _number(f"{where}.quiet_after_minutes", values["quiet_after_minutes"], strict=True)
            ),
        )

    @property
    def lookback_readings(self) -> int:
        """Readings before a reading that its opening test looks at (the tracker must keep them)."""
        return max(1, self.rising_trend_readings - 1 if self.open_on_rising_trend else 0)


@dataclass(frozen=True)
class EarlyWarningConfig:
    """When a grid's waterlogging risk becomes an early warning."""

    min_rain_next_24h_mm: float
    warning_levels: tuple[str, ...]
    min_history_days: int
    min_risk_level: str | None
    history_label: str

    @classmethod
    def parse(cls, values: Mapping[str, Any]) -> EarlyWarningConfig:
        where = "emergency.early_warning"
        levels = values["warning_levels"] or []
        if not isinstance(levels, list | tuple) or any(level not in WARNING_LEVELS for level in levels):
            raise ValueError(f"{where}.warning_levels is {levels!r}: colours are {', '.join(WARNING_LEVELS)}")
        risk = values["min_risk_level"]
        if risk is not None and risk not in RISK_LEVELS:
            raise ValueError(f"{where}.min_risk_level is {risk!r}: levels are {', '.join(RISK_LEVELS)} or null")
        return cls(
            min_rain_next_24h_mm=float(_number(f"{where}.min_rain_next_24h_mm", values["min_rain_next_24h_mm"])),
            warning_levels=tuple(levels),
            min_history_days=int(_number(f"{where}.min_history_days", values["min_history_days"], integer=True)),
            min_risk_level=risk,
            history_label=str(values["history_label"]),
        )


@dataclass(frozen=True)
class IncidentConfig:
    """All emergency settings: the monitored device types and the early-warning rule."""

    device_types: Mapping[str, DeviceRule]
    early_warning: EarlyWarningConfig

    @classmethod
    def load(cls, overrides: dict[str, Any] | None = None) -> IncidentConfig:
        """Packaged defaults, then the district config file, then `overrides` (same shape as `emergency:`)."""
        values = load_section("thematic_libs.emergency", "emergency")
        if overrides:
            values = _merge(values, overrides, "emergency")
        return cls.parse(values)

    @classmethod
    def parse(cls, values: Mapping[str, Any]) -> IncidentConfig:
        types = values.get("device_types") or {}
        unknown = sorted(set(types) - set(DEVICE_TYPES))
        if unknown:
            raise ValueError(
                f"emergency.device_types.{unknown[0]} is not a device type (types: {', '.join(DEVICE_TYPES)})"
            )
        rules = {name: DeviceRule.parse(name, rule) for name, rule in types.items() if rule is not None}
        prefixes = [rule.incident_prefix for rule in rules.values()]
        if len(set(prefixes)) != len(prefixes):
            raise ValueError(f"emergency.device_types: incident_prefix values {prefixes} must differ between types")
        return cls(
            device_types=MappingProxyType(rules), early_warning=EarlyWarningConfig.parse(values["early_warning"])
        )
