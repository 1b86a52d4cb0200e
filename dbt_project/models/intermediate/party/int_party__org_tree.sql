-- Party organisations with their place in the tree: the chain of ancestors from the root down to each
-- organisation (recursive CTE), its depth and its root. An organisation whose parent is missing from
-- the delivery, or that sits in a cycle, is never reached from a root: it is kept with `root_org_code`
-- null so that the gap stays visible.

with recursive

organisations as (

    select
        org_code,
        name as org_name,
        org_type,
        division_code,
        nullif(trim(parent_org_code), '') as parent_org_code
    from {{ ref('stg_zuzhibu__party_organizations') }}

),

tree as (

    select
        org_code,
        org_code as root_org_code,
        0 as depth,
        [org_code] as path_codes
    from organisations
    where parent_org_code is null

    union all

    select
        child.org_code,
        tree.root_org_code,
        tree.depth + 1 as depth,
        list_append(tree.path_codes, child.org_code) as path_codes
    from organisations as child
    inner join tree
        on child.parent_org_code = tree.org_code
    where
        not list_contains(tree.path_codes, child.org_code)
        and tree.depth < 32

)

select
    organisations.org_code,
    organisations.org_name,
    organisations.org_type,
    organisations.parent_org_code,
    organisations.division_code,
    tree.root_org_code,
    tree.depth,
    tree.path_codes,
    array_to_string(tree.path_codes, '/') as org_path
from organisations
left join tree
    on organisations.org_code = tree.org_code
