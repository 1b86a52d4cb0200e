-- Party members without their names or ID pseudonyms: the organisation, the membership and where the
-- member's own household is registered (gongan, joined on the ID pseudonym; null when not registered
-- as a normal resident here).

with

members as (

    select
        member_id,
        id_number_key,
        org_code,
        joined_date,
        member_status,
        in_service
    from {{ ref('stg_zuzhibu__party_members') }}

),

residents as (

    select
        id_number_key,
        household_id,
        division_code
    from {{ ref('stg_gongan__household_registration') }}
    where status = 'normal'

)

select
    members.member_id,
    members.org_code,
    members.joined_date,
    members.member_status,
    members.in_service,
    residents.division_code as residence_community_code
from members
left join residents
    on members.id_number_key = residents.id_number_key
