-- 城市事件 Events per grid, event item and source (all time up to the data), for maps and trend reports.

with

events as (

    select * from {{ ref('stg_gold__urban_events') }}

)

select
    grid_code,
    community_code,
    street_code,
    district_code,
    event_code,
    event_name,
    major_code,
    source,
    coalesce(grid_code, 'community:' || community_code, 'district:' || district_code) as place_code,
    count(*) as events,
    count(ticket_id) as ticketed_events,
    count(distinct ticket_id) as tickets,
    min(occurred_at) as first_at,
    max(occurred_at) as last_at
from events
where event_code is not null
group by all
