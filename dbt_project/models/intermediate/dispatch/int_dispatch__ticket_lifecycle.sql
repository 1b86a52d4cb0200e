-- One row per ticket: what the dispatch system reported about it, and the KPI facts derived from that.
-- Resolution is the last `resolved` event (else `closed`), and counts only while the ticket's latest
-- event is `resolved` or `closed`: a reopened ticket is open again until it is resolved again.
-- Handling time is in working days (work_calendar).

with

tickets as (

    select * from {{ ref('stg_gold__dispatch_tickets') }}

),

outcomes as (

    select * from {{ ref('stg_zhihui__ticket_outcomes') }}

),

calendar as (

    select * from {{ ref('work_calendar') }}

),

per_ticket as (

    select
        ticket_id,
        count(*) filter (where event = 'transferred') as transfer_count,
        count(*) filter (where event = 'returned') as return_count,
        count(*) filter (where event = 'reopened') as reopen_count,
        min(event_at) filter (where event = 'dispatched') as dispatched_at,
        coalesce(
            max(event_at) filter (where event = 'resolved'), max(event_at) filter (where event = 'closed')
        ) as resolved_at,
        max(event_at) filter (where event = 'closed') as closed_at,
        arg_max(satisfaction, event_seq) filter (where satisfaction is not null) as satisfaction,
        arg_max(event, event_seq) as last_event,
        arg_max(department_code, event_seq) as handling_department_code
    from outcomes
    group by ticket_id

),

as_of as (

    select coalesce(
        {% if var('as_of') %}cast('{{ var("as_of") }} 23:59:59+08' as timestamptz){% else %}null{% endif %},
        greatest((select max(created_at) from tickets), (select max(event_at) from outcomes))
    ) as as_of_at

),

lifecycle as (

    select
        t.ticket_id,
        t.source,
        t.event_code,
        t.event_name,
        t.grid_code,
        t.community_code,
        t.street_code,
        t.district_code,
        t.department_code as routed_department_code,
        t.priority,
        t.merged_count,
        t.created_at,
        t.due_at,
        p.dispatched_at,
        p.closed_at,
        p.satisfaction,
        a.as_of_at,
        coalesce(p.handling_department_code, t.department_code) as department_code,
        case when p.last_event in ('resolved', 'closed') then p.resolved_at end as resolved_at,
        coalesce(p.transfer_count, 0) as transfer_count,
        coalesce(p.return_count, 0) as return_count,
        coalesce(p.reopen_count, 0) as reopen_count,
        coalesce(p.last_event, 'new') as status
    from tickets as t
    left join per_ticket as p on t.ticket_id = p.ticket_id
    cross join as_of as a
    where t.created_at <= a.as_of_at

),

positioned as (

    -- working-day position of a moment: working days before its local date, plus the elapsed share
    -- of that date when it is a working day
    select
        l.*,
        cs.working_days_before
        + case when cs.is_working_day then date_part(
            'epoch', timezone('{{ var("local_timezone") }}', l.created_at)
            - cast(timezone('{{ var("local_timezone") }}', l.created_at) as date)
        ) / 86400.0 else 0 end
            as created_position,
        ce.working_days_before
        + case when ce.is_working_day then date_part(
            'epoch', timezone('{{ var("local_timezone") }}', l.resolved_at)
            - cast(timezone('{{ var("local_timezone") }}', l.resolved_at) as date)
        ) / 86400.0 else 0 end
            as resolved_position
    from lifecycle as l
    left join calendar as cs on cast(timezone('{{ var("local_timezone") }}', l.created_at) as date) = cs.date
    left join calendar as ce on cast(timezone('{{ var("local_timezone") }}', l.resolved_at) as date) = ce.date

)

select
    * exclude (created_position, resolved_position),
    resolved_at is not null as is_resolved,
    resolved_at is not null and resolved_at <= due_at as resolved_on_time,
    resolved_at is null and due_at < as_of_at as overdue_open,
    round(resolved_position - created_position, 4) as handling_working_days,
    transfer_count >= 2 as is_hard_ticket,
    strftime(timezone('{{ var("local_timezone") }}', created_at), '%Y-%m') as created_month
from positioned
