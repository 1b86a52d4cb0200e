"""The Superset asset bundle in the repository (`superset_assets/`), and its round trip through Superset.

The folder holds exactly what Superset's asset export writes (metadata.yaml, databases/, datasets/, charts/,
dashboards/), normalised so that importing it and exporting it again, with no change in the UI, gives the
same bytes:

- **No machine-specific path.** The database's URI is `duckdb:///${YIWANG_PUBLISHED_DUCKDB}` in the folder;
  `bundle_zip` writes the published file's path in at import time, `normalise_export` puts the placeholder back.
- **No instance-specific id.** An export names charts by their numeric ids in a dashboard's layout and
  metadata, and datasets by id in a chart's `datasource`. Those ids differ between two Superset instances
  (and after a re-import), so chart ids become canonical numbers derived from the chart's uuid (Superset's
  import maps them to its own ids through the layout's uuids, as it does for any export), a chart's
  `datasource` and `query_context` are dropped (the import sets the first, the dashboard rebuilds the
  second), and the derived `chartsInScope` lists and label-colour caches a browser writes back are dropped.
- **Stable file names** (`dashboards/<slug>.yaml`, `datasets/<database>/<schema>.<table>.yaml`,
  `charts/<table>_<uuid prefix>.yaml`), sorted keys, sorted columns and metrics, and Chinese kept readable.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

BUNDLE_DIR = Path(__file__).with_name("superset_assets")
URI_PLACEHOLDER = "duckdb:///${YIWANG_PUBLISHED_DUCKDB}"
ZIP_ROOT = "yiwang_assets"
KINDS = ("databases", "datasets", "charts", "dashboards")
# Derived by the browser from the layout and the data; written back when a dashboard is saved or viewed.
DERIVED_METADATA = ("shared_label_colors", "map_label_colors", "color_scheme_domain")


class BundleError(ValueError):
    """The bundle folder or an export is not what Superset's asset format says."""


def dump(document: Any) -> str:
    """YAML as the folder keeps it: sorted keys, block style, Chinese as it is."""
    return yaml.safe_dump(document, sort_keys=True, allow_unicode=True, default_flow_style=False, width=120)


def read_bundle(folder: Path = BUNDLE_DIR) -> dict[str, str]:
    """Every YAML file of the bundle folder by its path relative to the folder."""
    files = {p.relative_to(folder).as_posix(): p.read_text(encoding="utf-8") for p in sorted(folder.rglob("*.yaml"))}
    if "metadata.yaml" not in files:
        raise BundleError(f"{folder} has no metadata.yaml: it is not a Superset asset bundle")
    return files


def published_uri(published: Path) -> str:
    return f"duckdb:///{Path(published).resolve()}"


def bundle_zip(published: Path, folder: Path = BUNDLE_DIR) -> bytes:
    """The folder as the zip Superset's import takes, with the published file's path written in."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in read_bundle(folder).items():
            if name.startswith("databases/"):
                text = text.replace(URI_PLACEHOLDER, published_uri(published))
            archive.writestr(f"{ZIP_ROOT}/{name}", text)
    return buffer.getvalue()


# --- normalising an export -------------------------------------------------------------------------------------


def canonical_chart_id(uuid: str) -> int:
    """A chart's id in the folder: the first 28 bits of its uuid (the import maps it to the real id by uuid)."""
    return int(uuid.replace("-", "")[:7], 16)


def _chart_ids(position: Mapping[str, Any]) -> dict[int, int]:
    """Exported chart id -> canonical id, from the layout's chart components."""
    mapping: dict[int, int] = {}
    for component in position.values():
        if isinstance(component, dict) and component.get("type") == "CHART" and "uuid" in component.get("meta", {}):
            meta = component["meta"]
            canonical = canonical_chart_id(meta["uuid"])
            if canonical in mapping.values() and mapping.get(meta.get("chartId")) != canonical:
                raise BundleError(f"two charts of one dashboard share the canonical id {canonical}")
            mapping[meta.get("chartId")] = canonical
    return mapping


def _remap_list(values: list[Any], ids: Mapping[int, int]) -> list[int]:
    return [ids[v] for v in values if v in ids]


def _remap_scope(holder: dict[str, Any], ids: Mapping[int, int]) -> None:
    """`scope.excluded` remapped, the derived `chartsInScope` / `tabsInScope` dropped."""
    holder.pop("chartsInScope", None)
    holder.pop("tabsInScope", None)
    scope = holder.get("scope")
    if isinstance(scope, dict) and isinstance(scope.get("excluded"), list):
        scope["excluded"] = sorted(_remap_list(scope["excluded"], ids))


