-- Registered households per community (户籍户数): distinct household numbers of residents whose
-- registration is `normal` and whose address lies in the community. The denominator of link coverage.

select
    division_code as community_code,
    count(distinct household_id) as registered_households
from {{ ref('stg_gongan__household_registration') }}
where status = 'normal'
group by division_code
