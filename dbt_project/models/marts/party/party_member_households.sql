-- 党员联系户 One row per party member: the households the member is linked to, whether the member
-- meets the norm of at least `party_min_households_per_member` households (每名党员联系至少两户), and
-- the state of the visits as of the library's as-of date. No names, no ID numbers.

with

as_of as (

    select as_of_date from {{ ref('int_party__as_of') }}

),

members as (

    select members.*
    from {{ ref('int_party__members') }} as members
    cross join as_of
    where members.joined_date <= as_of.as_of_date

),

links as (

    select * from {{ ref('int_party__household_links') }}

),

per_member as (

    select
        member_id,
        count(*) as links_count,
        count(distinct household_id) as households_linked,
        count(distinct grid_code) as grids_linked,
        count(*) filter (where never_visited) as links_never_visited,
        count(*) filter (where is_visit_overdue) as links_visit_overdue,
        max(last_visit_date) as last_visit_date
    from links
    group by member_id

)

select
    members.member_id,
    members.org_code,
    members.member_status,
    members.in_service,
    members.joined_date,
    members.residence_community_code,
    coalesce(per_member.links_count, 0) as links_count,
    coalesce(per_member.households_linked, 0) as households_linked,
    coalesce(per_member.grids_linked, 0) as grids_linked,
    {{ var('party_min_households_per_member') }} as min_households_norm,
    coalesce(per_member.households_linked, 0)
    < {{ var('party_min_households_per_member') }} as is_below_link_norm,
    coalesce(per_member.links_never_visited, 0) as links_never_visited,
    coalesce(per_member.links_visit_overdue, 0) as links_visit_overdue,
    coalesce(per_member.links_visit_overdue, 0) > 0 as has_overdue_visit,
    per_member.last_visit_date,
    as_of.as_of_date - per_member.last_visit_date as days_since_last_visit,
    as_of.as_of_date
from members
cross join as_of
left join per_member
    on members.member_id = per_member.member_id
