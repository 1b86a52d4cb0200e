-- 企业画像 (重点企业) One portrait per registered enterprise (credit code): registration and status,
-- industry section, grid, shareholders, revenue and tax over three years, the latest credit rating,
-- environmental penalties, fire inspections, investment projects, open appeals, and an attention score
-- whose components stay visible (weights in _enterprises__models.yml). No personal names or ID data.

with

registrations as (

    select
        uscc,
        name as enterprise_name,
        entity_type,
        status,
        established_date,
        registered_capital_wan_cny,
        industry_code,
        division_code as community_code,
        lon,
        lat,
        upper(left(industry_code, 1)) as industry_section
    from {{ ref('stg_shichang__enterprise_registration') }}

),

grids as (

    select
        grid_code,
        street_code,
        district_code
    from {{ ref('stg_zhengshu__grid_registry') }}

),

joined as (

    select
        registrations.uscc,
        registrations.enterprise_name,
        registrations.entity_type,
        registrations.status,
        registrations.established_date,
        registrations.registered_capital_wan_cny,
        registrations.industry_code,
        registrations.industry_section,
        sections.section_name as industry_section_name,
        registrations.community_code,
        registrations.lon,
        registrations.lat,
        location.grid_code,
        location.located_by,
        grids.street_code,
        grids.district_code,
        activity.shareholders_count,
        activity.organisation_shareholders_count,
        activity.subscribed_capital_wan_cny,
        tax.tax_year_latest,
        tax.revenue_wan_cny_latest,
        tax.revenue_wan_cny_prev1,
        tax.revenue_wan_cny_prev2,
        tax.revenue_growth_pct,
        tax.tax_paid_wan_cny_latest,
        tax.tax_paid_wan_cny_prev1,
        tax.tax_paid_wan_cny_prev2,
        tax.tax_paid_growth_pct,
        tax.credit_rating_latest,
        tax.credit_rating_year,
        activity.penalties_count,
        activity.penalties_total_cny,
        activity.penalties_recent_count,
        activity.penalties_recent_total_cny,
        activity.last_penalty_date,
        activity.inspections_count,
        activity.inspections_failed_count,
        activity.last_inspection_date,
        activity.last_inspection_result,
        activity.last_hazard_count,
        activity.projects_count,
        activity.projects_investment_wan_cny,
        activity.projects_under_construction,
        activity.projects_completed,
        activity.projects_suspended,
        activity.projects_start_overdue,
        activity.projects_avg_progress_pct,
        activity.appeals_count,
        activity.appeals_open_count,
        activity.last_appeal_at,
        as_of.as_of_date
    from registrations
    cross join {{ ref('int_enterprises__as_of') }} as as_of
    left join {{ ref('industry_sections') }} as sections
        on registrations.industry_section = sections.section_code
    left join {{ ref('int_enterprises__grid_location') }} as location
        on registrations.uscc = location.uscc
    left join grids
        on location.grid_code = grids.grid_code
    left join {{ ref('int_enterprises__tax_trend') }} as tax
        on registrations.uscc = tax.uscc
    left join {{ ref('int_enterprises__activity') }} as activity
        on registrations.uscc = activity.uscc

),

scored as (

    select
        *,
        least(25, 10 * penalties_recent_count) as penalty_points,
        case
            when last_inspection_result = 'fail_closed' then 25
            when last_inspection_result = 'hazard_rectify' then least(20, 5 + 2 * coalesce(last_hazard_count, 0))
            else 0
        end as fire_hazard_points,
        case
            when revenue_growth_pct <= -30 then 20
            when revenue_growth_pct <= -10 then 10
            else 0
        end as revenue_decline_points,
        case credit_rating_latest
            when 'D' then 15
            when 'C' then 10
            else 0
        end as credit_points,
        least(15, 5 * appeals_open_count) as open_appeal_points
    from joined

)

select
    *,
    penalty_points + fire_hazard_points + revenue_decline_points + credit_points + open_appeal_points
        as attention_score,
    case
        when penalty_points + fire_hazard_points + revenue_decline_points + credit_points + open_appeal_points >= 40
            then 'high'
        when penalty_points + fire_hazard_points + revenue_decline_points + credit_points + open_appeal_points >= 25
            then 'medium'
        else 'low'
    end as attention_level
from scored
