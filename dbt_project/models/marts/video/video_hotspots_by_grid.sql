-- 视频告警网格热点 (执法排班) Video events per grid and algorithm: how many, on how many cameras and days, and
-- the local hour of day with the most events (the hour to send a patrol), ranked within each algorithm.
-- Events of cameras the registry does not place in a grid are left out.

with

events as (

    select
        *,
        timezone('{{ var("local_timezone") }}', first_seen) as local_first_seen
    from {{ ref('stg_gold__video_events') }}
    where grid_code is not null

),

grids as (

    select * from {{ ref('stg_zhengshu__grid_registry') }}

),

by_hour as (

    select
        grid_code,
        algorithm,
        hour(local_first_seen) as hour_of_day,
        count(*) as events
    from events
    group by grid_code, algorithm, hour(local_first_seen)

),

peak as (

    select
        grid_code,
        algorithm,
        events as peak_hour_events,
        cast(hour_of_day as integer) as peak_hour
    from by_hour
    qualify row_number() over (partition by grid_code, algorithm order by events desc, hour_of_day asc) = 1

),

totals as (

    select
        grid_code,
        algorithm,
        any_value(algorithm_label) as algorithm_label,
        any_value(event_code) as event_code,
        count(*) as events,
        count(distinct camera_id) as cameras,
        sum(detections) as detections,
        count(distinct cast(local_first_seen as date)) as days_with_events,
        max(max_score) as max_score,
        min(first_seen) as first_seen,
        max(last_seen) as last_seen
    from events
    group by grid_code, algorithm

)

select
    t.grid_code,
    g.grid_name,
    g.community_code,
    g.street_code,
    g.center_lon,
    g.center_lat,
    t.algorithm,
    t.algorithm_label,
    t.event_code,
    t.events,
    t.cameras,
    t.days_with_events,
    p.peak_hour,
    p.peak_hour_events,
    t.max_score,
    t.first_seen,
    t.last_seen,
    cast(t.detections as bigint) as detections,
    round(t.events / t.cameras, 3) as events_per_camera,
    dense_rank() over (partition by t.algorithm order by t.events desc) as rank_in_algorithm
from totals as t
inner join peak as p on t.grid_code = p.grid_code and t.algorithm = p.algorithm
left join grids as g on t.grid_code = g.grid_code
