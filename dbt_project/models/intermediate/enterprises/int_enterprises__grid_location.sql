-- Each registered enterprise placed in a grid. The registration has coordinates (sometimes missing) and
-- the 12-digit community of its address; grids belong to communities. In order:
--   1. nearest_centroid: the grid of the enterprise's community whose centroid is nearest (haversine);
--   2. fire_inspection: no coordinates, the grid of its latest fire inspection (xiaofang);
--   3. unlocated: grid_code null.

with

registrations as (

    select
        uscc,
        division_code,
        lon,
        lat
    from {{ ref('stg_shichang__enterprise_registration') }}

),

grids as (

    select
        grid_code,
        community_code,
        center_lon,
        center_lat
    from {{ ref('stg_zhengshu__grid_registry') }}

),

nearest_centroid as (

    select
        registrations.uscc,
        grids.grid_code,
        2 * 6371008.8 * asin(sqrt(
            power(sin(radians(grids.center_lat - registrations.lat) / 2), 2)
            + cos(radians(registrations.lat)) * cos(radians(grids.center_lat))
            * power(sin(radians(grids.center_lon - registrations.lon) / 2), 2)
        )) as distance_m
    from registrations
    inner join grids
        on registrations.division_code = grids.community_code
    where registrations.lon is not null and registrations.lat is not null
    qualify row_number() over (partition by registrations.uscc order by distance_m, grids.grid_code) = 1

),

latest_inspection as (

    select
        inspections.uscc,
        inspections.grid_code
    from {{ ref('stg_xiaofang__fire_inspections') }} as inspections
    inner join grids
        on inspections.grid_code = grids.grid_code
    where inspections.uscc is not null
    qualify row_number() over (
        partition by inspections.uscc
        order by inspections.inspected_date desc, inspections.inspection_id desc
    ) = 1

)

select
    registrations.uscc,
    nearest_centroid.distance_m as centroid_distance_m,
    coalesce(nearest_centroid.grid_code, latest_inspection.grid_code) as grid_code,
    case
        when nearest_centroid.grid_code is not null then 'nearest_centroid'
        when latest_inspection.grid_code is not null then 'fire_inspection'
        else 'unlocated'
    end as located_by
from registrations
left join nearest_centroid
    on registrations.uscc = nearest_centroid.uscc
left join latest_inspection
    on registrations.uscc = latest_inspection.uscc
