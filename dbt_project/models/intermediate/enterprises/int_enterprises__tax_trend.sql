-- Revenue and tax per enterprise over the last three tax years of the district's tax data (the latest
-- tax year delivered for anyone, up to the as-of year, and the two before), with year-on-year growth,
-- and the latest credit rating the enterprise was given.

with

as_of as (

    select as_of_date from {{ ref('int_enterprises__as_of') }}

),

tax as (

    select tax.*
    from {{ ref('stg_shuiwu__enterprise_tax') }} as tax
    cross join as_of
    where tax.tax_year <= year(as_of.as_of_date)

),

latest_year as (

    select max(tax_year) as tax_year from tax

),

pivoted as (

    select
        tax.uscc,
        latest_year.tax_year as tax_year_latest,
        max(tax.revenue_wan_cny) filter (where tax.tax_year = latest_year.tax_year) as revenue_wan_cny_latest,
        max(tax.revenue_wan_cny) filter (where tax.tax_year = latest_year.tax_year - 1) as revenue_wan_cny_prev1,
        max(tax.revenue_wan_cny) filter (where tax.tax_year = latest_year.tax_year - 2) as revenue_wan_cny_prev2,
        max(tax.tax_paid_wan_cny) filter (where tax.tax_year = latest_year.tax_year) as tax_paid_wan_cny_latest,
        max(tax.tax_paid_wan_cny) filter (where tax.tax_year = latest_year.tax_year - 1) as tax_paid_wan_cny_prev1,
        max(tax.tax_paid_wan_cny) filter (where tax.tax_year = latest_year.tax_year - 2) as tax_paid_wan_cny_prev2
    from tax
    cross join latest_year
    where tax.tax_year >= latest_year.tax_year - 2
    group by tax.uscc, latest_year.tax_year

),

ratings as (

    select
        uscc,
        tax_year as credit_rating_year,
        credit_rating
    from tax
    where credit_rating is not null
    qualify row_number() over (partition by uscc order by tax_year desc) = 1

)

select
    pivoted.*,
    ratings.credit_rating as credit_rating_latest,
    ratings.credit_rating_year,
    round(
        100 * (pivoted.revenue_wan_cny_latest - pivoted.revenue_wan_cny_prev1)
        / nullif(pivoted.revenue_wan_cny_prev1, 0),
        2
    ) as revenue_growth_pct,
    round(
        100 * (pivoted.tax_paid_wan_cny_latest - pivoted.tax_paid_wan_cny_prev1)
        / nullif(pivoted.tax_paid_wan_cny_prev1, 0),
        2
    ) as tax_paid_growth_pct
from pivoted
left join ratings
    on pivoted.uscc = ratings.uscc
