"""`yiwang catalog`: the resource catalog (数据资源目录) from the command line.

`list`, `show` and `search` read `ops/catalog` (built by the platform run, or by `yiwang catalog build`);
times are shown in China Standard Time. Exit codes as elsewhere: 0 done, 2 a bad argument or nothing to
read (a missing warehouse, a catalog not built yet, an unknown dataset), always as one red line.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import polars as pl
import typer
from rich import box
from rich.console import Console
from rich.table import Table

from ingestion.keys import CST
from orchestration.cli_output import existing_warehouse
from orchestration.cli_output import fail as _fail

console = Console()

catalog_app = typer.Typer(
    help="The resource catalog (数据资源目录): what can be shared, by whom, how fresh.", no_args_is_help=True
)

LIST_FORMATS = ("table", "json", "csv")
SHOW_FORMATS = ("table", "json")
LAYERS = ("silver", "stream", "gold")
SHARING_TYPES = ("unconditional", "conditional", "none")
# `yiwang catalog list --format csv`: the flat columns, lists joined with `;`.
CSV_COLUMNS = (
    "dataset_id",
    "title",
    "layer",
    "source_table",
    "owner_department",
    "source_level",
    "sharing_type",
    "restricted",
    "cadence",
    "row_count",
    "table_version",
    "last_loaded_at",
    "freshness",
    "quality_score",
    "sensitive_columns",
    "upstream",
    "downstream",
)
FRESHNESS_STYLE = {"fresh": "green", "stale": "yellow", "never": "red"}


def _warehouse(path: str | None):
    """The warehouse of --warehouse or the settings; a local one must exist."""
    from ingestion.settings import Settings

    return existing_warehouse(path or Settings.from_env().warehouse)


def _catalog(path: str | None) -> pl.DataFrame:
    from thematic_libs.sharing.catalog import CatalogError, read_catalog

    try:
        return read_catalog(_warehouse(path))
    except CatalogError as error:
        raise _fail(str(error)) from None


def _check_choice(option: str, value: str | None, choices: tuple[str, ...]) -> None:
    if value is not None and value not in choices:
        raise _fail(f"{option} {value!r}: use one of {', '.join(choices)}")


def _cst(value: datetime | None) -> str:
    return value.astimezone(CST).strftime("%Y-%m-%d %H:%M") if value else "-"


def _cst_iso(value: datetime | None) -> str | None:
    return value.astimezone(CST).isoformat(timespec="seconds") if value else None


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _rows(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _json_row(row: dict[str, Any]) -> dict[str, Any]:
    """A catalog row for JSON: times as ISO 8601 in China Standard Time."""
    return {k: _cst_iso(v) if isinstance(v, datetime) else v for k, v in row.items()}


def _print_json(value: object) -> None:
    # plain stdout: rich would wrap long lines and break the JSON for a pipe
    typer.echo(json.dumps(value, ensure_ascii=False, indent=2))


def _datasets_table(frame: pl.DataFrame, title: str, with_titles: bool = False) -> Table:
    """Dataset, layer, sharing, rows, freshness and quality: fits 80 columns (the id folds when it must);
    `with_titles` puts each dataset's title under its id."""
    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 0), show_edge=False, title_justify="left")
    table.add_column("dataset", overflow="fold")
    table.add_column("layer", no_wrap=True)
    table.add_column("sharing", no_wrap=True)
    table.add_column("rows", justify="right", no_wrap=True)
    table.add_column("fresh", no_wrap=True)
    table.add_column("qual.", justify="right", no_wrap=True)
    for row in frame.iter_rows(named=True):
        sharing = row["sharing_type"] + (" (r)" if row["restricted"] else "")
        style = FRESHNESS_STYLE.get(row["freshness"], "")
        table.add_row(
            f"{row['dataset_id']}\n[dim]{row['title']}[/]" if with_titles else row["dataset_id"],
            row["layer"],
            sharing,
            _rows(row["row_count"]),
            f"[{style}]{row['freshness']}[/]" if style else row["freshness"],
            _score(row["quality_score"]),
        )
    return table


