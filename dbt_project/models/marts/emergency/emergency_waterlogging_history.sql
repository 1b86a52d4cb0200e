-- 内涝历史 (智慧应急) Waterlogging events per grid and local day: 040201 道路积水 road flooding and 040202
-- 河涌水位超警 river level above warning, from the urban events (gold), up to the end of the as-of day.

select
    grid_code,
    event_date,
    count(*) filter (where event_code = '040201') as road_flooding_events,
    count(*) filter (where event_code = '040202') as river_level_events,
    count(*) as waterlogging_events,
    min(occurred_at) as first_occurred_at,
    max(occurred_at) as last_occurred_at
from {{ ref('int_emergency__waterlogging_events') }}
group by grid_code, event_date
