-- 网格内涝汇总 (智慧应急) Waterlogging totals per grid of the registry (zero for a grid without events):
-- all events up to the end of the as-of day, those within var `emergency_history_days` and within var
-- `emergency_recent_days`, and the last occurrence.

with

as_of as (

    select * from {{ ref('int_emergency__as_of') }}

),

events as (

    select * from {{ ref('int_emergency__waterlogging_events') }}

),

per_grid as (

    select
        events.grid_code,
        count(*) as waterlogging_events,
        count(*) filter (where events.event_code = '040201') as road_flooding_events,
        count(*) filter (where events.event_code = '040202') as river_level_events,
        count(distinct events.event_date) as days_with_events,
        count(*) filter (
            where events.occurred_at >= as_of.as_of_end_at - to_days({{ var('emergency_history_days') }})
        ) as history_events,
        count(distinct events.event_date) filter (
            where events.occurred_at >= as_of.as_of_end_at - to_days({{ var('emergency_history_days') }})
        ) as history_days_with_events,
        count(*) filter (
            where events.occurred_at >= as_of.as_of_end_at - to_days({{ var('emergency_recent_days') }})
        ) as recent_events,
        min(events.occurred_at) as first_occurred_at,
        max(events.occurred_at) as last_occurred_at
    from events
    cross join as_of
    group by events.grid_code

)

select
    grids.grid_code,
    grids.grid_name,
    grids.community_code,
    grids.street_code,
    grids.district_code,
    grids.center_lon,
    grids.center_lat,
    coalesce(per_grid.waterlogging_events, 0) as waterlogging_events,
    coalesce(per_grid.road_flooding_events, 0) as road_flooding_events,
    coalesce(per_grid.river_level_events, 0) as river_level_events,
    coalesce(per_grid.days_with_events, 0) as days_with_events,
    coalesce(per_grid.history_events, 0) as history_events,
    coalesce(per_grid.history_days_with_events, 0) as history_days_with_events,
    coalesce(per_grid.recent_events, 0) as recent_events,
    per_grid.first_occurred_at,
    per_grid.last_occurred_at,
    as_of.as_of_date - cast(timezone('{{ var("local_timezone") }}', per_grid.last_occurred_at) as date)
        as days_since_last_event,
    as_of.as_of_date
from {{ ref('stg_zhengshu__grid_registry') }} as grids
cross join as_of
left join per_grid
    on grids.grid_code = per_grid.grid_code