def _csv(frame: pl.DataFrame) -> str:
    lists = [c for c in ("sensitive_columns", "upstream", "downstream") if c in frame.columns]
    flat = frame.select(CSV_COLUMNS).with_columns(
        *(pl.col(c).list.join(";") for c in lists),
        pl.col("last_loaded_at").dt.convert_time_zone("Asia/Shanghai").dt.strftime("%Y-%m-%dT%H:%M:%S%:z"),
    )
    return flat.write_csv()


@catalog_app.command("list")
def catalog_list(
    warehouse: str | None = typer.Option(None, "--warehouse", help="Warehouse root (default: the settings)."),
    layer: str | None = typer.Option(None, "--layer", help="silver, stream or gold."),
    sharing: str | None = typer.Option(None, "--sharing", help="unconditional, conditional or none."),
    output_format: str = typer.Option("table", "--format", help="table, json or csv."),
) -> None:
    """Every dataset: layer, sharing type, rows, freshness and quality score."""
    _check_choice("--layer", layer, LAYERS)
    _check_choice("--sharing", sharing, SHARING_TYPES)
    _check_choice("--format", output_format, LIST_FORMATS)
    frame = _catalog(warehouse)
    if layer:
        frame = frame.filter(pl.col("layer") == layer)
    if sharing:
        frame = frame.filter(pl.col("sharing_type") == sharing)
    if output_format == "json":
        _print_json([_json_row(r) for r in frame.iter_rows(named=True)])
    elif output_format == "csv":
        typer.echo(_csv(frame), nl=False)
    else:
        console.print(_datasets_table(frame, f"{frame.height} datasets ((r) restricted)"))
        _print_built(frame)


def _print_built(frame: pl.DataFrame) -> None:
    if frame.height:
        console.print(f"catalog built {_cst(frame['built_at'].max())} CST", style="dim")


def _short_type(arrow_type: str) -> str:
    return arrow_type.split("[", 1)[0]


def _facts(row: dict[str, Any]) -> Table:
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold", no_wrap=True)
    facts.add_column(overflow="fold")
    version = "-" if row["table_version"] is None else str(row["table_version"])
    loaded = f"{_cst(row['last_loaded_at'])} CST" if row["last_loaded_at"] else "never"
    sharing = row["sharing_type"] + (" (restricted area)" if row["restricted"] else "")
    for label, value in (
        ("owner", row["owner_label"]),
        ("source level", row["source_level"] or "-"),
        ("sharing", sharing),
        ("cadence", row["cadence"] or "-"),
        ("table", f"{row['source_table']} (version {version})"),
        ("rows", _rows(row["row_count"])),
        ("last loaded", loaded),
        ("freshness", row["freshness"]),
        ("quality", _score(row["quality_score"])),
        ("primary key", ", ".join(row["primary_key"] or []) or "-"),
        ("sensitive", ", ".join(row["sensitive_columns"] or []) or "none"),
        ("upstream", ", ".join(row["upstream"] or []) or "-"),
        ("downstream", ", ".join(row["downstream"] or []) or "-"),
    ):
        facts.add_row(label, str(value))
    return facts


def _columns_table(row: dict[str, Any]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 0), show_edge=False, title="columns", title_justify="left")
    table.add_column("column", overflow="fold", max_width=26)
    table.add_column("type", no_wrap=True)
    table.add_column("class", no_wrap=True)
    table.add_column("description", overflow="fold", ratio=1)
    for column in row["columns"] or []:
        table.add_row(
            column["name"], _short_type(column["type"] or ""), column["classification"], column["description"] or ""
        )
    return table


