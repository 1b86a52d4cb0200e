-- 城市事件 Urban events, built in Python (thematic_libs/urban/events.py). Models read the gold sources
-- only through these one-to-one views: each source is loaded into DuckDB once, not by every model.

select * from {{ source('gold', 'urban_events') }}
