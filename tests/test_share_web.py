"""The catalog web page (thematic_libs/sharing/web.py) on the real sharing server, driven by headless Chromium:
request -> approve -> read.

A small real warehouse (tests/share_kit.py: the assistance members in bronze and silver; here also a batch
ledger row, a quality score and `ops/catalog` built by the catalog module) is served by `create_app` with the
web routes, under uvicorn on loopback. Department weijian signs in with the bearer token of its Delta
Sharing profile, searches, orders the members table (the sensitive ID number pseudonymised), the owner
minzheng approves it in its queue, the server's refresher builds the delivery, weijian reads it with the
official Delta Sharing client and sees the order active with its usage, and the data officer revokes it.
Along the way: a wrong token cannot log in, a POST without its CSRF token is refused, another department
cannot approve, no answer is a 500, and no page holds a value of the data or a bearer token.
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from unittest.mock import patch

import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from itsdangerous import TimestampSigner

from ingestion.ledger import LedgerEntry, write_ledger
from ingestion.pseudonym import Pseudonymiser
from ingestion.warehouse import QUALITY_SCORECARD, Warehouse
from tests.share_kit import (
    CLIENT_PYTHON,
    MEMBERS,
    issue_profile,
    member_rows,
    run_client,
    running_server,
    share_state,
    wait_active,
    write_members,
)
from thematic_libs.analytics.browser import CHROMIUM, CHROMIUM_ARGS
from thematic_libs.sharing.access_log import read_access_log
from thematic_libs.sharing.catalog import build_catalog, write_catalog
from thematic_libs.sharing.deliveries import delivery_table
from thematic_libs.sharing.orders import list_orders
from thematic_libs.sharing.state import ShareState
from thematic_libs.sharing.tokens import issue_token, parse_token, revoke_tokens
from thematic_libs.sharing.web import CatalogWeb, web_routes

ID_NUMBER = re.compile(r"(?<![0-9])[1-9][0-9]{16}[0-9Xx](?![0-9A-Za-z])")
CSRF_VALUE = re.compile(r'value="[0-9a-f]{64}"')
ORDER_ID = re.compile(r"SO-\d{8}-[0-9a-f]{8}")
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
DELIVERED = ["case_id", "member_id_number_key", "member_name"]


# --- the warehouse and the server --------------------------------------------------------------------


def catalogued_warehouse(warehouse: Warehouse, pseudonymiser: Pseudonymiser, people: int = 12) -> list[dict]:
    """The members (share_kit), a loaded batch, a quality score and `ops/catalog` with a little lineage;
    returns the raw rows, whose values no page may ever show."""
    rows = member_rows(people)
    write_members(warehouse, pseudonymiser, rows)
    loaded = datetime.now(UTC) - timedelta(hours=3)
    write_ledger(warehouse, LedgerEntry(MEMBERS, "b0001", "loaded", None, people, 0, loaded))
    score = {"grain": ["contract"], "contract_id": [MEMBERS], "overall_score": [0.925], "as_of": [date.today()]}
    write_deltalake(warehouse.uri(QUALITY_SCORECARD), pa.table(score))
    lineage = {
        "silver/minzheng/assistance_members": (["bronze/minzheng/assistance_members"], ["reports.crosscheck_summary"])
    }
    write_catalog(warehouse, build_catalog(warehouse, lineage))
    return rows


@contextmanager
def serving(state: ShareState, refresh_seconds: float = 0) -> Iterator[str]:
    """The real sharing app with the catalog page mounted, on a free loopback port; yields its base URL."""
    with running_server(state, refresh_seconds=refresh_seconds, extra_routes=web_routes(state)) as server:
        yield server.url


# --- plain HTTP (no browser) --------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # the 303 itself is what the test looks at


def fetch(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, str]:
    status, body, _cookie = fetch_with_cookie(url, data, headers)
    return status, body


def fetch_with_cookie(
    url: str, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, str, str | None]:
    """(status, body, the session cookie the answer sets) without following redirects."""
    request = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data else "GET")
    try:
        response = urllib.request.build_opener(_NoRedirect).open(request, timeout=10)
    except urllib.error.HTTPError as error:
        response = error
    with response:
        cookies = [c.split(";", 1)[0] for c in response.headers.get_all("set-cookie") or []]
        session = next((c for c in cookies if c.startswith("yiwang_session=")), None)
        return response.status, response.read().decode("utf-8"), session


def test_missing_catalog_and_bad_input_answer_4xx_in_one_line(warehouse: Warehouse, pseudonymiser: Pseudonymiser):
    """Before `yiwang run` the page says so in one line; bad input is a 4xx, never a 500."""
    state = share_state(warehouse, pseudonymiser)
    with serving(state) as base:
        assert fetch(f"{base}/")[0] == 307  # the server sends a browser to the catalog
        status, html = fetch(f"{base}/catalog")
        assert status == 200 and "数据资源目录尚未生成" in html and "yiwang run" in html
        assert fetch(f"{base}/catalog/datasets/minzheng.assistance_members")[0] == 404
        assert fetch(f"{base}/catalog/datasets/..%2Fetc")[0] == 404
        assert fetch(f"{base}/catalog?layer=bronze")[0] == 400
        assert fetch(f"{base}/catalog?q=" + "x" * 500)[0] == 400
        # not logged in: the pages of a department send the person to the login form
        status, html = fetch(f"{base}/catalog/orders")
        assert status == 303
        # a POST that is not a form, one with no session, one with a forged session cookie
        assert fetch(f"{base}/catalog/login", b"{}", {"Content-Type": "application/json"})[0] == 415
        assert fetch(f"{base}/catalog/login", b"token=x", FORM)[0] == 403
        forged = FORM | {"Cookie": "yiwang_session=eyJzaWQiOiJ4In0.x.y"}
        assert fetch(f"{base}/catalog/queue/SO-20260101-deadbeef/approve", b"csrf=0", forged)[0] == 403
        assert fetch(f"{base}/catalog/login", b"x" * 70_000, FORM)[0] == 413
    state.access_log.flush()
    log = read_access_log(warehouse).filter(pl.col("endpoint") == "web")
    assert log.height >= 9 and log.filter(pl.col("status") >= 500).is_empty()


def test_session_ends_with_its_token_and_after_eight_hours(warehouse: Warehouse, pseudonymiser: Pseudonymiser):
    """The cookie holds no token: revoking the department's token ends its sessions at the next request."""
    state = share_state(warehouse, pseudonymiser)
    token = issue_token(warehouse, "weijian").token
    with serving(state) as base:
        status, html, anonymous = fetch_with_cookie(f"{base}/catalog/login")
        assert status == 200 and anonymous is not None
        csrf = re.search(r'name="csrf" value="([0-9a-f]{64})"', html)
        assert csrf is not None
        body = urllib.parse.urlencode({"csrf": csrf.group(1), "token": token, "next": "/catalog/queue"}).encode()
        status, _html, session = fetch_with_cookie(f"{base}/catalog/login", body, FORM | {"Cookie": anonymous})
        assert status == 303 and session is not None and session != anonymous
        assert parse_token(token)[1] not in session  # the secret never travels in the cookie
        assert fetch(f"{base}/catalog/orders", headers={"Cookie": session})[0] == 200

        # a session signed nine hours ago has expired
        web = CatalogWeb(state)
        old = web.sessions.loads(session.split("=", 1)[1])
        with patch.object(TimestampSigner, "get_timestamp", return_value=int(time.time()) - 9 * 3600):
            stale = f"yiwang_session={web.sessions.dumps(old)}"
        assert fetch(f"{base}/catalog/orders", headers={"Cookie": stale})[0] == 303

        revoke_tokens(warehouse, "weijian")
        status, _html, cleared = fetch_with_cookie(f"{base}/catalog/orders", headers={"Cookie": session})
        assert status == 303 and cleared is not None  # back to the login form, with an anonymous session


