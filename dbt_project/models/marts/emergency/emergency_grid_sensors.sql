-- 网格感知设备统计 (智慧应急) Sensor devices per grid and device type, by status.

select
    grid_code,
    device_type,
    count(*) as devices_count,
    count(*) filter (where status = 'active') as active_count,
    count(*) filter (where status = 'offline') as offline_count,
    count(*) filter (where status = 'retired') as retired_count
from {{ ref('emergency_sensor_registry') }}
group by grid_code, device_type
