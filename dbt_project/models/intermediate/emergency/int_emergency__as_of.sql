{#-
    The day the emergency library is computed for: the dbt var `as_of` (YYYY-MM-DD) when given, else the
    latest local date of its data (yingji and qixiang extractions, urban events). Never the wall clock.
-#}
with

settings as (

    select nullif('{{ var("as_of") or "" }}', '') as as_of_var

),

latest as (

    select max(_extracted_at) as data_at from {{ ref('stg_yingji__sensor_devices') }}
    union all
    select max(_extracted_at) as data_at from {{ ref('stg_yingji__emergency_resources') }}
    union all
    select max(_extracted_at) as data_at from {{ ref('stg_qixiang__rainfall_forecast') }}
    union all
    select max(occurred_at) as data_at from {{ ref('stg_gold__urban_events') }}

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
