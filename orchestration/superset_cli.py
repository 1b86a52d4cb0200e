"""`yiwang superset`: Superset for analysts on the published warehouse (issue 15).

    yiwang superset start [--port 8088]   # set up on first start, serve on 127.0.0.1, import the dashboards
    yiwang superset status | stop         # stop signals only the gunicorn this project started (its pid file)
    yiwang superset import                # the asset bundle (thematic_libs/analytics/superset_assets) into Superset
    yiwang superset export [--check]      # Superset's assets back into that folder, normalised: commit the diff
    yiwang superset publish               # rewrite the published DuckDB file now (a platform run does it too)

One line per step on the terminal; Superset's own output goes to `<home>/logs/superset.log`. Exit codes: 0 done,
1 Superset failed (or `export --check` found a difference), 2 a refused argument or a missing prerequisite.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import typer
from rich.console import Console

from ingestion.keys import CST
from orchestration.cli_output import existing_warehouse
from orchestration.cli_output import fail as _fail

console = Console(soft_wrap=True)
superset_app = typer.Typer(
    help="Superset for analysts: the published gold layer and six dashboards kept as asset files.",
    no_args_is_help=True,
)
FAILED = 1
MISSING = 2  # a prerequisite is missing (Superset's environment, the warehouse): say what to run first


def _code(error: Exception) -> int:
    from thematic_libs.analytics.superset_service import SupersetMissing

    return MISSING if isinstance(error, SupersetMissing) else FAILED


def _settings():
    from ingestion.settings import Settings

    return Settings.from_env()


def _paths():
    from thematic_libs.analytics.superset_service import SupersetPaths

    return SupersetPaths.for_home(_settings().home)


def _check_port(port: int) -> int:
    if not 1024 <= port <= 65535:
        raise _fail(f"--port {port} is not a usable port: give one from 1024 to 65535")
    return port


def _bundle_dir(folder: Path | None) -> Path:
    from thematic_libs.analytics.bundle import BUNDLE_DIR

    chosen = (folder or BUNDLE_DIR).resolve()
    if folder is not None and not chosen.is_dir():
        raise _fail(f"bundle folder {chosen} does not exist: give the folder that holds metadata.yaml")
    return chosen


def _cst(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(CST).strftime("%Y-%m-%d %H:%M")


def _published(publish_if_missing: bool) -> Path:
    """The published file; written from the warehouse first when it does not exist yet."""
    from thematic_libs.analytics.publish import published_path

    settings = _settings()
    path = published_path(settings.home)
    if not path.exists():
        if not publish_if_missing:
            raise _fail(f"no published warehouse at {path}: run `yiwang run` or `yiwang superset publish` first")
        _publish(settings)
    return path


def _publish(settings) -> None:
    from thematic_libs.analytics.publish import PublishError, publish, published_path
    from thematic_libs.analytics.superset_service import clear_result_cache

    warehouse = existing_warehouse(settings.warehouse)
    try:
        result = publish(warehouse, published_path(settings.home))
    except PublishError as error:
        raise _fail(str(error), _code(error)) from None
    clear_result_cache(settings.home)
    rows = sum(result.tables.values())
    missing = f"; not built yet: {', '.join(result.missing_sources)}" if result.missing_sources else ""
    console.print(
        f"published {len(result.tables)} tables ({rows:,} rows) to {result.path} in {result.seconds:.1f} s{missing}"
    )


def _client(state):
    from thematic_libs.analytics.superset_service import ADMIN_USER, SupersetClient, ensure_secrets

    return SupersetClient(state.url, ADMIN_USER, ensure_secrets(_paths()).admin_password)


def _import(state, folder: Path, published: Path) -> None:
    from thematic_libs.analytics.bundle import BundleError, bundle_zip, read_bundle

    try:
        files = read_bundle(folder)
        archive = bundle_zip(published, folder)
    except BundleError as error:
        raise _fail(str(error)) from None
    clock = time.perf_counter()
    _client(state).import_assets(archive)
    count = {kind: sum(1 for name in files if name.startswith(f"{kind}/")) for kind in ("dashboards", "charts")}
    console.print(
        f"imported {count['dashboards']} dashboards and {count['charts']} charts from {folder} "
        f"in {time.perf_counter() - clock:.1f} s"
    )


def _running():
    from thematic_libs.analytics.superset_service import status

    state = status(_paths())
    if state is None:
        raise _fail("Superset is not running: start it with `yiwang superset start`")
    return state


@superset_app.command("start")
def superset_start(
    port: int = typer.Option(8088, "--port", help="Port on 127.0.0.1."),
    workers: int = typer.Option(2, "--workers", min=1, max=16, help="gunicorn worker processes."),
    import_assets: bool = typer.Option(True, "--import/--no-import", help="Import the dashboards after starting."),
    folder: Path | None = typer.Option(None, "--folder", help="Asset bundle folder (default: the repository's)."),
) -> None:
    """Set Superset up on its first start, serve it on 127.0.0.1 and import the six dashboards."""
    from thematic_libs.analytics.superset_service import (
        SupersetError,
        ensure_secrets,
        needs_setup,
        run_setup,
        start,
        status,
    )

    _check_port(port)
    bundle = _bundle_dir(folder)
    paths = _paths()
    try:
        published = _published(publish_if_missing=True) if import_assets else None
        paths.check_venv()
        found = ensure_secrets(paths)
        already = status(paths)
        if already is None and needs_setup(paths, found):
            with console.status("preparing Superset's metadata database (first start: about a minute)…"):
                seconds = run_setup(paths, found)
            console.print(f"Superset set up in {seconds:.0f} s (metadata: {paths.state_dir / 'superset.db'})")
        if already is not None:
            console.print(f"Superset already runs on {already.url} (pid {already.pid})")
            state = already
        else:
            clock = time.perf_counter()
            with console.status(f"starting Superset on 127.0.0.1:{port}…"):
                state = start(paths, found, port=port, workers=workers)
            console.print(
                f"Superset on {state.url} (pid {state.pid}, {workers} workers) in {time.perf_counter() - clock:.0f} s"
            )
        if published is not None:
            _import(state, bundle, published)
    except SupersetError as error:
        raise _fail(str(error), _code(error)) from None
    console.print(
        f"log in at {state.url}/login/ as admin, password in {paths.state_dir / 'admin_password'}; "
        f"logs: {paths.log_file}"
    )


@superset_app.command("stop")
def superset_stop() -> None:
    """Stop the Superset this project started (and nothing else)."""
    from thematic_libs.analytics.superset_service import SupersetError, stop

    try:
        stopped = stop(_paths())
    except SupersetError as error:
        raise _fail(str(error), _code(error)) from None
    console.print("Superset stopped" if stopped else "Superset was not running")


@superset_app.command("status")
def superset_status() -> None:
    """Whether Superset runs, where, since when, and how old the published warehouse is."""
    from thematic_libs.analytics.publish import published_path
    from thematic_libs.analytics.superset_service import SupersetError, healthy, status

    paths = _paths()
    try:
        state = status(paths)
    except SupersetError as error:
        raise _fail(str(error), _code(error)) from None
    published = published_path(_settings().home)
    if published.exists():
        written = datetime.fromtimestamp(published.stat().st_mtime, CST).strftime("%Y-%m-%d %H:%M")
        console.print(f"published warehouse: {published} (written {written} CST)")
    else:
        console.print(f"published warehouse: none yet at {published} (`yiwang run` writes it)")
    if state is None:
        console.print("Superset is not running (`yiwang superset start` starts it)")
        raise typer.Exit(FAILED)
    health = "healthy" if healthy(state.url) else "[red]not answering[/]"
    console.print(
        f"Superset on {state.url} pid {state.pid} ({state.workers} workers) since {_cst(state.started_at)} CST, "
        f"{health}; logs: {paths.log_file}"
    )


@superset_app.command("import")
def superset_import(
    folder: Path | None = typer.Option(None, "--folder", help="Asset bundle folder (default: the repository's)."),
) -> None:
    """Import the asset bundle into the running Superset (created or updated in place; twice changes nothing)."""
    from thematic_libs.analytics.superset_service import SupersetError

    bundle = _bundle_dir(folder)
    state = _running()
    try:
        _import(state, bundle, _published(publish_if_missing=True))
    except SupersetError as error:
        raise _fail(str(error), _code(error)) from None


@superset_app.command("export")
def superset_export(
    folder: Path | None = typer.Option(None, "--folder", help="Asset bundle folder (default: the repository's)."),
    check: bool = typer.Option(False, "--check", help="Change nothing; exit 1 when the folder differs."),
) -> None:
    """Write Superset's dashboards, charts, datasets and database back into the bundle folder (normalised)."""
    from thematic_libs.analytics.bundle import BundleError, normalise_export, read_bundle, write_bundle
    from thematic_libs.analytics.superset_service import SupersetError

    bundle = _bundle_dir(folder)
    state = _running()
    try:
        files = normalise_export(_client(state).export_assets())
    except (SupersetError, BundleError) as error:
        raise _fail(str(error), _code(error)) from None
    if check:
        current = read_bundle(bundle) if bundle.is_dir() else {}
        differ = sorted(name for name in set(files) | set(current) if files.get(name) != current.get(name))
        if differ:
            console.print(f"[red]{len(differ)} file(s) differ from Superset:[/] {', '.join(differ)}")
            raise typer.Exit(FAILED)
        console.print(f"{bundle} matches Superset ({len(files)} files)")
        return
    changed, removed = write_bundle(files, bundle)
    if not changed and not removed:
        console.print(f"no change: {bundle} already matches Superset ({len(files)} files)")
        return
    console.print(f"wrote {len(changed)} and removed {len(removed)} file(s) in {bundle}: review with `git diff`")
    for name in changed:
        console.print(f"  changed {name}")
    for name in removed:
        console.print(f"  removed {name}")


@superset_app.command("publish")
def superset_publish() -> None:
    """Rewrite the published DuckDB file from the warehouse now (every `yiwang run` also does it)."""
    _publish(_settings())
