"""Arrow schemas of the dispatch derivation: what a source feeds in, and the table the dispatch system reads.

A source (hotline, grid report, enterprise appeal, IoT alert, video AI, cross-check) hands the
derivation one *candidate* per record it wants handled. Location columns are optional: the
derivation locates a candidate by `grid_code`, else by coordinates (containing or nearest grid),
else by `community_code`, else by `district_code`. `dedupe_key` is optional too: when empty, the
same event code at the same place within the merge window is one ticket; a source with its own
notion of sameness (the cross-check: one ticket per case) sets it. `priority` and `department_code`
override the catalogue and the responsibility matrix where the source knows better; `closed_at` says
the source itself saw the problem end (an IoT incident whose readings stayed low), which closes the
ticket unless the dispatch system reported on it later.
"""

from __future__ import annotations

import pyarrow as pa

SOURCES = ("hotline", "grid_report", "enterprise_appeal", "iot_alert", "video_ai", "crosscheck")
PRIORITIES = ("P1", "P2", "P3", "P4")
TZ = "Asia/Shanghai"

CANDIDATE_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_ref", pa.string(), nullable=False),
        pa.field("event_code", pa.string(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("description", pa.string()),
        pa.field("occurred_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("lon", pa.float64()),
        pa.field("lat", pa.float64()),
        pa.field("grid_code", pa.string()),
        pa.field("community_code", pa.string()),
        pa.field("district_code", pa.string()),
        pa.field("is_urgent", pa.bool_()),
        pa.field("evidence_uri", pa.string()),
        pa.field("dedupe_key", pa.string()),
        pa.field("department_code", pa.string()),  # set only when the source knows better than the matrix
        pa.field("priority", pa.string()),  # set only when the source knows better than the catalogue (IoT depth)
        pa.field("closed_at", pa.timestamp("us", tz="UTC")),  # the source saw the problem end (an IoT incident)
    ]
)

TICKET_SCHEMA = pa.schema(
    [
        pa.field("ticket_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_ref", pa.string(), nullable=False),
        pa.field("event_code", pa.string(), nullable=False),
        pa.field("event_name", pa.string()),
        pa.field("title", pa.string()),
        pa.field("description", pa.string()),
        pa.field("grid_code", pa.string()),
        pa.field("community_code", pa.string()),
        pa.field("street_code", pa.string()),
        pa.field("district_code", pa.string()),
        pa.field("lon", pa.float64()),
        pa.field("lat", pa.float64()),
        pa.field("department_code", pa.string(), nullable=False),
        pa.field("priority", pa.string(), nullable=False),
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("due_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("dedupe_key", pa.string(), nullable=False),
        pa.field("merged_count", pa.int64(), nullable=False),
        pa.field("evidence_uri", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("updated_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)
