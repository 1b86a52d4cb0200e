"""District configuration: packaged defaults, overridable by one versioned YAML file per district.

Every threshold and switch of the thematic libraries, the dispatch derivation and the cross-check
has a default in a YAML file next to the code that uses it. A district changes them in one file of
its own (`YIWANG_DISTRICT_CONFIG`, kept under version control by the district), with one top-level
section per domain, e.g.::

    dispatch:
      merge_window_hours: 12
    crosscheck:
      r05_min_contribution_base_cny: 3500

Overrides are deep-merged over the defaults; an unknown key is an error, so a typo cannot silently
leave a default in force.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

ENV_VAR = "YIWANG_DISTRICT_CONFIG"


class ConfigError(ValueError):
    """A district configuration file that does not fit the defaults it overrides."""


def _merge(defaults: dict[str, Any], overrides: dict[str, Any], where: str) -> dict[str, Any]:
    merged = dict(defaults)
    for key, value in overrides.items():
        if key not in defaults:
            known = ", ".join(sorted(defaults))
            raise ConfigError(f"{where}.{key} is not a known setting (known: {known}); fix the district config file")
        if isinstance(defaults[key], dict) and isinstance(value, dict):
            merged[key] = _merge(defaults[key], value, f"{where}.{key}")
        else:
            merged[key] = value
    return merged


def district_config_path() -> Path | None:
    """The district's override file, from `YIWANG_DISTRICT_CONFIG`; None when the defaults apply."""
    value = os.environ.get(ENV_VAR)
    return Path(value) if value else None


def load_section(package: str, section: str, override_path: Path | None = None) -> dict[str, Any]:
    """Defaults of `section` from `<package>/defaults.yaml`, with the district's overrides applied.

    `override_path` defaults to the file named by `YIWANG_DISTRICT_CONFIG`.
    """
    text = resources.files(package).joinpath("defaults.yaml").read_text(encoding="utf-8")
    document = yaml.safe_load(text) or {}
    if section not in document:
        raise ConfigError(f"{package}/defaults.yaml has no section {section!r}")
    defaults = document[section]
    path = override_path if override_path is not None else district_config_path()
    if path is None:
        return defaults
    if not path.is_file():
        raise ConfigError(f"district config file {path} does not exist ({ENV_VAR}); create it or unset the variable")
    overrides = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"district config file {path} must be a mapping of sections")
    return _merge(defaults, overrides.get(section) or {}, section)
