-- 视频告警事件 Video events, built in Python (thematic_libs/video/events.py). See stg_gold__urban_events.

select * from {{ source('gold', 'video_events') }}
