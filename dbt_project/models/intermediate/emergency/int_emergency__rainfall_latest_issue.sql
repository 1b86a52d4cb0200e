-- The latest rainfall forecast issued for each district before the end of the as-of day (qixiang), one
-- row per forecast window of that issue, with the warning colour ranked (none 0, blue 1, yellow 2,
-- orange 3, red 4).

with

as_of as (

    select * from {{ ref('int_emergency__as_of') }}

),

forecasts as (

    select forecasts.*
    from {{ ref('stg_qixiang__rainfall_forecast') }} as forecasts
    cross join as_of
    where forecasts.issued_at < as_of.as_of_end_at

),

latest_issue as (

    select
        district_code,
        max(issued_at) as issued_at
    from forecasts
    group by district_code

)

select
    forecasts.district_code,
    forecasts.issued_at,
    forecasts.valid_from,
    forecasts.valid_to,
    forecasts.rain_mm,
    forecasts.warning_level,
    row_number() over (partition by forecasts.district_code order by forecasts.valid_from) as window_seq,
    round(epoch(forecasts.valid_to - forecasts.valid_from) / 3600, 2) as window_hours,
    round(forecasts.rain_mm / nullif(epoch(forecasts.valid_to - forecasts.valid_from) / 3600, 0), 2)
        as rain_mm_per_hour,
    case forecasts.warning_level
        when 'red' then 4
        when 'orange' then 3
        when 'yellow' then 2
        when 'blue' then 1
        else 0
    end as warning_rank,
    forecasts.valid_from < forecasts.issued_at + interval 24 hour as is_within_24h
from forecasts
inner join latest_issue
    on
        forecasts.district_code = latest_issue.district_code
        and forecasts.issued_at = latest_issue.issued_at
