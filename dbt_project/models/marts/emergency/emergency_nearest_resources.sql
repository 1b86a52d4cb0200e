-- 最近应急资源 (智慧应急) For each grid (centroid), the nearest emergency resource of each type and the
-- three nearest overall (haversine distance in metres): one row per grid and resource that is either.

select
    grid_code,
    resource_id,
    resource_type,
    resource_name,
    owner_department,
    capacity,
    lon,
    lat,
    overall_rank,
    type_rank,
    round(distance_m, 1) as distance_m,
    type_rank = 1 as is_nearest_of_type,
    overall_rank <= 3 as is_top3_overall
from {{ ref('int_emergency__grid_resource_distances') }}
where type_rank = 1 or overall_rank <= 3
