"""`yiwang share`: data-share orders (共享订单), department tokens, deliveries, usage and the sharing server.

A department requests; the owning department approves or rejects; the owner, the ordering department or
the data officer revokes. Every change is an audit row in `ops/share_audit`. Exit codes as elsewhere:
0 done, 2 a refused argument or order (one line saying what is wrong and what to do). Times a person
reads are China Standard Time.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ingestion.keys import CST
from orchestration.cli_output import existing_warehouse
from orchestration.cli_output import fail as _fail
from thematic_libs.sharing import DEFAULT_PORT

console = Console()
share_app = typer.Typer(help="Data-share orders, department tokens, deliveries and the Delta Sharing server.")
FORMATS = ("table", "json", "csv")


def _settings():
    from ingestion.settings import Settings

    return Settings.from_env()


def _store(warehouse: str | None):
    return existing_warehouse(warehouse or _settings().warehouse)


def _cst(moment: datetime | None) -> str:
    return moment.astimezone(CST).strftime("%Y-%m-%d %H:%M") if moment else ""


def _date(text: str | None, option: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise _fail(f"{option} {text!r} is not a date: give YYYY-MM-DD") from None


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise _fail(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    return fmt


def _refused(error: Exception) -> typer.Exit:
    return _fail(str(error).splitlines()[0])


def _order_line(order) -> str:
    return f"{order.order_id} {order.dataset_id} for {order.department}: [bold]{order.effective_state()}[/]"


# -- orders -----------------------------------------------------------------------------------------


@share_app.command("request")
def request(
    dataset: str = typer.Option(..., "--dataset", help="Dataset id, e.g. minzheng.assistance_members."),
    department: str = typer.Option(..., "--department", help="The ordering department, e.g. weijian."),
    columns: str = typer.Option(..., "--columns", help="Comma-separated columns, or `all` (no sensitive ones)."),
    purpose: str = typer.Option(..., "--purpose", help="What the data is for (kept in the audit)."),
    row_filter: str | None = typer.Option(None, "--filter", help="Rows to share, e.g. \"street_code = '440605001'\"."),
    until: str | None = typer.Option(None, "--until", help="YYYY-MM-DD: the order expires after this day."),
    legal_basis: str | None = typer.Option(
        None, "--legal-basis", help="The law or rule that allows raw values of the sensitive columns asked for."
    ),
    warehouse: str | None = typer.Option(None, "--warehouse"),
) -> None:
    """Request a dataset (unconditional datasets without sensitive columns are approved at once)."""
    from thematic_libs.sharing.orders import OrderError, request_order

    store = _store(warehouse)
    try:
        order = request_order(
            store,
            dataset_id=dataset,
            department=department,
            columns=columns.split(","),
            purpose=purpose,
            row_filter=row_filter,
            until=_date(until, "--until"),
            legal_basis=legal_basis,
        )
    except OrderError as error:
        raise _refused(error) from None
    console.print(_order_line(order))
    if order.sensitive_columns:
        how = "raw (legal basis recorded)" if order.legal_basis else "as keyed pseudonyms (<column>_key)"
        console.print(f"sensitive columns {', '.join(order.sensitive_columns)} are delivered {how}")
    if order.state == "requested":
        console.print(f"waiting for {order.owner_department}: `yiwang share approve {order.order_id} --by ...`")
    else:
        console.print("approved: the delivery is built on the next `yiwang share refresh` (or by the running server)")


def _change(order_id: str, event: str, by: str, reason: str, warehouse: str | None) -> None:
    from thematic_libs.sharing.orders import OrderError, change_order

    try:
        order = change_order(_store(warehouse), order_id, event, by, reason)
    except OrderError as error:
        raise _refused(error) from None
    console.print(_order_line(order))


@share_app.command("approve")
def approve(
    order_id: str = typer.Argument(..., help="The order, SO-YYYYMMDD-xxxxxxxx."),
    by: str = typer.Option(..., "--by", help="The owning department."),
    reason: str = typer.Option("", "--reason"),
    warehouse: str | None = typer.Option(None, "--warehouse"),
) -> None:
    """Approve a requested order (the owning department)."""
    _change(order_id, "approve", by, reason, warehouse)


@share_app.command("reject")
def reject(
    order_id: str = typer.Argument(...),
    by: str = typer.Option(..., "--by", help="The owning department."),
    reason: str = typer.Option(..., "--reason", help="Why (kept in the audit, shown to the requester)."),
    warehouse: str | None = typer.Option(None, "--warehouse"),
) -> None:
    """Reject a requested order (the owning department)."""
    _change(order_id, "reject", by, reason, warehouse)


@share_app.command("revoke")
def revoke(
    order_id: str = typer.Argument(...),
    by: str = typer.Option(..., "--by", help="The owner, the ordering department or data_officer."),
    reason: str = typer.Option(..., "--reason"),
    warehouse: str | None = typer.Option(None, "--warehouse"),
) -> None:
    """Revoke an order: it stops being served at once and its delivery is removed."""
    _change(order_id, "revoke", by, reason, warehouse)


@share_app.command("list")
def list_(
    department: str | None = typer.Option(None, "--department", help="Orders of this department (or its datasets)."),
    state: str | None = typer.Option(None, "--state", help="requested, approved, active, rejected, revoked, expired."),
    fmt: str = typer.Option("table", "--format", help="table, json or csv."),
    warehouse: str | None = typer.Option(None, "--warehouse"),
) -> None:
    """The share orders, newest last."""
    from thematic_libs.sharing.orders import STATES, list_orders

    _check_format(fmt)
    if state is not None and state not in STATES:
        raise _fail(f"--state {state!r} is not one of {', '.join(STATES)}")
    orders = list_orders(_store(warehouse))
    if department:
        orders = [o for o in orders if department in (o.department, o.owner_department)]
    if state:
        orders = [o for o in orders if o.effective_state() == state]
    rows = [
        {
            "order_id": o.order_id,
            "dataset_id": o.dataset_id,
            "department": o.department,
            "owner": o.owner_department,
            "state": o.effective_state(),
            "updated_cst": _cst(o.updated_at),
            "until": o.until.isoformat() if o.until else "",
        }
        for o in orders
    ]
    if fmt != "table":
        _emit(rows, fmt)
        return
    table = Table(title=f"{len(rows)} share order(s)")
    table.add_column("order", no_wrap=True)
    table.add_column("dataset", overflow="fold")
    for name in ("for", "owner", "state"):
        table.add_column(name)
    for row in rows:
        table.add_row(*(row[k] for k in ("order_id", "dataset_id", "department", "owner", "state")))
    console.print(table)


def _emit(rows: list[dict], fmt: str) -> None:
    if fmt == "json":
        for row in rows:
            sys.stdout.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        return
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    sys.stdout.write(buffer.getvalue())


@share_app.command("show")
def show(
    order_id: str = typer.Argument(...),
    warehouse: str | None = typer.Option(None, "--warehouse"),
) -> None:
    """One order and its audit trail (who did what, when and why)."""
    import polars as pl

    from thematic_libs.sharing.deliveries import delivered_columns
    from thematic_libs.sharing.orders import OrderError, check_order_id, get_order, read_audit

    store = _store(warehouse)
    try:
        check_order_id(order_id)
        order = get_order(store, order_id)
    except OrderError as error:
        raise _refused(error) from None
    console.print(_order_line(order))
    console.print(f"purpose: {order.purpose}")
    console.print(f"delivered columns: {', '.join(delivered_columns(order))}")
    if order.row_filter:
        console.print(f"filter: {order.row_filter}")
    if order.legal_basis:
        console.print(f"legal basis for raw values: {order.legal_basis}")
    if order.until:
        console.print(f"until: {order.until.isoformat()}")
    trail = Table("#", "event", "state", "by", "at (CST)", "reason", title="audit (ops/share_audit)")
    for row in read_audit(store).filter(pl.col("order_id") == order_id).sort("seq").iter_rows(named=True):
        trail.add_row(str(row["seq"]), row["event"], row["state"], row["actor"], _cst(row["at"]), row["reason"])
    console.print(trail)


# -- deliveries and expiry ----------------------------------------------------------------------------


@share_app.command("refresh")
def refresh(warehouse: str | None = typer.Option(None, "--warehouse")) -> None:
    """Expire orders past their date, then build or refresh every approved and active order's delivery."""
    from thematic_libs.sharing.deliveries import refresh_deliveries
    from thematic_libs.sharing.orders import expire_due

    settings = _settings()
    store = _store(warehouse)
    expired = expire_due(store)
    failures: list[str] = []
    results = refresh_deliveries(
        store, _pseudonymiser(settings), on_error=lambda o, e: failures.append(f"{o.order_id}: {e}")
    )
    for result in results:
        what = (
            "unchanged"
            if result.skipped
            else f"+{result.inserted} ~{result.updated} -{result.deleted} (version {result.version})"
        )
        console.print(f"{result.order_id}: {result.rows:,} rows, {what}")
    console.print(f"{len(results)} deliveries, {len(expired)} order(s) expired")
    for failure in failures:
        console.print(f"[yellow]not delivered[/] {failure}")


