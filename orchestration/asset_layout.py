"""Where each asset sits in the Dagster UI: its group (the business domain), its layer (a tag) and its freshness.

The lineage page should show the business (party, enterprises, emergency, urban, dispatch, social
assistance, video, sharing, analytics, ops), so the group is the domain and the layer (bronze, silver,
staging, intermediate, marts, gold, ops, published) is the tag `layer`. The domain of a contract's bronze
and silver comes from one data file, orchestration/domains.yaml; a gold table's from its path
(`gold/<domain>/...`); a dbt model's from its folder (orchestration/dbt_assets.py asks `dbt_domain` here).

Freshness policies come from the cadences the departments promised (the contracts' `cadence`) and the
products promise (thematic_libs/sharing/products.yaml): an asset is due (WARN) one cadence after its last
materialisation and late (FAIL) a grace later, a quarter of the cadence and at least an hour. Dagster's
freshness daemon (`dagster dev` runs it) evaluates them; the UI shows the state on each asset.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from dagster import AssetKey, AssetsDefinition, AssetSpec, FreshnessPolicy

from ingestion.contract import Contract, cadence_days, load_contracts

DOMAINS_FILE = Path(__file__).with_name("domains.yaml")
LAYER_TAG = "layer"
REFERENCE_GROUP = "reference"  # dbt seeds: calendars, catalogues, the department list
OPS_GROUP = "ops"
# Groups that are already a domain of their own and keep their name whatever the key says.
OWN_GROUPS = ("sharing", "analytics")
DBT_LAYERS = ("staging", "intermediate", "marts")


@cache
def _domains() -> tuple[dict[str, str], dict[str, str]]:
    raw = yaml.safe_load(DOMAINS_FILE.read_text(encoding="utf-8")) or {}
    return dict(raw.get("departments") or {}), dict(raw.get("contracts") or {})


def contract_domain(contract_id: str) -> str:
    """The domain of a contract's data: its own line in domains.yaml, else its department's."""
    departments, contracts = _domains()
    if contract_id in contracts:
        return contracts[contract_id]
    department = contract_id.split(".", 1)[0]
    if department not in departments:
        raise ValueError(f"department {department} of {contract_id} has no domain in {DOMAINS_FILE.name}")
    return departments[department]


def known_domains() -> set[str]:
    departments, contracts = _domains()
    return {*departments.values(), *contracts.values(), *OWN_GROUPS, OPS_GROUP, REFERENCE_GROUP}


def layer_tags(layer: str) -> dict[str, str]:
    return {LAYER_TAG: layer}


def freshness_for(days: float | None) -> FreshnessPolicy | None:
    """Due (WARN) one cadence after the last materialisation, late (FAIL) a grace later; None without a cadence."""
    if not days:
        return None
    cadence = timedelta(days=days)
    grace = max(cadence / 4, timedelta(hours=1))
    return FreshnessPolicy.time_window(fail_window=cadence + grace, warn_window=cadence)


def contract_freshness(contract: Contract) -> FreshnessPolicy | None:
    return freshness_for(contract.cadence_days)


@cache
def _contracts() -> dict[str, Contract]:
    return load_contracts()


@cache
def _product_cadences() -> dict[str, str]:
    """`gold/<domain>/<table>` -> the product's cadence text (products.yaml), no warehouse needed."""
    from thematic_libs.sharing.datasets import all_datasets

    return {d.table: d.cadence for d in all_datasets().values() if d.layer == "gold"}


def _placement(key: AssetKey, group: str | None) -> tuple[str | None, str | None, FreshnessPolicy | None]:
    """(group, layer, freshness) of a Python-built asset from its key; None where the key says nothing."""
    path = key.path
    if path[0] in ("bronze", "silver") and len(path) == 3:
        contract = _contracts().get(f"{path[1]}.{path[2]}")
        if contract is not None:
            return contract_domain(contract.id), path[0], contract_freshness(contract)
        return (group if group in OWN_GROUPS else path[1]), path[0], None  # silver/video/detections
    if path[0] == "gold" and len(path) >= 3:
        domain = path[1] if path[1] in known_domains() else group  # gold/reports/... stays with its builder
        return domain, "gold", freshness_for(cadence_days(_product_cadences().get("/".join(path), "")))
    if path[0] == "ops":
        return (group if group in OWN_GROUPS else OPS_GROUP), "ops", None
    if path[0] in (*DBT_LAYERS, REFERENCE_GROUP):
        return None, None, None  # the dbt translator places them (orchestration/dbt_assets.py)
    return group, "published", None  # open_data, share/deliveries, analytics/published_warehouse


def _placed(spec: AssetSpec) -> AssetSpec:
    group, layer, freshness = _placement(spec.key, spec.group_name)
    if layer is None:
        return spec
    changes: dict[str, Any] = {"group_name": group, "tags": {**spec.tags, **layer_tags(layer)}}
    if freshness is not None and spec.freshness_policy is None:
        changes["freshness_policy"] = freshness
    return spec.replace_attributes(**changes)


def lay_out(assets: Iterable[Any]) -> list[Any]:
    """The assets with their domain group, layer tag and freshness policy (source assets stay as they are:
    the stream assets place themselves)."""
    return [a.map_asset_specs(_placed) if isinstance(a, AssetsDefinition) else a for a in assets]


def dbt_domain(node: Mapping[str, Any], sources: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The domain of a dbt model: its folder under models/<layer>/, or for a staging model the domain of the
    table it reads (a contract, or a gold table built in Python); seeds are reference data."""
    if node.get("resource_type") == "seed":
        return REFERENCE_GROUP
    fqn = node.get("fqn") or []
    if node.get("resource_type") != "model" or len(fqn) < 3:
        return None
    if fqn[1] != "staging" and len(fqn) > 3:
        return fqn[2]  # ["yiwang", "marts", "party", "party_org_tree"] -> party
    for upstream in (node.get("depends_on") or {}).get("nodes") or []:
        if not upstream.startswith("source."):
            continue
        source = sources.get(upstream) or {}
        declared = (source.get("meta") or {}).get("asset_key")
        if declared and declared[0] == "gold":
            return declared[1]
        contract_id = ".".join(upstream.split(".")[-2:])
        if contract_id in _contracts():
            return contract_domain(contract_id)
    return None
