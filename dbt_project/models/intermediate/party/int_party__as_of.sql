{#-
    The day the party-building library is computed for: the dbt var `as_of` (YYYY-MM-DD) when given,
    else the latest local date on which zuzhibu delivered its party tables. Never the wall clock, so a
    rebuild of the same data gives the same answer.
-#}
with

settings as (

    select nullif('{{ var("as_of") or "" }}', '') as as_of_var

),

extractions as (

    select max(_extracted_at) as extracted_at from {{ ref('stg_zuzhibu__party_organizations') }}
    union all
    select max(_extracted_at) as extracted_at from {{ ref('stg_zuzhibu__party_members') }}
    union all
    select max(_extracted_at) as extracted_at from {{ ref('stg_zuzhibu__household_links') }}

)

select
    case
        when settings.as_of_var is null
            then cast(
                timezone('{{ var("local_timezone") }}', (select max(extractions.extracted_at) from extractions))
                as date
            )
        when regexp_full_match(settings.as_of_var, '[0-9]{4}-[0-9]{2}-[0-9]{2}')
            then cast(settings.as_of_var as date)
        else error('dbt var as_of must be a date YYYY-MM-DD, got ' || settings.as_of_var)
    end as as_of_date
from settings
