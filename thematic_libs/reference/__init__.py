"""Reference tables shipped with the platform (e.g. `event_catalogue.csv`, the CJ/T 214-style event classes)."""

from __future__ import annotations

from pathlib import Path

REFERENCE_DIR = Path(__file__).parent
EVENT_CATALOGUE = REFERENCE_DIR / "event_catalogue.csv"
