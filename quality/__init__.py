"""Data quality for the landing-zone contracts: GX suites, stored results, Data Docs, scorecard, checks.

Attributes are imported lazily: `quality.checks` is loaded by every Dagster code location, and Great
Expectations alone takes seconds to import, so only the modules that run a suite import it.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "build_suite": "quality.suites",
    "suite_name": "quality.suites",
    "validate_batch": "quality.runner",
    "quality_hook": "quality.runner",
    "QualityResult": "quality.runner",
    "QualityRecorder": "quality.runner",
    "read_results": "quality.results",
    "latest_results": "quality.results",
    "build_data_docs": "quality.docs",
    "build_scorecard": "quality.scorecard",
    "render_scorecard_png": "quality.scorecard",
    "build_quality_checks": "quality.checks",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'quality' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
