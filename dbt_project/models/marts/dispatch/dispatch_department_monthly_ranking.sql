-- 一月一排名 Monthly department ranking, by month of ticket creation. The score weighs the on-time rate,
-- the satisfaction rate and the handling speed (vars dispatch_ranking_weights; speed = 1 at 0 working
-- days, 0 at dispatch_ranking_slow_days or more); a rate with no tickets behind it counts as 0.

with

lifecycle as (

    select * from {{ ref('int_dispatch__ticket_lifecycle') }}

),

monthly as (

    select
        created_month as month,
        department_code,
        {{ dispatch_kpis() }}
    from lifecycle
    group by created_month, department_code

),

scored as (

    select
        *,
        round(
            {{ var('dispatch_ranking_weights')['on_time'] }} * coalesce(on_time_rate, 0)
            + {{ var('dispatch_ranking_weights')['satisfaction'] }} * coalesce(satisfaction_rate, 0)
            + {{ var('dispatch_ranking_weights')['speed'] }}
            * greatest(
                0, 1 - coalesce(avg_handling_working_days, {{ var('dispatch_ranking_slow_days') }})
                / {{ var('dispatch_ranking_slow_days') }}
            ),
            2
        ) as score
    from monthly

)

select
    *,
    rank() over (partition by month order by score desc, on_time_rate desc nulls last) as rank_in_month,
    count(*) over (partition by month) as departments_in_month
from scored
