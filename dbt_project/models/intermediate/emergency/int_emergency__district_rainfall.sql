-- Rainfall outlook per district from its latest issue: the highest warning colour of the issue's
-- windows and the rain forecast for windows starting within 24 hours of the issue.

select
    district_code,
    max(issued_at) as issued_at,
    count(*) as windows_count,
    max(warning_rank) as max_warning_rank,
    case max(warning_rank)
        when 4 then 'red'
        when 3 then 'orange'
        when 2 then 'yellow'
        when 1 then 'blue'
    end as max_warning_level,
    round(coalesce(sum(rain_mm) filter (where is_within_24h), 0), 1) as rain_next_24h_mm,
    max(rain_mm_per_hour) as max_rain_mm_per_hour
from {{ ref('int_emergency__rainfall_latest_issue') }}
group by district_code
