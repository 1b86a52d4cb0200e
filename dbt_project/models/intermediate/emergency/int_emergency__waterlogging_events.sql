-- Waterlogging events (防汛): urban events with event code 040201 道路积水 (road flooding) or 040202
-- 河涌水位超警 (river level above warning), located in a grid, that occurred before the end of the as-of day.

with

as_of as (

    select * from {{ ref('int_emergency__as_of') }}

)

select
    events.event_id,
    events.source,
    events.event_code,
    events.grid_code,
    events.occurred_at,
    cast(timezone('{{ var("local_timezone") }}', events.occurred_at) as date) as event_date
from {{ ref('stg_gold__urban_events') }} as events
cross join as_of
where
    events.event_code in ('040201', '040202')
    and events.grid_code is not null
    and events.occurred_at < as_of.as_of_end_at
