"""The catalog web page for people (数据资源目录): browse and search the datasets, read one's metadata, order
it, approve or reject orders of one's own datasets, follow one's orders and their usage.

A person signs in as a department by pasting the department's bearer token (the one in its Delta Sharing
profile). The page keeps only a signed session cookie (HttpOnly, SameSite=Strict, 8 hours) holding a
random session id, the department and the token's id, never the token: every request checks that the
token is still live, so revoking or rotating a department's token logs its people out at once. Every
form that changes something carries a CSRF token derived from the session id with the server's signing
key. The page shows metadata only (names, types, classifications, counts): it never reads a row of any
dataset, so no data value, and no sensitive one, can reach it. Jinja2 autoescapes everything.

Every request, refusals included, is metered in the access log with `endpoint="web"`. Handlers run in a
worker thread (Delta reads block); the only coroutine work is reading the form body, which is parsed with
`urllib.parse` (no multipart parser is needed: the forms post `application/x-www-form-urlencoded`).

Mount: `create_app(state, extra_routes=web_routes(state))`; the routes carry their full `/catalog/...`
paths, so they go into the application's route list as they are.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import jinja2
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ingestion.keys import CST
from thematic_libs.sharing.access_log import ACCESS_LOG, usage_daily
from thematic_libs.sharing.catalog import LAYERS, CatalogError, read_catalog, search_catalog
from thematic_libs.sharing.datasets import SHARING_TYPES
from thematic_libs.sharing.deliveries import delivered_columns
from thematic_libs.sharing.orders import (
    DATA_OFFICER,
    DEPARTMENT_PATTERN,
    OPEN_STATES,
    Order,
    OrderError,
    change_order,
    check_order_id,
    request_order,
)
from thematic_libs.sharing.state import ShareState
from thematic_libs.sharing.tokens import TokenError, parse_token, read_tokens

log = logging.getLogger(__name__)

PREFIX = "/catalog"
TEMPLATES = Path(__file__).with_name("templates")
SESSION_COOKIE = "yiwang_session"
FLASH_COOKIE = "yiwang_flash"
SESSION_SECONDS = 8 * 3600
FLASH_SECONDS = 120
MAX_FORM_BYTES = 64 * 1024
MAX_FORM_FIELDS = 200
MAX_SEARCH_CHARS = 200
USAGE_DAYS = 30
DATASET_ID_PATTERN = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")
# `minzheng (民政局, Civil Affairs Bureau)` -> 民政局
_CHINESE_NAME = re.compile(r"\(([^,()]+),")

SHARING_LABELS = {"unconditional": "无条件共享", "conditional": "有条件共享", "none": "不予共享"}
FRESHNESS_LABELS = {"fresh": "新鲜", "stale": "过期", "never": "未加载"}
CLASSIFICATION_LABELS = {"public": "公开", "internal": "内部", "personal": "个人", "sensitive": "敏感"}
LAYER_LABELS = {"silver": "标准数据", "stream": "实时数据", "gold": "主题数据"}
STATE_LABELS = {
    "requested": "待审批",
    "approved": "已批准（待交付）",
    "rejected": "已驳回",
    "active": "生效中",
    "revoked": "已撤销",
    "expired": "已过期",
}
EVENT_LABELS = {"approve": "批准", "reject": "驳回", "revoke": "撤销"}

SECURITY_HEADERS = {
    # no script at all, styles only from this server, forms only to this server, never framed
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


class WebError(Exception):
    """An answer other than the page asked for: an HTTP status and a one-line message for the person."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Session:
    """What the session cookie carries: never the bearer token itself."""

    sid: str
    department: str | None = None
    token_id: str | None = None

    @classmethod
    def anonymous(cls) -> Session:
        return cls(sid=secrets.token_urlsafe(18))


