-- 闭环考核 Closed-loop KPIs per handling department (the department holding the ticket at its last event).

with

lifecycle as (

    select * from {{ ref('int_dispatch__ticket_lifecycle') }}

),

departments as (

    select * from {{ ref('departments') }}

)

select
    l.department_code,
    d.name_zh as department_name,
    {{ dispatch_kpis() }}
from lifecycle as l
left join departments as d on l.department_code = d.department_code
group by l.department_code, d.name_zh
