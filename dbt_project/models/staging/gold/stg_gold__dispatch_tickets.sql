-- 派单工单 The dispatch table, built in Python (thematic_libs/dispatch). See stg_gold__urban_events.

select * from {{ source('gold', 'dispatch_tickets') }}