def normalise_dashboard(document: dict[str, Any]) -> dict[str, Any]:
    position = document.get("position") or {}
    ids = _chart_ids(position)
    for component in position.values():
        if isinstance(component, dict) and component.get("type") == "CHART" and "uuid" in component.get("meta", {}):
            component["meta"]["chartId"] = ids[component["meta"].get("chartId")]
    metadata = document.get("metadata") or {}
    for key in DERIVED_METADATA:
        metadata.pop(key, None)
    if "positions" in metadata:  # a legacy copy of the layout some versions keep in the metadata
        metadata.pop("positions")
    if "timed_refresh_immune_slices" in metadata:
        metadata["timed_refresh_immune_slices"] = sorted(_remap_list(metadata["timed_refresh_immune_slices"], ids))
    if "expanded_slices" in metadata:
        metadata["expanded_slices"] = {
            str(ids[int(k)]): v for k, v in metadata["expanded_slices"].items() if int(k) in ids
        }
    if "filter_scopes" in metadata:
        scopes = {str(ids[int(k)]): v for k, v in metadata["filter_scopes"].items() if int(k) in ids}
        for columns in scopes.values():
            for attributes in columns.values():
                attributes["immune"] = sorted(_remap_list(attributes.get("immune", []), ids))
        metadata["filter_scopes"] = scopes
    if isinstance(metadata.get("default_filters"), str):
        filters = json.loads(metadata["default_filters"] or "{}")
        metadata["default_filters"] = json.dumps(
            {str(ids[int(k)]): v for k, v in filters.items() if int(k) in ids}, sort_keys=True, ensure_ascii=False
        )
    for native in metadata.get("native_filter_configuration", []):
        _remap_scope(native, ids)
    for customisation in metadata.get("chart_customization_config", []) or []:
        _remap_scope(customisation, ids)
    if isinstance(metadata.get("global_chart_configuration"), dict):
        _remap_scope(metadata["global_chart_configuration"], ids)
    if isinstance(metadata.get("chart_configuration"), dict):
        configuration = {}
        for key, config in metadata["chart_configuration"].items():
            if int(key) not in ids:
                continue
            if isinstance(config, dict):
                config["id"] = ids[int(key)]
                if isinstance(config.get("crossFilters"), dict):
                    _remap_scope(config["crossFilters"], ids)
            configuration[str(ids[int(key)])] = config
        metadata["chart_configuration"] = configuration
    return document


def normalise_chart(document: dict[str, Any]) -> dict[str, Any]:
    params = document.get("params")
    if isinstance(params, dict):
        for key in ("datasource", "slice_id", "url_params", "dashboards"):
            params.pop(key, None)
    document["query_context"] = None
    return document


def normalise_dataset(document: dict[str, Any]) -> dict[str, Any]:
    document["columns"] = sorted(document.get("columns") or [], key=lambda c: c["column_name"])
    document["metrics"] = sorted(document.get("metrics") or [], key=lambda m: m["metric_name"])
    return document


def normalise_database(document: dict[str, Any]) -> dict[str, Any]:
    uri = str(document.get("sqlalchemy_uri", ""))
    if uri.startswith("duckdb:///") and uri.endswith("/yiwang_gold.duckdb"):
        document["sqlalchemy_uri"] = URI_PLACEHOLDER
    return document


def _strip_root(name: str) -> str:
    parts = name.split("/", 1)
    if len(parts) != 2:
        raise BundleError(f"{name}: an export's files sit in one folder")
    return parts[1]


def normalise_export(archive: bytes) -> dict[str, str]:
    """Superset's export zip as the folder's files (path -> YAML text), normalised as the module says."""
    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        raw = {_strip_root(n): yaml.safe_load(opened.read(n)) for n in opened.namelist() if n.endswith(".yaml")}
    databases = {d["uuid"]: d["database_name"] for n, d in raw.items() if n.startswith("databases/")}
    datasets = {d["uuid"]: d["table_name"] for n, d in raw.items() if n.startswith("datasets/")}
    files: dict[str, str] = {}
    for name, document in raw.items():
        kind = name.split("/", 1)[0]
        if name == "metadata.yaml":
            files[name] = dump({"type": document.get("type", "assets"), "version": document["version"]})
        elif kind == "databases":
            files[f"databases/{_safe(document['database_name'])}.yaml"] = dump(normalise_database(document))
        elif kind == "datasets":
            database = _safe(databases.get(document["database_uuid"], "database"))
            schema = f"{document['schema']}." if document.get("schema") else ""
            files[f"datasets/{database}/{schema}{_safe(document['table_name'])}.yaml"] = dump(
                normalise_dataset(document)
            )
        elif kind == "charts":
            table = _safe(datasets.get(document.get("dataset_uuid"), "chart"))
            files[f"charts/{table}_{document['uuid'][:8]}.yaml"] = dump(normalise_chart(document))
        elif kind == "dashboards":
            stem = _safe(document.get("slug") or document["uuid"])
            files[f"dashboards/{stem}.yaml"] = dump(normalise_dashboard(document))
        # anything else (saved queries, tags, themes) is not part of the bundle
    return dict(sorted(files.items()))


def _safe(name: str) -> str:
    """An ASCII file-name stem: letters, digits, `-`, `_` and `.` kept, anything else `_`."""
    cleaned = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-_.") else "_" for ch in str(name))
    return cleaned.strip("._") or "unnamed"


def write_bundle(files: Mapping[str, str], folder: Path = BUNDLE_DIR) -> tuple[list[str], list[str]]:
    """Make the folder hold exactly `files`: returns (written or changed, removed) paths."""
    changed: list[str] = []
    for name, text in files.items():
        path = folder / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            changed.append(name)
    removed = []
    for path in sorted(folder.rglob("*.yaml")):
        name = path.relative_to(folder).as_posix()
        if name not in files:
            path.unlink()
            removed.append(name)
    for directory in sorted((p for p in folder.rglob("*") if p.is_dir()), reverse=True):
        if not any(directory.iterdir()):
            directory.rmdir()
    return changed, removed
