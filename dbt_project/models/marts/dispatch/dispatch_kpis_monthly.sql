-- 工单月度指标 Ticket KPI counts per month of creation, district, street, source, event and handling department:
-- only additive counts, so that a report can add them up over any of these and divide afterwards with the
-- definitions of macros/dispatch_kpis.sql (on-time rate = resolved_on_time_tickets / (resolved_tickets
-- + overdue_open_tickets); satisfaction rate = satisfied_tickets / rated_tickets; average handling time =
-- handling_working_days_total / handled_tickets). Superset's ticket dashboard reads it (published, see
-- thematic_libs/analytics/publish.py). A cross-check ticket appears here only as a count.

with

lifecycle as (

    select * from {{ ref('int_dispatch__ticket_lifecycle') }}

)

select
    created_month as month,
    district_code,
    street_code,
    source,
    event_code,
    event_name,
    department_code,
    count(*) as tickets,
    count(*) filter (where is_resolved) as resolved_tickets,
    count(*) filter (where overdue_open) as overdue_open_tickets,
    count(*) filter (where resolved_on_time) as resolved_on_time_tickets,
    count(satisfaction) as rated_tickets,
    count(*) filter (where satisfaction >= 4) as satisfied_tickets,
    count(handling_working_days) filter (where is_resolved) as handled_tickets,
    coalesce(sum(handling_working_days) filter (where is_resolved), 0) as handling_working_days_total,
    count(*) filter (where is_hard_ticket) as hard_tickets,
    sum(merged_count) as reports
from lifecycle
group by created_month, district_code, street_code, source, event_code, event_name, department_code
