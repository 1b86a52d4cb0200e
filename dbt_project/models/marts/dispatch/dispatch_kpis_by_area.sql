-- 闭环考核 Closed-loop KPIs per district, street, community and grid (one row per area and level).

with

lifecycle as (

    select * from {{ ref('int_dispatch__ticket_lifecycle') }}

),

areas as (

    select
        'district' as area_level,
        district_code as area_code,
        *
    from lifecycle
    union all
    select
        'street' as area_level,
        street_code as area_code,
        *
    from lifecycle
    where street_code is not null
    union all
    select
        'community' as area_level,
        community_code as area_code,
        *
    from lifecycle
    where community_code is not null
    union all
    select
        'grid' as area_level,
        grid_code as area_code,
        *
    from lifecycle
    where grid_code is not null

)

select
    area_level,
    area_code,
    {{ dispatch_kpis() }}
from areas
group by area_level, area_code
