"""Social-assistance cross-check (issue 4): nine eligibility rules over seven departments' data.

Entry points: `run_crosscheck(warehouse, as_of, engine=None, run_id=None, key=None)` writes
`gold/social_assistance/crosscheck_flags`, `gold/social_assistance/case_review` (restricted) and
`gold/reports/crosscheck_summary` (aggregates only) for one as-of date; `ticket_candidates(warehouse,
as_of)` returns one dispatch ticket candidate per flagged case. Thresholds and the engine choice
(duckdb | spark) are in `defaults.yaml`, section `crosscheck`, overridable per district.
"""

from thematic_libs.social_assistance.gold import FLAGS_TABLE, REVIEW_TABLE, SUMMARY_TABLE
from thematic_libs.social_assistance.rules import RULES, CrosscheckError, load_config
from thematic_libs.social_assistance.run import CrosscheckResult, run_crosscheck, ticket_candidates

__all__ = [
    "FLAGS_TABLE",
    "REVIEW_TABLE",
    "RULES",
    "SUMMARY_TABLE",
    "CrosscheckError",
    "CrosscheckResult",
    "load_config",
    "run_crosscheck",
    "ticket_candidates",
]
