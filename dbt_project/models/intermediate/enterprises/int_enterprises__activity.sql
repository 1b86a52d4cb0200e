-- What the other departments know of each enterprise up to the as-of date, one row per credit code
-- registered or seen anywhere (zeros where a department knows nothing of it): environmental penalties
-- (shengtai), fire inspections (xiaofang), investment projects (fagai), enterprise appeals (zhengshu)
-- and shareholders (shichang).

with

as_of as (

    select * from {{ ref('int_enterprises__as_of') }}

),

penalties as (

    select
        penalties.uscc,
        count(*) as penalties_count,
        sum(penalties.penalty_cny) as penalties_total_cny,
        count(*) filter (
            where penalties.decided_date
            > as_of.as_of_date - to_months({{ var('enterprise_penalty_window_months') }})
        ) as penalties_recent_count,
        coalesce(sum(penalties.penalty_cny) filter (
            where penalties.decided_date
            > as_of.as_of_date - to_months({{ var('enterprise_penalty_window_months') }})
        ), 0) as penalties_recent_total_cny,
        max(penalties.decided_date) as last_penalty_date
    from {{ ref('stg_shengtai__environment_penalties') }} as penalties
    cross join as_of
    where penalties.decided_date <= as_of.as_of_date
    group by penalties.uscc

),

inspections as (

    select
        inspections.uscc,
        inspections.inspected_date as last_inspection_date,
        inspections.result as last_inspection_result,
        inspections.hazard_count as last_hazard_count,
        count(*) over (partition by inspections.uscc) as inspections_count,
        count(case when inspections.result != 'pass' then 1 end) over (
            partition by inspections.uscc
        ) as inspections_failed_count
    from {{ ref('stg_xiaofang__fire_inspections') }} as inspections
    cross join as_of
    where inspections.uscc is not null and inspections.inspected_date <= as_of.as_of_date
    qualify row_number() over (
        partition by inspections.uscc
        order by inspections.inspected_date desc, inspections.inspection_id desc
    ) = 1

),

projects as (

    select
        projects.uscc,
        count(*) as projects_count,
        sum(projects.total_investment_wan_cny) as projects_investment_wan_cny,
        count(*) filter (where projects.status = 'under_construction') as projects_under_construction,
        count(*) filter (where projects.status = 'completed') as projects_completed,
        count(*) filter (where projects.status = 'suspended') as projects_suspended,
        count(*) filter (
            where projects.actual_start is null
            and projects.planned_start < as_of.as_of_date
            and projects.status in ('approved', 'preparing')
        ) as projects_start_overdue,
        round(avg(projects.progress_pct), 1) as projects_avg_progress_pct
    from {{ ref('stg_fagai__investment_projects') }} as projects
    cross join as_of
    group by projects.uscc

),

appeals as (

    select
        appeals.uscc,
        count(*) as appeals_count,
        count(*) filter (where appeals.status in ('open', 'in_progress')) as appeals_open_count,
        max(appeals.submitted_at) as last_appeal_at
    from {{ ref('stg_zhengshu__enterprise_appeals') }} as appeals
    cross join as_of
    where appeals.submitted_at < as_of.as_of_end_at
    group by appeals.uscc

),

shareholders as (

    select
        uscc,
        count(*) as shareholders_count,
        count(*) filter (where shareholder_type = 'organisation') as organisation_shareholders_count,
        sum(subscribed_capital_wan_cny) as subscribed_capital_wan_cny
    from {{ ref('stg_shichang__shareholders') }}
    group by uscc

),

known as (

    select uscc from {{ ref('stg_shichang__enterprise_registration') }}
    union
    select uscc from penalties
    union
    select uscc from inspections
    union
    select uscc from projects
    union
    select uscc from appeals
    union
    select uscc from shareholders

)

select
    known.uscc,
    shareholders.subscribed_capital_wan_cny,
    penalties.last_penalty_date,
    inspections.last_inspection_date,
    inspections.last_inspection_result,
    inspections.last_hazard_count,
    projects.projects_avg_progress_pct,
    appeals.last_appeal_at,
    coalesce(shareholders.shareholders_count, 0) as shareholders_count,
    coalesce(shareholders.organisation_shareholders_count, 0) as organisation_shareholders_count,
    coalesce(penalties.penalties_count, 0) as penalties_count,
    coalesce(penalties.penalties_total_cny, 0) as penalties_total_cny,
    coalesce(penalties.penalties_recent_count, 0) as penalties_recent_count,
    coalesce(penalties.penalties_recent_total_cny, 0) as penalties_recent_total_cny,
    coalesce(inspections.inspections_count, 0) as inspections_count,
    coalesce(inspections.inspections_failed_count, 0) as inspections_failed_count,
    coalesce(projects.projects_count, 0) as projects_count,
    coalesce(projects.projects_investment_wan_cny, 0) as projects_investment_wan_cny,
    coalesce(projects.projects_under_construction, 0) as projects_under_construction,
    coalesce(projects.projects_completed, 0) as projects_completed,
    coalesce(projects.projects_suspended, 0) as projects_suspended,
    coalesce(projects.projects_start_overdue, 0) as projects_start_overdue,
    coalesce(appeals.appeals_count, 0) as appeals_count,
    coalesce(appeals.appeals_open_count, 0) as appeals_open_count
from known
left join shareholders
    on known.uscc = shareholders.uscc
left join penalties
    on known.uscc = penalties.uscc
left join inspections
    on known.uscc = inspections.uscc
left join projects
    on known.uscc = projects.uscc
left join appeals
    on known.uscc = appeals.uscc
