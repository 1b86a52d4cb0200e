-- 多次流转疑难工单 Tickets transferred twice or more, for the command centre's difficult-case review.

select
    ticket_id,
    event_code,
    event_name,
    grid_code,
    street_code,
    district_code,
    routed_department_code,
    department_code,
    transfer_count,
    return_count,
    reopen_count,
    status,
    created_at,
    due_at,
    resolved_at,
    overdue_open
from {{ ref('int_dispatch__ticket_lifecycle') }}
where is_hard_ticket
