-- Every grid centroid against every emergency resource (yingji), with the haversine distance in metres
-- (earth radius 6,371,008.8 m) and its rank overall and within the resource's type (ties by resource id).

with

grids as (

    select
        grid_code,
        center_lon,
        center_lat
    from {{ ref('stg_zhengshu__grid_registry') }}

),

resources as (

    select
        resource_id,
        resource_type,
        name as resource_name,
        lon,
        lat,
        capacity,
        owner_department
    from {{ ref('stg_yingji__emergency_resources') }}

),

distances as (

    select
        resources.*,
        grids.grid_code,
        2 * 6371008.8 * asin(sqrt(
            power(sin(radians(resources.lat - grids.center_lat) / 2), 2)
            + cos(radians(grids.center_lat)) * cos(radians(resources.lat))
            * power(sin(radians(resources.lon - grids.center_lon) / 2), 2)
        )) as distance_m
    from grids
    cross join resources

)

select
    *,
    row_number() over (partition by grid_code order by distance_m, resource_id) as overall_rank,
    row_number() over (partition by grid_code, resource_type order by distance_m, resource_id) as type_rank
from distances
