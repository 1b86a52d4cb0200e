{#-
    The day the enterprise library is computed for: the dbt var `as_of` (YYYY-MM-DD) when given, else
    the latest local date on which any of its departments delivered. Never the wall clock.
-#}
with

settings as (

    select nullif('{{ var("as_of") or "" }}', '') as as_of_var

),

latest as (

    select max(_extracted_at) as data_at from {{ ref('stg_shichang__enterprise_registration') }}
    union all
    select max(_extracted_at) as data_at from {{ ref('stg_shichang__shareholders') }}
    union all
    select max(_extracted_at) as data_at from {{ ref('stg_shuiwu__enterprise_tax') }}
    union all
    select max(_extracted_at) as data_at from {{ ref('stg_shengtai__environment_penalties') }}
    union all
    select max(_extracted_at) as data_at from {{ ref('stg_xiaofang__fire_inspections') }}
    union all
    select max(_extracted_at) as data_at from {{ ref('stg_fagai__investment_projects') }}
    union all
    select max(_extracted_at) as data_at from {{ ref('stg_zhengshu__enterprise_appeals') }}

),

as_of as (

    select
        case
            when settings.as_of_var is null
                then cast(timezone('{{ var("local_timezone") }}', (select max(latest.data_at) from latest)) as date)
            when regexp_full_match(settings.as_of_var, '[0-9]{4}-[0-9]{2}-[0-9]{2}')
                then cast(settings.as_of_var as date)
            else error('dbt var as_of must be a date YYYY-MM-DD, got ' || settings.as_of_var)
        end as as_of_date
    from settings

)

select
    as_of_date,
    -- The end of the as-of day in local time: events and forecasts strictly before it count.
    timezone('{{ var("local_timezone") }}', cast(as_of_date + 1 as timestamp)) as as_of_end_at
from as_of
