-- 党组织党员数 Members per party organisation: those of the organisation itself (direct) and those of the
-- organisation and everything below it (total), by membership status and in-service flag, with the
-- members below the household-link norm and those with an overdue visit.

with

tree as (

    select * from {{ ref('int_party__org_tree') }}

),

members as (

    select * from {{ ref('party_member_households') }}

),

member_ancestors as (

    -- Each member counts once for its own organisation and once for every organisation above it.
    select
        members.org_code as member_org_code,
        members.member_id,
        members.member_status,
        members.in_service,
        members.is_below_link_norm,
        members.has_overdue_visit,
        unnest(tree.path_codes) as org_code
    from members
    inner join tree
        on members.org_code = tree.org_code

),

counts as (

    select
        org_code,
        count(*) filter (where member_org_code = org_code) as direct_members,
        count(*) filter (where member_org_code = org_code and member_status = 'full') as direct_full_members,
        count(*) filter (
            where member_org_code = org_code and member_status = 'probationary'
        ) as direct_probationary_members,
        count(*) filter (where member_org_code = org_code and in_service) as direct_in_service_members,
        count(*) as total_members,
        count(*) filter (where member_status = 'full') as total_full_members,
        count(*) filter (where member_status = 'probationary') as total_probationary_members,
        count(*) filter (where in_service) as total_in_service_members,
        count(*) filter (where is_below_link_norm) as total_members_below_link_norm,
        count(*) filter (where has_overdue_visit) as total_members_with_overdue_visit
    from member_ancestors
    group by org_code

)

select
    tree.org_code,
    tree.org_type,
    tree.parent_org_code,
    tree.root_org_code,
    tree.depth,
    coalesce(counts.direct_members, 0) as direct_members,
    coalesce(counts.direct_full_members, 0) as direct_full_members,
    coalesce(counts.direct_probationary_members, 0) as direct_probationary_members,
    coalesce(counts.direct_in_service_members, 0) as direct_in_service_members,
    coalesce(counts.total_members, 0) as total_members,
    coalesce(counts.total_full_members, 0) as total_full_members,
    coalesce(counts.total_probationary_members, 0) as total_probationary_members,
    coalesce(counts.total_in_service_members, 0) as total_in_service_members,
    coalesce(counts.total_members_below_link_norm, 0) as total_members_below_link_norm,
    coalesce(counts.total_members_with_overdue_visit, 0) as total_members_with_overdue_visit
from tree
left join counts
    on tree.org_code = counts.org_code
