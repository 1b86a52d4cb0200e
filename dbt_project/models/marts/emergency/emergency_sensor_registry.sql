-- 物联感知设备 (智慧应急) One row per IoT sensor device (yingji) with its grid, place in the district,
-- status and how long it has been in service as of the as-of date.

with

as_of as (

    select as_of_date from {{ ref('int_emergency__as_of') }}

),

grids as (

    select
        grid_code,
        grid_name,
        community_code,
        street_code,
        district_code
    from {{ ref('stg_zhengshu__grid_registry') }}

)

select
    devices.device_id,
    devices.device_type,
    devices.metric,
    devices.alert_threshold,
    devices.status,
    devices.grid_code,
    grids.grid_name,
    grids.community_code,
    grids.street_code,
    grids.district_code,
    devices.lon,
    devices.lat,
    devices.location_name,
    devices.installed_date,
    as_of.as_of_date,
    devices.status = 'active' as is_active,
    round((as_of.as_of_date - devices.installed_date) / 365.25, 1) as years_in_service
from {{ ref('stg_yingji__sensor_devices') }} as devices
cross join as_of
left join grids
    on devices.grid_code = grids.grid_code
