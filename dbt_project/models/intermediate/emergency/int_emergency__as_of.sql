-- The day the emergency library is computed for: the var `as_of`, else the latest local date of its data
-- (yingji and qixiang extractions, urban events) (macros/library_as_of.sql).

{{ library_as_of([
    ['stg_yingji__sensor_devices', '_extracted_at'],
    ['stg_yingji__emergency_resources', '_extracted_at'],
    ['stg_qixiang__rainfall_forecast', '_extracted_at'],
    ['stg_gold__urban_events', 'occurred_at'],
]) }}
