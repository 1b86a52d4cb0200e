-- Member-household links (党员联系户) as of the library's as-of date, with the state of the visits:
-- a link is overdue when its last visit (or, never visited, its start) lies more than
-- `party_visit_overdue_days` before as_of. Links that begin after as_of are left out.

with

as_of as (

    select as_of_date from {{ ref('int_party__as_of') }}

),

links as (

    select
        member_id,
        household_id,
        grid_code,
        linked_date,
        last_visit_date
    from {{ ref('stg_zuzhibu__household_links') }}

),

grids as (

    select
        grid_code,
        community_code
    from {{ ref('stg_zhengshu__grid_registry') }}

),

registered_households as (

    select distinct
        household_id,
        division_code
    from {{ ref('stg_gongan__household_registration') }}
    where status = 'normal'

)

select
    links.member_id,
    links.household_id,
    links.grid_code,
    grids.community_code,
    links.linked_date,
    links.last_visit_date,
    as_of.as_of_date,
    links.last_visit_date is null as never_visited,
    as_of.as_of_date - coalesce(links.last_visit_date, links.linked_date) as days_since_contact,
    as_of.as_of_date - coalesce(links.last_visit_date, links.linked_date)
    > {{ var('party_visit_overdue_days') }} as is_visit_overdue,
    registered_households.household_id is not null as is_registered_in_community
from links
cross join as_of
left join grids
    on links.grid_code = grids.grid_code
left join registered_households
    on
        links.household_id = registered_households.household_id
        and grids.community_code = registered_households.division_code
where links.linked_date <= as_of.as_of_date
