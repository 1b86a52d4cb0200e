{#
    A composite primary key is unique: no combination of `columns` occurs twice.
    dbt's own `unique` covers single columns; dbt_utils is not installed (no package hub offline).
#}
{% test unique_key(model, columns) %}

select
    {{ columns | join(', ') }},
    count(*) as n_rows
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1

{% endtest %}
