{#- The day a thematic library is computed for: the dbt var `as_of` (YYYY-MM-DD) when given, else the
    latest local date in `latest`, a list of [model, timestamp column] pairs (usually `_extracted_at`
    of the library's inputs). Never the wall clock, so a rebuild of the same data gives the same answer.
    Columns: `as_of_date`, and `as_of_end_at`, the midnight after it in local time (an exclusive upper
    bound for timestamps). A malformed var fails the build naming the value. -#}
{% macro library_as_of(latest) %}
{%- set latest_parts = [] -%}
{%- for model, column in latest -%}
{%- do latest_parts.append("select max(" ~ column ~ ") as data_at from " ~ ref(model)) -%}
{%- endfor %}
with

settings as (

    select nullif('{{ var("as_of") or "" }}', '') as as_of_var

),

latest as (

    {{ latest_parts | join(" union all ") }}

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
    timezone('{{ var("local_timezone") }}', cast(as_of_date + 1 as timestamp)) as as_of_end_at
from as_of
{% endmacro %}