def _pseudonymiser(settings):
    from ingestion.pseudonym import Pseudonymiser, PseudonymKeyError

    try:
        return Pseudonymiser.from_environment(default_key_file=settings.key_file)
    except PseudonymKeyError as error:
        raise _fail(str(error)) from None


# -- tokens -----------------------------------------------------------------------------------------


@share_app.command("profile")
def profile(
    department: str = typer.Option(..., "--department"),
    out: Path | None = typer.Option(None, "--out", help="Profile file (default <home>/profiles/<department>.share)."),
    endpoint: str = typer.Option(
        f"http://127.0.0.1:{DEFAULT_PORT}/delta-sharing", "--endpoint", help="The server's URL as clients reach it."
    ),
    days: int = typer.Option(90, "--days", help="Days the token stays valid."),
    rotate: bool = typer.Option(False, "--rotate", help="Revoke the department's earlier tokens."),
    warehouse: str | None = typer.Option(None, "--warehouse"),
) -> None:
    """Issue a bearer token and write the department's Delta Sharing profile file (the token is shown nowhere else)."""
    from thematic_libs.sharing.orders import OrderError
    from thematic_libs.sharing.tokens import TokenError, issue_token, write_profile

    settings = _settings()
    store = _store(warehouse)
    if not endpoint.startswith(("http://", "https://")):
        raise _fail(f"--endpoint {endpoint!r} is not an http(s) URL")
    try:
        issued = issue_token(store, department, days=days, rotate=rotate)
    except (TokenError, OrderError) as error:
        raise _refused(error) from None
    path = write_profile(issued, endpoint, out or settings.home / "profiles" / f"{department}.share")
    console.print(
        f"token {issued.token_id} for {department}, valid until {_cst(issued.expires_at)} CST"
        + (" (earlier tokens revoked)" if rotate else "")
    )
    console.print(f"profile: {path} (owner-only; hand it to {department}: it holds the secret)")