# --- the browser walk ---------------------------------------------------------------------------------


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt install chromium)")
def test_request_approve_read_in_the_browser(warehouse: Warehouse, pseudonymiser: Pseudonymiser, tmp_path: Path):
    from playwright.sync_api import Page, sync_playwright

    started = time.monotonic()
    raw = catalogued_warehouse(warehouse, pseudonymiser)
    state = share_state(warehouse, pseudonymiser)
    tokens = {dept: issue_token(warehouse, dept).token for dept in ("minzheng", "gongan", "data_officer")}
    statuses: list[tuple[int, str]] = []
    pages: list[tuple[str, str, str]] = []  # (url, html, visible text)

    def snap(page: Page) -> str:
        html = page.content()
        pages.append((page.url, html, page.inner_text("body")))
        return html

    def submit(page: Page, selector: str) -> int:
        """Click a submit button and wait for the page it leads to; returns the final status."""
        with page.expect_navigation() as navigation:
            page.click(selector)
        response = navigation.value
        snap(page)
        return response.status if response is not None else 0

    def log_in(page: Page, token: str) -> int:
        page.goto(f"{base}/catalog/login")
        page.fill("#token", token)
        return submit(page, "form[action='/catalog/login'] button[type=submit]")

    def log_out(page: Page) -> None:
        submit(page, "form[action='/catalog/logout'] button")
        assert "已退出登录" in page.content() and "部门登录" in page.content()

    with running_server(state, refresh_seconds=0.2, extra_routes=web_routes(state)) as server, sync_playwright() as pw:
        base = server.url
        # weijian's Delta Sharing profile: its bearer token is also how its people sign in to the page
        profile, tokens["weijian"] = issue_profile(warehouse, "weijian", server.endpoint, tmp_path / "profiles")
        # launch() runs Chromium on a fresh temporary profile of its own (it refuses --user-data-dir)
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(locale="zh-CN")
        context.on("response", lambda response: statuses.append((response.status, response.url)))
        page = context.new_page()

        # browse and search without logging in
        page.goto(f"{base}/catalog")
        assert "一网共享" in snap(page) and "数据资源目录" in page.title()
        page.fill("input[name=q]", "救助")
        submit(page, "form.search button[type=submit]")
        assert MEMBERS in page.content() and "gongan.household_registration" not in page.content()
        assert page.locator("table.list tbody tr").count() >= 1

        # a wrong token cannot log in, and the token typed is not echoed back
        wrong = "ysh_0123456789ab_" + "A" * 43
        assert log_in(page, wrong) == 401
        assert "登录失败" in page.content() and "当前部门" not in page.content() and wrong not in page.content()

        # weijian logs in and orders the members table, the sensitive ID number as its pseudonym
        assert log_in(page, tokens["weijian"]) == 200
        assert "已登录" in page.content() and "当前部门" in page.content()
        page.goto(f"{base}/catalog?q=救助")
        snap(page)
        page.click(f"a[href='/catalog/datasets/{MEMBERS}']")
        page.wait_for_load_state()
        html = snap(page)
        assert "敏感" in html and "有条件共享" in html and "新鲜" in html and "92.5%" in html and "+08:00" in html
        assert page.locator("a[href='/catalog/datasets/reports.crosscheck_summary']").count() == 1  # lineage
        assert "bronze/minzheng/assistance_members" in page.inner_text("ul.lineage")
        assert not page.is_checked("input[name=columns][value=member_id_number]")
        assert not page.is_checked("input[name=columns][value=disability_level]")
        assert page.is_checked("input[name=columns][value=case_id]")
        assert page.locator("label.choice.sensitive").count() == 2
        page.check("input[name=columns][value=member_id_number]")
        page.uncheck("input[name=columns][value=relation_to_head]")
        page.fill("#purpose", "核对死亡人员是否仍在低保家庭成员名单中")
        assert submit(page, "form.order button[type=submit]") == 200
        assert "/catalog/orders" in page.url and "已提交订单" in page.content() and "待审批" in page.content()
        match = ORDER_ID.search(page.inner_text("p.msg"))
        assert match is not None
        order_id = match.group(0)
        assert "member_id_number_key" in page.content()

        # a second order for the same dataset is refused with the rules' one line
        page.goto(f"{base}/catalog/datasets/{MEMBERS}")
        assert order_id in snap(page) and "本部门已有此数据集的订单" in page.content()

        # a POST without its CSRF token (or with a wrong one) is refused
        csrf = page.get_attribute("form[action='/catalog/logout'] input[name=csrf]", "value")
        assert csrf
        for form in ({"reason": "no csrf", "back": "orders"}, {"reason": "bad", "back": "orders", "csrf": "0" * 64}):
            refused = context.request.post(f"{base}/catalog/orders/{order_id}/revoke", form=form)
            statuses.append((refused.status, refused.url))
            assert refused.status == 403 and "CSRF" in refused.text()
        assert {o.order_id: o.state for o in list_orders(warehouse)}[order_id] == "requested"
        log_out(page)

        # another department cannot approve: the order rules' message, 403
        assert log_in(page, tokens["gongan"]) == 200
        page.goto(f"{base}/catalog/queue")
        assert "没有待本部门审批的订单" in snap(page) and order_id not in page.content()
        csrf = page.get_attribute("form[action='/catalog/logout'] input[name=csrf]", "value")
        assert csrf
        other = context.request.post(
            f"{base}/catalog/queue/{order_id}/approve", form={"csrf": csrf, "reason": "不是我的数据"}
        )
        statuses.append((other.status, other.url))
        pages.append((other.url, other.text(), other.text()))
        assert other.status == 403 and "批准未通过" in other.text() and "only the owning department" in other.text()
        log_out(page)

        # the owner approves it in its queue
        assert log_in(page, tokens["minzheng"]) == 200
        page.goto(f"{base}/catalog/queue")
        assert order_id in snap(page)
        page.fill(f"article[id='{order_id}'] input[name=reason]", "用途明确，同意以假名键共享")
        assert submit(page, f"article[id='{order_id}'] button.primary") == 200
        assert f"已批准订单 {order_id}" in page.content()
        log_out(page)

        # the server's refresher builds the delivery, which holds exactly the granted columns
        wait_active(state, order_id)
        delivered = pl.DataFrame(pl.from_arrow(DeltaTable(warehouse.uri(delivery_table(order_id))).to_pyarrow_table()))
        assert delivered.columns == DELIVERED
        expected_keys = {pseudonymiser.pseudonym(r["member_id_number"]) for r in raw}
        assert set(delivered["member_id_number_key"]) == expected_keys

        # weijian reads it through the Delta Sharing protocol with the official client (when installed)
        if CLIENT_PYTHON.exists():
            out = tmp_path / "client"
            table = "weijian.minzheng.assistance_members"
            results = run_client(profile, [{"op": "load", "table": table, "out": str(out / "members.parquet")}], out)
            assert results[0]["ok"], results
            loaded = pl.read_parquet(out / "members.parquet")
            assert loaded.columns == DELIVERED and set(loaded["member_id_number_key"]) == expected_keys
        else:  # what a read is metered as, so that the usage below has a row either way
            state.access_log.record(
                endpoint="query", method="POST", path=f"/delta-sharing/{order_id}", department="weijian",
                order_id=order_id, dataset_id=MEMBERS, status=200, outcome="ok", files=1, rows=len(raw), bytes=4096,
            )  # fmt: skip
        state.access_log.flush()

        # weijian sees its order active, with the read in its usage
        assert log_in(page, tokens["weijian"]) == 200
        assert "生效中" in page.locator(f"tr[id='{order_id}']").inner_text()
        cells = page.locator("table.usage tbody tr", has_text=order_id).first.locator("td").all_inner_texts()
        calls, files, rows = (int(cells[i].replace(",", "")) for i in (3, 5, 6))
        assert cells[2] == MEMBERS and calls >= 1 and files >= 1 and rows >= len(raw), cells
        log_out(page)

        # the data officer sees every department's orders and revokes this one
        assert log_in(page, tokens["data_officer"]) == 200
        assert "数据官" in page.content() and order_id in page.content()
        page.fill(f"tr[id='{order_id}'] input[name=reason]", "年度复核：停止共享")
        assert submit(page, f"tr[id='{order_id}'] button.danger") == 200
        assert f"已撤销订单 {order_id}" in page.content()
        assert "已撤销" in page.locator(f"tr[id='{order_id}']").inner_text()
        assert {o.order_id: o.state for o in list_orders(warehouse)}[order_id] == "revoked"

        browser.close()

    # no answer was a 500, no page showed a data value, a bearer token or an ID number
    assert statuses and not [s for s in statuses if s[0] >= 500], statuses
    assert len(pages) >= 12
    for url, html, text in pages:
        values = [r["member_id_number"] for r in raw] + [r["member_name"] for r in raw] + list(tokens.values())
        for value in values:
            assert value not in html, (url, value)
        assert ID_NUMBER.search(text) is None, url
        assert ID_NUMBER.search(CSRF_VALUE.sub("", html)) is None, url

    # every page request was metered, refusals included
    state.access_log.flush()
    web = read_access_log(warehouse).filter(pl.col("endpoint") == "web")
    assert set(web["department"].drop_nulls()) >= {"weijian", "minzheng", "gongan"}
    assert web.filter(pl.col("outcome") == "refused").height >= 4
    assert web.filter(pl.col("status") >= 500).is_empty()
    assert time.monotonic() - started < 60
