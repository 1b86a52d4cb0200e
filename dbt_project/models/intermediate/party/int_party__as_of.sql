-- The day the party-building library is computed for: the var `as_of`, else the latest local date on
-- which zuzhibu delivered its party tables (macros/library_as_of.sql).

{{ library_as_of([
    ['stg_zuzhibu__party_organizations', '_extracted_at'],
    ['stg_zuzhibu__party_members', '_extracted_at'],
    ['stg_zuzhibu__household_links', '_extracted_at'],
]) }}
