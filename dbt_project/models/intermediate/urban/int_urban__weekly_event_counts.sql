-- Events per grid, event class (小类 minor class) and ISO week, with the weeks of no events filled in
-- as zeros (from the pair's first week to the last week of data), so that baselines see quiet weeks.

with

events as (

    select
        grid_code,
        minor_code,
        cast(date_trunc('week', timezone('{{ var("local_timezone") }}', occurred_at)) as date) as week_start
    from {{ ref('stg_gold__urban_events') }}
    where grid_code is not null and minor_code is not null

),

counted as (

    select
        grid_code,
        minor_code,
        week_start,
        count(*) as events
    from events
    group by grid_code, minor_code, week_start

),

pairs as (

    select
        grid_code,
        minor_code,
        min(week_start) as first_week
    from counted
    group by grid_code, minor_code

),

weeks as (

    select cast(unnest(generate_series(
        (select min(week_start) from counted), (select max(week_start) from counted), interval 7 day
    )) as date) as week_start

)

select
    p.grid_code,
    p.minor_code,
    w.week_start,
    coalesce(c.events, 0) as events,
    datediff('week', (select min(counted.week_start) from counted), w.week_start) as weeks_of_history
from pairs as p
inner join weeks as w on p.first_week <= w.week_start
left join counted as c
    on p.grid_code = c.grid_code and p.minor_code = c.minor_code and w.week_start = c.week_start
