{#- The closed-loop KPIs over int_dispatch__ticket_lifecycle rows, one definition for every mart:
    按时办理率 on-time rate = resolved on time / (resolved + open past due);
    满意率 satisfaction rate = ratings of 4 or 5 / all ratings;
    平均办理时长 average handling time in working days, over resolved tickets;
    多次流转疑难工单 tickets transferred twice or more. -#}
{% macro dispatch_kpis() %}
    count(*) as tickets,
    count(*) filter (where is_resolved) as resolved_tickets,
    count(*) filter (where overdue_open) as overdue_open_tickets,
    count(*) filter (where resolved_on_time) as resolved_on_time_tickets,
    round(
        count(*) filter (where resolved_on_time)
        / nullif(count(*) filter (where is_resolved or overdue_open), 0), 4
    ) as on_time_rate,
    count(satisfaction) as rated_tickets,
    round(count(*) filter (where satisfaction >= 4) / nullif(count(satisfaction), 0), 4) as satisfaction_rate,
    round(avg(handling_working_days) filter (where is_resolved), 2) as avg_handling_working_days,
    count(*) filter (where is_hard_ticket) as hard_tickets,
    sum(merged_count) as reports
{% endmacro %}
