-- 自动挖掘高频事件 High-frequency hotspots: grid x event class x week whose count stands well above the
-- same grid and class's own baseline (mean of the previous `hotspot_baseline_weeks` weeks of data):
-- at least `hotspot_min_count` events and a Poisson z-score of at least `hotspot_min_z`. A week needs
-- two weeks of history before it: before that there is no baseline to stand above.

with

weekly as (

    select * from {{ ref('int_urban__weekly_event_counts') }}

),

baselined as (

    select
        *,
        avg(events) over history as baseline_mean,
        count(*) over history as baseline_weeks
    from weekly
    window history as (
        partition by grid_code, minor_code order by week_start
        rows between {{ var('hotspot_baseline_weeks') }} preceding and 1 preceding
    )

),

grids as (

    select * from {{ ref('stg_zhengshu__grid_registry') }}

),

classes as (

    select distinct
        minor_code,
        minor_name,
        major_code,
        major_name
    from {{ ref('event_catalogue') }}

),

scored as (

    select
        b.grid_code,
        b.minor_code,
        b.week_start,
        b.events,
        b.weeks_of_history,
        round(coalesce(b.baseline_mean, 0), 3) as baseline_mean,
        round((b.events - coalesce(b.baseline_mean, 0)) / sqrt(greatest(coalesce(b.baseline_mean, 0), 0.5)), 2)
            as z_score
    from baselined as b
    where b.weeks_of_history >= 2

)

select
    s.grid_code,
    g.grid_name,
    g.community_code,
    g.street_code,
    g.district_code,
    g.center_lon,
    g.center_lat,
    s.minor_code,
    c.minor_name,
    c.major_code,
    c.major_name,
    s.week_start,
    s.events,
    s.baseline_mean,
    s.z_score
from scored as s
left join grids as g on s.grid_code = g.grid_code
left join classes as c on s.minor_code = c.minor_code
where s.events >= {{ var('hotspot_min_count') }} and s.z_score >= {{ var('hotspot_min_z') }}