@catalog_app.command("show")
def catalog_show(
    dataset_id: str = typer.Argument(..., help="A dataset id, e.g. minzheng.assistance_members."),
    warehouse: str | None = typer.Option(None, "--warehouse", help="Warehouse root (default: the settings)."),
    output_format: str = typer.Option("table", "--format", help="table or json."),
) -> None:
    """One dataset: owner, sharing, freshness (CST), quality, lineage and its columns with classifications."""
    _check_choice("--format", output_format, SHOW_FORMATS)
    frame = _catalog(warehouse)
    match = frame.filter(pl.col("dataset_id") == dataset_id)
    if match.height == 0:
        raise _fail(
            f"unknown dataset {dataset_id!r}: `yiwang catalog search WORD` or `yiwang catalog list` shows the ids"
        )
    row = match.row(0, named=True)
    if output_format == "json":
        _print_json(_json_row(row))
        return
    console.print(f"[bold]{row['dataset_id']}[/] {row['title']} [dim]({row['layer']})[/]", highlight=False)
    if row["description"]:
        console.print(row["description"], highlight=False)
    console.print(_facts(row), highlight=False)
    console.print(_columns_table(row), highlight=False)


@catalog_app.command("search")
def catalog_search(
    words: list[str] = typer.Argument(..., help="Words that must all appear (any case), e.g. 救助 or rain district."),
    warehouse: str | None = typer.Option(None, "--warehouse", help="Warehouse root (default: the settings)."),
    output_format: str = typer.Option("table", "--format", help="table, json or csv."),
) -> None:
    """Datasets whose id, title, description, owner or columns mention every word."""
    from thematic_libs.sharing.catalog import search_catalog

    _check_choice("--format", output_format, LIST_FORMATS)
    found = search_catalog(_catalog(warehouse), words)
    if output_format == "json":
        _print_json([_json_row(r) for r in found.iter_rows(named=True)])
    elif output_format == "csv":
        typer.echo(_csv(found), nl=False)
    elif found.height == 0:
        console.print(f"no dataset mentions {' '.join(words)}")
    else:
        console.print(_datasets_table(found, f"{found.height} datasets mention {' '.join(words)}", with_titles=True))


@catalog_app.command("build")
def catalog_build(
    warehouse: str | None = typer.Option(None, "--warehouse", help="Warehouse root (default: the settings)."),
    lineage: bool = typer.Option(
        True, "--lineage/--no-lineage", help="Read lineage off the Dagster definitions (parses dbt when needed)."
    ),
) -> None:
    """Rebuild ops/catalog now (the platform run does it after every build)."""
    from thematic_libs.sharing.catalog import build_catalog, write_catalog
    from thematic_libs.sharing.datasets import DatasetError

    store = _warehouse(warehouse)
    try:
        table = build_catalog(store, _lineage(store) if lineage else None)
    except DatasetError as error:
        raise _fail(str(error)) from None
    version = write_catalog(store, table)
    stale = sum(1 for f in table.column("freshness").to_pylist() if f == "stale")
    console.print(
        f"[green]catalog[/] {table.num_rows} datasets, {stale} stale: {store.root}/ops/catalog version {version}"
    )


def _lineage(store) -> dict[str, tuple[list[str], list[str]]]:
    """Lineage from the asset graph the platform runs (orchestration/definitions.py)."""
    from ingestion.settings import Settings
    from orchestration.definitions import build_definitions
    from orchestration.sharing_assets import SHARING_GROUP
    from thematic_libs.sharing.catalog import catalog_tables, lineage_from_graph
    from thematic_libs.sharing.datasets import all_datasets

    try:
        graph = build_definitions(Settings.from_env().with_overrides(warehouse=store.root)).resolve_asset_graph()
    except RuntimeError as error:  # `dbt parse` failed: the dbt project must be fixed first
        first = next((line for line in str(error).splitlines() if line.strip()), "dbt parse failed")
        raise _fail(
            f"cannot read lineage from the Dagster definitions ({first}): fix it or pass --no-lineage"
        ) from None
    own = {k for k in graph.get_all_asset_keys() if graph.get(k).group_name == SHARING_GROUP}
    return lineage_from_graph(graph, catalog_tables(all_datasets(store).values()), ignore=own)