@share_app.command("tokens")
def tokens(
    department: str | None = typer.Option(None, "--department"),
    warehouse: str | None = typer.Option(None, "--warehouse"),
) -> None:
    """Issued tokens (ids and dates only: secrets are stored hashed)."""
    from thematic_libs.sharing.tokens import read_tokens

    frame = read_tokens(_store(warehouse))
    if department:
        frame = frame.filter(frame["department"] == department)
    table = Table("token", "department", "issued (CST)", "expires (CST)", "revoked (CST)", title="share tokens")
    for row in frame.sort("issued_at").iter_rows(named=True):
        table.add_row(
            row["token_id"], row["department"], _cst(row["issued_at"]), _cst(row["expires_at"]), _cst(row["revoked_at"])
        )
    console.print(table)


@share_app.command("revoke-token")
def revoke_token(
    department: str = typer.Option(..., "--department"),
    token_id: str | None = typer.Option(None, "--token-id", help="One token (default: all of the department's)."),
    warehouse: str | None = typer.Option(None, "--warehouse"),
) -> None:
    """Revoke a department's token(s): refused from the next request on."""
    from thematic_libs.sharing.orders import OrderError
    from thematic_libs.sharing.tokens import revoke_tokens

    try:
        count = revoke_tokens(_store(warehouse), department, token_id)
    except OrderError as error:
        raise _refused(error) from None
    if count == 0:
        raise _fail(f"no live token of {department}" + (f" with id {token_id}" if token_id else ""))
    console.print(f"{count} token(s) of {department} revoked")