@dataclass
class Call:
    """One request as a handler sees it, and what the answer must carry besides its body."""

    request: Request
    session: Session
    form: dict[str, list[str]]
    # whether the request came without a valid session cookie (a POST then cannot carry a valid CSRF token)
    fresh: bool = False
    flash: tuple[str, str] | None = None  # (kind, text) from the previous request
    set_session: Session | None = None  # a new session to send (login, logout, first visit)
    set_flash: tuple[str, str] | None = None  # a message for the page a redirect leads to
    # metering
    dataset_id: str | None = None
    order_id: str | None = None
    reason: str | None = None
    # read once per request, on first use
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def department(self) -> str | None:
        return self.session.department

    def query(self, name: str, limit: int = MAX_SEARCH_CHARS) -> str:
        value = self.request.query_params.get(name, "").strip()
        if len(value) > limit:
            raise WebError(400, f"参数 {name} 过长（最多 {limit} 个字符）")
        return value

    def form_value(self, name: str, limit: int = 2_000) -> str:
        values = self.form.get(name) or [""]
        value = values[0].strip()
        if len(value) > limit:
            raise WebError(400, f"字段 {name} 过长（最多 {limit} 个字符）")
        return value


Handler = Callable[["CatalogWeb", Call], Response]


def web_routes(state: ShareState) -> list[BaseRoute]:
    """The catalog page's routes, with their full `/catalog/...` paths, for the sharing server's app."""
    return CatalogWeb(state).routes()


# --- formatting helpers (also Jinja2 filters) --------------------------------------------------------


def department_name(label: str | None, code: str | None = None) -> str:
    """The Chinese name in an owner label (`minzheng (民政局, Civil Affairs Bureau)` -> 民政局)."""
    if code == DATA_OFFICER:
        return "数据官"
    match = _CHINESE_NAME.search(label or "")
    return match.group(1).strip() if match else (label or code or "")


def cst(moment: datetime | None) -> str:
    """A moment in China Standard Time, with its offset written out so nobody reads it as UTC."""
    if moment is None:
        return "—"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(CST).strftime("%Y-%m-%d %H:%M:%S +08:00")


def percent(score: float | None) -> str:
    return "—" if score is None else f"{score * 100:.1f}%"


