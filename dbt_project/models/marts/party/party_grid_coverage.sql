-- 网格联系户覆盖 Heat-map-ready coverage of households by party members, one row per grid of the
-- registry. Denominator: gongan registers households by community (12-digit division code), not by
-- grid, so a grid's households are not known. The exact share is the community's
-- (`community_link_share`); the grid share is an estimate over the community's households spread
-- evenly over its grids (`grid_link_share_est`, may exceed 1 where a grid holds more than its part).

with

as_of as (

    select as_of_date from {{ ref('int_party__as_of') }}

),

grids as (

    select
        grid_code,
        grid_name,
        community_code,
        community_name,
        street_code,
        street_name,
        district_code,
        center_lon,
        center_lat
    from {{ ref('stg_zhengshu__grid_registry') }}

),

links as (

    select * from {{ ref('int_party__household_links') }}

),

per_grid as (

    select
        grid_code,
        count(distinct member_id) as linking_members,
        count(*) as links_count,
        count(distinct household_id) as linked_households,
        count(distinct household_id) filter (where is_registered_in_community) as linked_registered_households,
        count(*) filter (where is_visit_overdue) as overdue_links
    from links
    group by grid_code

),

per_community as (

    select
        community_code,
        count(distinct household_id) filter (where is_registered_in_community) as community_linked_households
    from links
    group by community_code

),

community_grids as (

    select
        community_code,
        count(*) as grids_in_community
    from grids
    group by community_code

),

resident_members as (

    select
        residence_community_code as community_code,
        count(*) as community_resident_members
    from {{ ref('party_member_households') }}
    where residence_community_code is not null
    group by residence_community_code

),

community_households as (

    select * from {{ ref('int_party__community_households') }}

)

select
    grids.grid_code,
    grids.grid_name,
    grids.community_code,
    grids.community_name,
    grids.street_code,
    grids.street_name,
    grids.district_code,
    grids.center_lon,
    grids.center_lat,
    community_grids.grids_in_community,
    as_of.as_of_date,
    coalesce(per_grid.linking_members, 0) as linking_members,
    coalesce(per_grid.links_count, 0) as links_count,
    coalesce(per_grid.linked_households, 0) as linked_households,
    coalesce(per_grid.linked_registered_households, 0) as linked_registered_households,
    coalesce(per_grid.overdue_links, 0) as overdue_links,
    coalesce(per_grid.overdue_links, 0) / nullif(per_grid.links_count, 0) as overdue_link_share,
    coalesce(community_households.registered_households, 0) as community_registered_households,
    coalesce(per_community.community_linked_households, 0) as community_linked_households,
    coalesce(per_community.community_linked_households, 0)
    / nullif(community_households.registered_households, 0) as community_link_share,
    community_households.registered_households / community_grids.grids_in_community as grid_households_est,
    coalesce(per_grid.linked_registered_households, 0)
    / nullif(community_households.registered_households / community_grids.grids_in_community, 0)
        as grid_link_share_est,
    coalesce(resident_members.community_resident_members, 0) as community_resident_members
from grids
cross join as_of
inner join community_grids
    on grids.community_code = community_grids.community_code
left join per_grid
    on grids.grid_code = per_grid.grid_code
left join per_community
    on grids.community_code = per_community.community_code
left join community_households
    on grids.community_code = community_households.community_code
left join resident_members
    on grids.community_code = resident_members.community_code
