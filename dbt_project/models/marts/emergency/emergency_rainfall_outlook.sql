-- 降雨预报 (智慧应急) Rainfall outlook per district from the latest forecast issued before the end of the
-- as-of day: one row per window of that issue, with the district's highest warning colour and its rain
-- over the windows starting within 24 hours of the issue.

select
    windows.district_code,
    windows.issued_at,
    windows.window_seq,
    windows.valid_from,
    windows.valid_to,
    windows.window_hours,
    windows.rain_mm,
    windows.rain_mm_per_hour,
    windows.warning_level,
    windows.warning_rank,
    districts.max_warning_level as district_max_warning_level,
    districts.max_warning_rank as district_max_warning_rank,
    districts.rain_next_24h_mm as district_rain_next_24h_mm,
    as_of.as_of_date
from {{ ref('int_emergency__rainfall_latest_issue') }} as windows
inner join {{ ref('int_emergency__district_rainfall') }} as districts
    on windows.district_code = districts.district_code
cross join {{ ref('int_emergency__as_of') }} as as_of