def number(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def byte_size(value: int | None) -> str:
    if value is None:
        return "—"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # every template, whatever its name: nothing is ever rendered unescaped
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(cst=cst, percent=percent, number=number, byte_size=byte_size)
    environment.globals.update(
        prefix=PREFIX,
        sharing_labels=SHARING_LABELS,
        freshness_labels=FRESHNESS_LABELS,
        classification_labels=CLASSIFICATION_LABELS,
        layer_labels=LAYER_LABELS,
        state_labels=STATE_LABELS,
        department_name=department_name,
    )
    return environment


# --- reading the form ---------------------------------------------------------------------------------


async def read_form(request: Request) -> dict[str, list[str]]:
    """An `application/x-www-form-urlencoded` body, at most MAX_FORM_BYTES, or a WebError (4xx)."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise WebError(415, "表单须以 application/x-www-form-urlencoded 提交")
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_FORM_BYTES):
        raise WebError(413, f"表单过大（最多 {MAX_FORM_BYTES // 1024} KiB）")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise WebError(413, f"表单过大（最多 {MAX_FORM_BYTES // 1024} KiB）")
    try:
        text = body.decode("utf-8")
        return parse_qs(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise WebError(400, "表单无法解析（须为 UTF-8 编码的表单）") from None


def _safe_next(target: str) -> str:
    """Only a path of this page may follow a login: never another site (`//host`, `https://...`)."""
    if target.startswith(PREFIX) and not target.startswith("//") and "\\" not in target and "\n" not in target:
        return target
    return f"{PREFIX}/orders"


# --- the page ------------------------------------------------------------------------------------------


class CatalogWeb:
    """The handlers and what they share: the server's state, the templates and the cookie signers."""

    def __init__(self, state: ShareState) -> None:
        self.state = state
        self.templates = _environment()
        self.sessions = URLSafeTimedSerializer(state.signing_key, salt="yiwang.web.session")
        self.flashes = URLSafeTimedSerializer(state.signing_key, salt="yiwang.web.flash")
        self.css = (TEMPLATES / "web.css").read_bytes()

    def routes(self) -> list[BaseRoute]:
        page = self.endpoint
        return [
            Route(PREFIX, page(CatalogWeb.browse), methods=["GET"]),
            Route(f"{PREFIX}/static/web.css", self.stylesheet, methods=["GET"]),
            Route(f"{PREFIX}/login", page(CatalogWeb.login_page), methods=["GET"]),
            Route(f"{PREFIX}/login", page(CatalogWeb.login, post=True), methods=["POST"]),
            Route(f"{PREFIX}/logout", page(CatalogWeb.logout, post=True), methods=["POST"]),
            Route(f"{PREFIX}/datasets/{{dataset_id}}", page(CatalogWeb.dataset), methods=["GET"]),
            Route(
                f"{PREFIX}/datasets/{{dataset_id}}/request",
                page(CatalogWeb.order_request, post=True, login=True),
                methods=["POST"],
            ),
            Route(f"{PREFIX}/orders", page(CatalogWeb.orders, login=True), methods=["GET"]),
            Route(
                f"{PREFIX}/orders/{{order_id}}/revoke",
                page(CatalogWeb.revoke, post=True, login=True),
                methods=["POST"],
            ),
            Route(f"{PREFIX}/queue", page(CatalogWeb.queue, login=True), methods=["GET"]),
            Route(
                f"{PREFIX}/queue/{{order_id}}/{{event}}",
                page(CatalogWeb.decide, post=True, login=True),
                methods=["POST"],
            ),
        ]

    async def stylesheet(self, _request: Request) -> Response:
        return Response(self.css, media_type="text/css", headers={"Cache-Control": "max-age=3600"} | SECURITY_HEADERS)

    # --- the request cycle ----------------------------------------------------------------------------

    def endpoint(self, handler: Handler, *, post: bool = False, login: bool = False) -> Callable[..., Awaitable]:
        """Wrap a handler: read the form, then, in a worker thread, check session and CSRF, answer, meter."""

        async def answer(request: Request) -> Response:
            started = time.perf_counter()
            form: dict[str, list[str]] = {}
            refused: WebError | None = None
            if post:
                try:
                    form = await read_form(request)
                except WebError as error:
                    refused = error
            return await run_in_threadpool(self.answer, handler, request, form, refused, post, login, started)

        return answer

    def answer(
        self,
        handler: Handler,
        request: Request,
        form: dict[str, list[str]],
        refused: WebError | None,
        post: bool,
        login: bool,
        started: float,
    ) -> Response:
        sent = self.cookie_session(request)
        session = self.live_session(sent)
        call = Call(request=request, session=session, form=form, fresh=sent is None)
        if session != sent:
            call.set_session = session
        call.flash = self._take_flash(request)
        try:
            if refused is not None:
                raise refused
            if post:
                self.check_csrf(call)
            if login and call.department is None:
                if not post:
                    target = f"{PREFIX}/login?" + urlencode({"next": request.url.path})
                    return self.finish(call, RedirectResponse(target, status_code=303), started)
                raise WebError(401, "请先登录：粘贴本部门的共享令牌")
            response = handler(self, call)
        except WebError as error:
            call.reason = error.message
            response = self.render(call, "message.html", {"title": "提示", "error": error.message}, error.status)
        except Exception:  # a bug: say so in one line, log the trace, never show it
            log.exception("catalog web page failed on %s %s", request.method, request.url.path)
            call.reason = "internal error"
            response = self.render(call, "message.html", {"title": "出错了", "error": "服务器内部错误，已记录"}, 500)
        return self.finish(call, response, started)

    def finish(self, call: Call, response: Response, started: float) -> Response:
        """Cookies, security headers and the access-log row of one answer."""
        secure = call.request.url.scheme == "https"
        if call.set_session is not None:
            response.set_cookie(
                SESSION_COOKIE,
                self.sessions.dumps(
                    {"sid": call.set_session.sid, "dept": call.set_session.department, "tid": call.set_session.token_id}
                ),
                max_age=SESSION_SECONDS,
                path=PREFIX,
                secure=secure,
                httponly=True,
                samesite="strict",
            )
        if call.set_flash is not None:
            response.set_cookie(
                FLASH_COOKIE,
                self.flashes.dumps(list(call.set_flash)),
                max_age=FLASH_SECONDS,
                path=PREFIX,
                secure=secure,
                httponly=True,
                samesite="strict",
            )
        elif call.flash is not None:
            response.delete_cookie(FLASH_COOKIE, path=PREFIX, secure=secure, httponly=True, samesite="strict")
        response.headers.update(SECURITY_HEADERS | {"Cache-Control": "no-store"})
        self.meter(call, response.status_code, started)
        return response

    def meter(self, call: Call, status: int, started: float) -> None:
        outcome = "ok" if status < 400 else ("refused" if status < 500 else "error")
        try:
            self.state.access_log.record(
                endpoint="web",
                method=call.request.method,
                path=call.request.url.path,
                department=call.department,
                token_id=call.session.token_id,
                dataset_id=call.dataset_id,
                order_id=call.order_id,
                status=status,
                outcome=outcome,
                reason=call.reason,
                duration_ms=(time.perf_counter() - started) * 1000,
                client=(call.request.headers.get("user-agent") or "")[:200] or None,
            )
        except Exception:  # metering must never turn a page into an error
            log.exception("could not meter a catalog web request")

    # --- session, CSRF, flash -------------------------------------------------------------------------

    @staticmethod
    def _load(serializer: URLSafeTimedSerializer, value: str | None, max_age: int) -> Any:
        if not value:
            return None
        try:
            return serializer.loads(value, max_age=max_age)
        except BadSignature:  # also SignatureExpired
            return None

    def cookie_session(self, request: Request) -> Session | None:
        """The session the cookie names, when its signature holds and it is under SESSION_SECONDS old."""
        data = self._load(self.sessions, request.cookies.get(SESSION_COOKIE), SESSION_SECONDS)
        if not isinstance(data, dict) or not isinstance(data.get("sid"), str):
            return None
        department, token_id = data.get("dept"), data.get("tid")
        if not isinstance(department, str | None) or not isinstance(token_id, str | None):
            return None
        return Session(sid=data["sid"], department=department, token_id=token_id)

    def live_session(self, sent: Session | None) -> Session:
        """A fresh anonymous session when none was sent, and an anonymous one under the same id when the
        department's token has since been revoked or has expired."""
        if sent is None:
            return Session.anonymous()
        if sent.department is not None and not self.token_live(sent.token_id, sent.department):
            return Session(sid=sent.sid)
        return sent

    def token_live(self, token_id: str | None, department: str) -> bool:
        """Whether the token a session was opened with still belongs to the department and is neither revoked
        nor expired (re-read on every request: revoking a token must end its web sessions too)."""
        if not token_id:
            return False
        try:
            tokens = read_tokens(self.state.warehouse)
        except Exception:  # cannot tell: treat the person as logged out rather than trust a stale session
            log.exception("could not read the share tokens to check a web session")
            return False
        tokens = tokens.filter(
            (pl.col("token_id") == token_id)
            & (pl.col("department") == department)
            & pl.col("revoked_at").is_null()
            & (pl.col("expires_at") > datetime.now(UTC))
        )
        return tokens.height == 1

    def csrf_token(self, session: Session) -> str:
        return self.state.sign(f"web-csrf:{session.sid}")

    def check_csrf(self, call: Call) -> None:
        """A POST must carry the token of the session it was sent with: another site cannot forge one."""
        sent = call.form_value("csrf", 200)
        if call.fresh or not sent or not self.state.verify(f"web-csrf:{call.session.sid}", sent):
            raise WebError(403, "请求被拒绝：表单校验码（CSRF）缺失或无效，请刷新页面后重试")

    def _take_flash(self, request: Request) -> tuple[str, str] | None:
        data = self._load(self.flashes, request.cookies.get(FLASH_COOKIE), FLASH_SECONDS)
        if isinstance(data, list) and len(data) == 2 and all(isinstance(x, str) for x in data):
            return data[0], data[1]
        return None

    def redirect(self, call: Call, target: str, kind: str, text: str) -> Response:
        """Post/redirect/get: the one-line result travels in a signed flash cookie."""
        call.set_flash = (kind, text)
        return RedirectResponse(target, status_code=303)

    # --- rendering -------------------------------------------------------------------------------------

    def render(self, call: Call, template: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
        session = call.set_session or call.session
        labels = self._owner_labels(call)
        common = {
            "me": session.department,
            "me_name": department_name(labels.get(session.department or ""), session.department),
            "csrf": self.csrf_token(session),
            "flash": call.flash,
            "path": call.request.url.path,
            "error": None,
            "title": "数据资源目录",
        }
        html = self.templates.get_template(template).render(common | context)
        return HTMLResponse(html, status_code=status)

    def _catalog(self, call: Call) -> pl.DataFrame | None:
        """`ops/catalog`, read once per request; None when it has not been built yet."""
        if "catalog" not in call.cache:
            try:
                call.cache["catalog"] = read_catalog(self.state.warehouse)
            except CatalogError:
                call.cache["catalog"] = None
        return call.cache["catalog"]

    def _owner_labels(self, call: Call) -> dict[str, str]:
        catalog = self._catalog(call)
        if catalog is None:
            return {}
        pairs = catalog.select("owner_department", "owner_label").unique().iter_rows()
        return {code: label for code, label in pairs if code}

    # --- pages -----------------------------------------------------------------------------------------

    def browse(self, call: Call) -> Response:
        """数据资源目录: search box, filters by layer, owner and sharing type, and the matching datasets."""
        words, layer, owner, sharing = call.query("q"), call.query("layer"), call.query("owner"), call.query("sharing")
        if layer and layer not in LAYERS:
            raise WebError(400, f"未知的数据层级 {layer!r}")
        if sharing and sharing not in SHARING_TYPES:
            raise WebError(400, f"未知的共享类型 {sharing!r}")
        if owner and not DEPARTMENT_PATTERN.match(owner):
            raise WebError(400, f"未知的部门代码 {owner!r}")
        catalog = self._catalog(call)
        context: dict[str, Any] = {"q": words, "layer": layer, "owner": owner, "sharing": sharing}
        if catalog is None:
            return self.render(call, "browse.html", context | {"rows": [], "owners": [], "total": 0, "missing": True})
        owners = sorted(catalog.select("owner_department", "owner_label").unique().iter_rows())
        found = search_catalog(catalog, words) if words else catalog
        for column, value in (("layer", layer), ("owner_department", owner), ("sharing_type", sharing)):
            if value:
                found = found.filter(pl.col(column) == value)
        rows = found.drop("columns").to_dicts()
        context |= {"rows": rows, "owners": owners, "total": catalog.height, "missing": False}
        return self.render(call, "browse.html", context)

    def _dataset_row(self, call: Call) -> dict[str, Any]:
        dataset_id = call.request.path_params["dataset_id"]
        if not DATASET_ID_PATTERN.match(dataset_id):
            raise WebError(404, f"没有数据集 {dataset_id!r}")
        call.dataset_id = dataset_id
        catalog = self._catalog(call)
        if catalog is None:
            raise WebError(404, "数据资源目录尚未生成：请先运行 `yiwang run`")
        rows = catalog.filter(pl.col("dataset_id") == dataset_id).to_dicts()
        if not rows:
            raise WebError(404, f"没有数据集 {dataset_id!r}：请在数据资源目录中搜索")
        row = rows[0]
        for name in ("columns", "primary_key", "upstream", "downstream"):
            row[name] = row[name] or []
        return row

    def _orderable(self, row: dict[str, Any]) -> str | None:
        """Why a dataset cannot be ordered from this page, or None when it can."""
        if row["restricted"]:
            return "受限区域：仅共享其汇总结果，不接受订单"
        if row["sharing_type"] == "none":
            return "不予共享：该数据集不接受订单"
        if not row["columns"]:
            return "尚未构建（没有字段信息）：请先运行 `yiwang run`"
        return None

    def dataset(self, call: Call, error: str | None = None, status: int = 200) -> Response:
        """One dataset's metadata (schema, classifications, freshness, quality, lineage) and the order form."""
        row = self._dataset_row(call)
        known = set(self._catalog(call)["dataset_id"].to_list())  # type: ignore[index]
        open_order = None
        if call.department is not None:
            open_order = next(
                (
                    o
                    for o in self.state.orders().values()
                    if o.department == call.department
                    and o.dataset_id == row["dataset_id"]
                    and o.effective_state() in OPEN_STATES
                ),
                None,
            )
        values = {name: call.form_value(name) for name in ("purpose", "row_filter", "until", "legal_basis")}
        defaults = [c["name"] for c in row["columns"] if c["classification"] != "sensitive"]
        chosen = set(call.form.get("columns") or defaults)
        context = {
            "d": row,
            "known": known,
            "blocked": self._orderable(row),
            "open_order": open_order,
            "values": values,
            "chosen": chosen,
            "today": datetime.now(CST).date().isoformat(),
            "error": error,
            "title": row["title"],
        }
        return self.render(call, "dataset.html", context, status)

    def order_request(self, call: Call) -> Response:
        """申请共享: record an order; a refusal re-renders the form with what was typed and the one-line reason."""
        row = self._dataset_row(call)
        assert call.department is not None
        columns = [c for c in call.form.get("columns", []) if c]
        if not columns:
            return self._refuse_request(call, 400, "请至少选择一列")
        if len(columns) > MAX_FORM_FIELDS:
            return self._refuse_request(call, 400, "所选列过多")
        if not call.form_value("purpose"):
            return self._refuse_request(call, 400, "请填写用途（记入审计）")
        until_text = call.form_value("until", 10)
        try:
            until = date.fromisoformat(until_text) if until_text else None
        except ValueError:
            return self._refuse_request(call, 400, f"有效期 {until_text!r} 不是日期（YYYY-MM-DD）")
        try:
            order = request_order(
                self.state.warehouse,
                dataset_id=row["dataset_id"],
                department=call.department,
                columns=columns,
                purpose=call.form_value("purpose"),
                row_filter=call.form_value("row_filter") or None,
                until=until,
                legal_basis=call.form_value("legal_basis") or None,
                requested_by=call.department,
            )
        except OrderError as error:
            return self._refuse_request(call, 409 if "already has order" in str(error) else 400, f"申请未通过：{error}")
        call.order_id = order.order_id
        text = f"已提交订单 {order.order_id}（{row['title']}），当前状态：{STATE_LABELS[order.state]}"
        return self.redirect(call, f"{PREFIX}/orders", "ok", text)

    def _refuse_request(self, call: Call, status: int, message: str) -> Response:
        call.reason = message
        return self.dataset(call, error=message, status=status)

    def login_page(self, call: Call, error: str | None = None, status: int = 200) -> Response:
        target = _safe_next(call.query("next", 500) or f"{PREFIX}/orders")
        return self.render(call, "login.html", {"next": target, "error": error, "title": "登录"}, status)

    def login(self, call: Call) -> Response:
        """Sign in with the department's bearer token: a new session id (no fixation), the token's id kept."""
        token = call.form_value("token", 200)
        try:
            department = self.state.department_of(token)
            token_id, _secret = parse_token(token)
        except (TokenError, ValueError) as error:
            call.reason = f"login refused: {error}"
            return self.login_page(call, error=f"登录失败：{error}", status=401)
        session = Session(sid=secrets.token_urlsafe(18), department=department, token_id=token_id)
        call.session = call.set_session = session
        name = department_name(self._owner_labels(call).get(department), department)
        return self.redirect(call, _safe_next(call.form_value("next", 500)), "ok", f"已登录：{name}（{department}）")

    def logout(self, call: Call) -> Response:
        call.set_session = Session.anonymous()
        return self.redirect(call, PREFIX, "ok", "已退出登录")

    def _order(self, call: Call) -> Order:
        order_id = call.request.path_params["order_id"]
        try:
            check_order_id(order_id)
        except OrderError:
            raise WebError(404, f"没有订单 {order_id!r}") from None
        call.order_id = order_id
        order = self.state.orders().get(order_id)
        if order is None:
            raise WebError(404, f"没有订单 {order_id}")
        return order

    def orders(self, call: Call, error: str | None = None, status: int = 200) -> Response:
        """我的订单: the department's orders (every order for the data officer) and its usage per day."""
        department = call.department
        officer = department == DATA_OFFICER
        orders = [o for o in self.state.orders().values() if officer or o.department == department]
        orders.sort(key=lambda o: o.requested_at or datetime.min.replace(tzinfo=UTC), reverse=True)
        context = {
            "orders": [self._order_view(o, department) for o in orders],
            "usage": self.usage(None if officer else department),
            "officer": officer,
            "error": error,
            "title": "我的订单",
            "usage_days": USAGE_DAYS,
        }
        return self.render(call, "orders.html", context, status)

    def queue(self, call: Call, error: str | None = None, status: int = 200) -> Response:
        """待审批: orders of the department's datasets that await its decision, and its datasets' open orders."""
        department = call.department
        officer = department == DATA_OFFICER
        mine = [o for o in self.state.orders().values() if officer or o.owner_department == department]
        mine.sort(key=lambda o: o.requested_at or datetime.min.replace(tzinfo=UTC))
        pending = [self._order_view(o, department) for o in mine if o.effective_state() == "requested"]
        running = [self._order_view(o, department) for o in mine if o.effective_state() in ("approved", "active")]
        context = {
            "pending": pending,
            "running": running,
            "officer": officer,
            "error": error,
            "title": "待审批",
        }
        return self.render(call, "queue.html", context, status)

    def _order_view(self, order: Order, viewer: str | None) -> dict[str, Any]:
        state = order.effective_state()
        return {
            "o": order,
            "state": state,
            "delivered": delivered_columns(order),
            "may_decide": viewer == order.owner_department and state == "requested",
            "may_revoke": state in OPEN_STATES and viewer in (order.department, order.owner_department, DATA_OFFICER),
        }

    def decide(self, call: Call) -> Response:
        """批准 / 驳回 by the owning department; a refusal is the order rules' one-line message."""
        event = call.request.path_params["event"]
        if event not in ("approve", "reject"):
            raise WebError(404, f"未知的操作 {event!r}")
        order = self._order(call)
        return self._change(call, order, event, "queue")

    def revoke(self, call: Call) -> Response:
        back = "queue" if call.form_value("back", 10) == "queue" else "orders"
        return self._change(call, self._order(call), "revoke", back)

    def _change(self, call: Call, order: Order, event: str, back: str) -> Response:
        assert call.department is not None
        department = call.department
        reason = call.form_value("reason", 500)
        page = CatalogWeb.queue if back == "queue" else CatalogWeb.orders
        if event in ("reject", "revoke") and not reason:
            call.reason = f"{EVENT_LABELS[event]}须填写原因"
            return page(self, call, error=f"{EVENT_LABELS[event]}须填写原因（记入审计）", status=400)
        entitled = (
            department == order.owner_department
            if event in ("approve", "reject")
            else department in (order.owner_department, order.department, DATA_OFFICER)
        )
        try:
            changed = change_order(self.state.warehouse, order.order_id, event, department, reason)
        except OrderError as error:
            message = f"{EVENT_LABELS[event]}未通过：{error}"
            call.reason = message
            return page(self, call, error=message, status=409 if entitled else 403)
        text = f"已{EVENT_LABELS[event]}订单 {changed.order_id}，当前状态：{STATE_LABELS[changed.state]}"
        return self.redirect(call, f"{PREFIX}/{back}", "ok", text)

    # --- usage -----------------------------------------------------------------------------------------

    def usage(self, department: str | None) -> list[dict[str, Any]]:
        """Calls, rows and bytes per day and order over the last USAGE_DAYS days, from the access log (the
        Delta Sharing calls only: this page's own requests are left out). Reads only the matching rows."""
        warehouse = self.state.warehouse
        if not warehouse.exists(ACCESS_LOG):
            return []
        since = pa.scalar(datetime.now(UTC) - timedelta(days=USAGE_DAYS), type=pa.timestamp("us", tz="UTC"))
        condition = (pc.field("at") >= since) & (pc.field("endpoint") != "web")
        if department is not None:
            condition = condition & (pc.field("department") == department)
        table = warehouse.table(ACCESS_LOG).to_pyarrow_dataset().to_table(filter=condition)
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        if frame.is_empty():
            return []
        return usage_daily(frame).sort("day", descending=True).to_dicts()
