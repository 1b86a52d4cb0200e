-- 党组织树 The party organisation tree: one row per organisation with its parent, depth, path and root,
-- and how many organisations sit below it.

with

tree as (

    select * from {{ ref('int_party__org_tree') }}

),

descendants as (

    select
        ancestor.org_code,
        count(*) filter (where descendant.depth = ancestor.depth + 1) as children_count,
        count(*) as descendants_count
    from tree as descendant
    inner join tree as ancestor
        on
            list_contains(descendant.path_codes, ancestor.org_code)
            and descendant.org_code != ancestor.org_code
    group by ancestor.org_code

)

select
    tree.org_code,
    tree.org_name,
    tree.org_type,
    tree.parent_org_code,
    tree.division_code,
    tree.root_org_code,
    tree.depth,
    tree.org_path,
    coalesce(descendants.children_count, 0) as children_count,
    coalesce(descendants.descendants_count, 0) as descendants_count,
    coalesce(descendants.children_count, 0) = 0 as is_leaf,
    tree.root_org_code is not null as is_reachable_from_root
from tree
left join descendants
    on tree.org_code = descendants.org_code
