-- 内涝风险 (智慧应急) Waterlogging risk per grid as of the as-of date, from its waterlogging history and
-- its district's latest rainfall forecast; every component is a column (formula in
-- _emergency__models.yml).

with

summary as (

    select * from {{ ref('emergency_waterlogging_summary') }}

),

rainfall as (

    select * from {{ ref('int_emergency__district_rainfall') }}

),

sensors as (

    select
        grid_code,
        count(*) filter (where device_type = 'water_level' and status = 'active') as water_level_sensors_active
    from {{ ref('stg_yingji__sensor_devices') }}
    group by grid_code

),

nearest_pumps as (

    select
        grid_code,
        resource_id as nearest_pump_id,
        round(distance_m, 1) as nearest_pump_distance_m
    from {{ ref('int_emergency__grid_resource_distances') }}
    where resource_type = 'pump' and type_rank = 1

),

scored as (

    select
        summary.grid_code,
        summary.grid_name,
        summary.community_code,
        summary.street_code,
        summary.district_code,
        summary.center_lon,
        summary.center_lat,
        nearest_pumps.nearest_pump_id,
        nearest_pumps.nearest_pump_distance_m,
        summary.history_events,
        summary.history_days_with_events,
        summary.recent_events,
        summary.last_occurred_at,
        rainfall.issued_at as forecast_issued_at,
        rainfall.max_warning_level,
        summary.as_of_date,
        coalesce(sensors.water_level_sensors_active, 0) as water_level_sensors_active,
        coalesce(rainfall.rain_next_24h_mm, 0) as rain_next_24h_mm,
        least(20, 5 * summary.history_days_with_events) as history_points,
        least(50, 25 * summary.recent_events) as recent_points,
        greatest(
            case rainfall.max_warning_level
                when 'red' then 30
                when 'orange' then 25
                when 'yellow' then 20
                when 'blue' then 10
                else 0
            end,
            cast(least(30, floor(coalesce(rainfall.rain_next_24h_mm, 0) / 2)) as integer)
        ) as forecast_points
    from summary
    left join rainfall
        on summary.district_code = rainfall.district_code
    left join sensors
        on summary.grid_code = sensors.grid_code
    left join nearest_pumps
        on summary.grid_code = nearest_pumps.grid_code

)

select
    *,
    cast(history_points + recent_points + forecast_points as integer) as risk_score,
    case
        when history_points + recent_points + forecast_points >= 60 then 'high'
        when history_points + recent_points + forecast_points >= 30 then 'medium'
        else 'low'
    end as risk_level
from scored
