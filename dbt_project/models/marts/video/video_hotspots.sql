-- 视频告警热点 (执法排班) Video events per camera, algorithm and local hour, with the camera's grid: where and
-- when riders without helmets, overflowing bins and street vending keep coming back, for enforcement planning.
-- Every event of gold/video/events counts, in the local hour of its first detection.

with

events as (

    select * from {{ ref('stg_gold__video_events') }}

),

grids as (

    select * from {{ ref('stg_zhengshu__grid_registry') }}

),

catalogue as (

    select * from {{ ref('event_catalogue') }}

),

hourly as (

    select
        camera_id,
        algorithm,
        date_trunc('hour', timezone('{{ var("local_timezone") }}', first_seen)) as event_hour,
        any_value(grid_code) as grid_code,
        any_value(algorithm_label) as algorithm_label,
        any_value(event_code) as event_code,
        count(*) as events,
        cast(sum(detections) as bigint) as detections,
        max(max_score) as max_score,
        min(first_seen) as first_seen,
        max(last_seen) as last_seen
    from events
    group by camera_id, algorithm, date_trunc('hour', timezone('{{ var("local_timezone") }}', first_seen))

)

select
    h.camera_id,
    h.grid_code,
    g.grid_name,
    g.community_code,
    g.street_code,
    h.algorithm,
    h.algorithm_label,
    h.event_code,
    c.item_name as event_name,
    h.event_hour,
    cast(h.event_hour as date) as event_date,
    cast(hour(h.event_hour) as integer) as hour_of_day,
    h.events,
    h.detections,
    h.max_score,
    h.first_seen,
    h.last_seen
from hourly as h
left join grids as g on h.grid_code = g.grid_code
left join catalogue as c on h.event_code = c.event_code