# -- usage ------------------------------------------------------------------------------------------


@share_app.command("usage")
def usage(
    department: str | None = typer.Option(None, "--department"),
    days: int = typer.Option(30, "--days", min=1, max=3660),
    fmt: str = typer.Option("table", "--format", help="table, json or csv."),
    warehouse: str | None = typer.Option(None, "--warehouse"),
) -> None:
    """Calls per day, department and order (接口调用次数), from ops/share_access_log."""
    import polars as pl

    from thematic_libs.sharing.access_log import read_access_log, usage_daily

    _check_format(fmt)
    frame = usage_daily(read_access_log(_store(warehouse)))
    since = datetime.now(CST).date() - timedelta(days=days - 1)
    frame = frame.filter(pl.col("day") >= since)
    if department:
        frame = frame.filter(pl.col("department") == department)
    if fmt != "table":
        _emit(frame.to_dicts(), fmt)
        return
    table = Table(title="share usage (rows as listed by queries, bytes as downloaded)")
    table.add_column("day", no_wrap=True)
    table.add_column("department", overflow="fold")
    table.add_column("order", no_wrap=True)
    for name in ("calls", "refused", "rows", "bytes"):
        table.add_column(name, justify="right")
    for row in frame.iter_rows(named=True):
        table.add_row(
            str(row["day"]),
            row["department"],
            row["order_id"] or "",
            f"{row['calls']:,}",
            f"{row['refused_calls']:,}",
            f"{row['rows_served']:,}",
            f"{row['bytes_served']:,}",
        )
    console.print(table)


# -- the server -------------------------------------------------------------------------------------


@share_app.command("serve")
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (loopback by default)."),
    port: int = typer.Option(DEFAULT_PORT, "--port", min=1, max=65535),
    refresh_seconds: float = typer.Option(2.0, "--refresh-seconds", help="How often deliveries follow sources."),
    public_url: str | None = typer.Option(
        None, "--public-url", help="Scheme and host clients reach the server at (behind a proxy), for file URLs."
    ),
    warehouse: str | None = typer.Option(None, "--warehouse"),
) -> None:
    """The Delta Sharing protocol (/delta-sharing) and the catalog web page (/catalog) until Ctrl-C."""
    import socket

    from ingestion.pseudonym import PseudonymKeyError
    from thematic_libs.sharing.server import serve as run_server
    from thematic_libs.sharing.web import web_routes

    settings = _settings()
    if warehouse:
        settings = settings.with_overrides(warehouse=warehouse)
    _store(settings.warehouse)
    if public_url is not None and not public_url.startswith(("http://", "https://")):
        raise _fail(f"--public-url {public_url!r} is not an http(s) URL")
    if refresh_seconds < 0:
        raise _fail("--refresh-seconds must be 0 (no refresh) or more")
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise _fail(f"cannot listen on {host}:{port} ({error.strerror}): pick another --port") from None
    endpoint = f"{public_url or f'http://{host}:{port}'}/delta-sharing"
    console.print(f"Delta Sharing: [bold]{endpoint}[/] · catalog: {endpoint.removesuffix('/delta-sharing')}/catalog")
    console.print(f"profiles: `yiwang share profile --department X --endpoint {endpoint}` · log: {settings.home}/logs")
    try:
        run_server(
            settings, host, port, refresh_seconds=refresh_seconds, extra_routes=web_routes, public_url=public_url
        )
    except (ValueError, PseudonymKeyError) as error:
        raise _fail(str(error).splitlines()[0]) from None
