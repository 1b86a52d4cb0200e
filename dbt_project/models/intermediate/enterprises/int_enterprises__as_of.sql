-- The day the enterprise library is computed for: the var `as_of`, else the latest local date on which
-- any of its departments delivered (macros/library_as_of.sql).

{{ library_as_of([
    ['stg_shichang__enterprise_registration', '_extracted_at'],
    ['stg_shichang__shareholders', '_extracted_at'],
    ['stg_shuiwu__enterprise_tax', '_extracted_at'],
    ['stg_shengtai__environment_penalties', '_extracted_at'],
    ['stg_xiaofang__fire_inspections', '_extracted_at'],
    ['stg_fagai__investment_projects', '_extracted_at'],
    ['stg_zhengshu__enterprise_appeals', '_extracted_at'],
]) }}
