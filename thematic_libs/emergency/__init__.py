"""Emergency (智慧应急): incidents from the IoT sensor readings and early waterlogging warnings per grid.

- `detect_incidents`: a pure, vectorised function from a set of readings to incidents (hysteresis
  state machine per device); `IncidentTracker` wraps it for the streaming consumer with bounded state.
- `early_warnings`: grids of gold `emergency/waterlogging_risk` whose rainfall forecast and flooding
  history call for a warning.
- `IncidentConfig`: the settings (`emergency:` of defaults.yaml, overridable per district).
"""

from thematic_libs.emergency.incidents import INCIDENT_SCHEMA, IncidentChanges, IncidentTracker, detect_incidents
from thematic_libs.emergency.settings import DeviceRule, EarlyWarningConfig, IncidentConfig
from thematic_libs.emergency.warnings import WARNING_SCHEMA, early_warnings

__all__ = [
    "INCIDENT_SCHEMA",
    "WARNING_SCHEMA",
    "DeviceRule",
    "EarlyWarningConfig",
    "IncidentChanges",
    "IncidentConfig",
    "IncidentTracker",
    "detect_incidents",
    "early_warnings",
]
