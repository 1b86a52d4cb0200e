-- 网格企业汇总 (重点企业) Enterprise portraits rolled up per grid of the registry (how an enterprise is
-- placed in a grid: int_enterprises__grid_location). Enterprises that could not be placed are not in
-- any grid's counts.

with

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

portraits as (

    select * from {{ ref('enterprise_portraits') }}

),

per_grid as (

    select
        grid_code,
        count(*) as enterprises_count,
        count(*) filter (where status = 'active') as active_enterprises_count,
        count(*) filter (where attention_level = 'high') as high_attention_count,
        count(*) filter (where attention_level = 'medium') as medium_attention_count,
        round(avg(attention_score), 2) as avg_attention_score,
        max(attention_score) as max_attention_score,
        coalesce(sum(revenue_wan_cny_latest), 0) as revenue_wan_cny_latest,
        coalesce(sum(tax_paid_wan_cny_latest), 0) as tax_paid_wan_cny_latest,
        count(*) filter (where revenue_growth_pct < 0) as revenue_declining_count,
        count(*) filter (where credit_rating_latest in ('C', 'D')) as low_credit_count,
        sum(penalties_recent_count) as penalties_recent_count,
        coalesce(sum(penalties_recent_total_cny), 0) as penalties_recent_total_cny,
        count(*) filter (where last_inspection_result = 'fail_closed') as fire_fail_closed_count,
        count(*) filter (where last_inspection_result = 'hazard_rectify') as fire_hazard_rectify_count,
        sum(projects_count) as projects_count,
        coalesce(sum(projects_investment_wan_cny), 0) as projects_investment_wan_cny,
        sum(appeals_open_count) as appeals_open_count
    from portraits
    where grid_code is not null
    group by grid_code

),

main_sections as (

    -- The most frequent industry section of the grid; ties go to the first letter.
    select
        grid_code,
        industry_section as main_industry_section
    from portraits
    where grid_code is not null
    group by grid_code, industry_section
    qualify row_number() over (partition by grid_code order by count(*) desc, industry_section) = 1

)

select
    grids.*,
    per_grid.avg_attention_score,
    per_grid.max_attention_score,
    main_sections.main_industry_section,
    sections.section_name as main_industry_section_name,
    as_of.as_of_date,
    coalesce(per_grid.enterprises_count, 0) as enterprises_count,
    coalesce(per_grid.active_enterprises_count, 0) as active_enterprises_count,
    coalesce(per_grid.high_attention_count, 0) as high_attention_count,
    coalesce(per_grid.medium_attention_count, 0) as medium_attention_count,
    coalesce(per_grid.revenue_wan_cny_latest, 0) as revenue_wan_cny_latest,
    coalesce(per_grid.tax_paid_wan_cny_latest, 0) as tax_paid_wan_cny_latest,
    coalesce(per_grid.revenue_declining_count, 0) as revenue_declining_count,
    coalesce(per_grid.low_credit_count, 0) as low_credit_count,
    coalesce(cast(per_grid.penalties_recent_count as bigint), 0) as penalties_recent_count,
    coalesce(per_grid.penalties_recent_total_cny, 0) as penalties_recent_total_cny,
    coalesce(per_grid.fire_fail_closed_count, 0) as fire_fail_closed_count,
    coalesce(per_grid.fire_hazard_rectify_count, 0) as fire_hazard_rectify_count,
    coalesce(cast(per_grid.projects_count as bigint), 0) as projects_count,
    coalesce(per_grid.projects_investment_wan_cny, 0) as projects_investment_wan_cny,
    coalesce(cast(per_grid.appeals_open_count as bigint), 0) as appeals_open_count
from grids
cross join {{ ref('int_enterprises__as_of') }} as as_of
left join per_grid
    on grids.grid_code = per_grid.grid_code
left join main_sections
    on grids.grid_code = main_sections.grid_code
left join {{ ref('industry_sections') }} as sections
    on main_sections.main_industry_section = sections.section_code
