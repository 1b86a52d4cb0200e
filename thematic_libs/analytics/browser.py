"""Dashboards checked in a real browser: Debian's headless Chromium driven by Playwright.

Used by tests/test_superset.py (every dashboard renders every chart with data, no chart shows an error, a
native filter changes the numbers) and by bench/superset.py (navigation-to-rendered time, cold and warm).

A chart counts as rendered when Superset's chart component shows no loading indicator, its data request
(`/api/v1/chart/data`, matched by the chart id in the request's form data) has answered, and the chart drew
something: a big number's value, a table's rows, an ECharts canvas. An error is a failed data request (HTTP
status or an error in the answer) or an error alert in the chart. Playwright is only imported when a browser is
opened (it is a development dependency; `playwright install` is never run: Debian's chromium is used).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

CHROMIUM = Path("/usr/bin/chromium")
# Measured flags for Debian's chromium under Playwright (../shared/STACK.md); launch() adds a fresh profile.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Tall enough that every chart of the six dashboards is in view (Superset renders charts lazily, as they scroll
# into view) and that a screenshot of the viewport holds the whole dashboard.
VIEWPORT = {"width": 1600, "height": 2100}
NO_DATA_TEXTS = ("没有数据", "No data", "此查询没有数据返回", "No results")

# One pass over the page: the state of every chart component, read from Superset's own data-test markers.
_CHART_STATES_JS = """() => Array.from(document.querySelectorAll('[data-test="chart-grid-component"]')).map(c => {
  const body = c.querySelector('[data-test="slice-container"]');
  const big = c.querySelector('.header-line');
  const errors = c.querySelectorAll('.ant-alert-error, .alert-danger, [data-test="error-alert"]');
  return {
    id: parseInt(c.getAttribute('data-test-chart-id'), 10),
    name: c.getAttribute('data-test-chart-name'),
    viz: c.getAttribute('data-test-viz-type'),
    loading: !!c.querySelector('[data-test="loading-indicator"], .loading'),
    empty: !!c.querySelector('[data-test="empty-state"]'),
    error: errors.length ? Array.from(errors).map(e => e.innerText).join(' ').slice(0, 300) : null,
    bigNumber: big ? big.innerText.trim() : null,
    tableRows: c.querySelectorAll('table tbody tr').length,
    drawn: !!(body && body.querySelector('[_echarts_instance_] canvas, [_echarts_instance_] svg')),
    text: (body ? body.innerText : '').slice(0, 200),
  };
})"""


@dataclass
class ChartState:
    """One chart as the browser shows it after loading, with the rows its data request returned."""

    chart_id: int
    name: str
    viz_type: str
    rows: int | None  # None: no data request answered for it
    request_error: str | None
    screen_error: str | None
    big_number: str | None
    table_rows: int
    drawn: bool
    empty: bool
    loading: bool

    @property
    def error(self) -> str | None:
        return self.request_error or self.screen_error

    @property
    def has_data(self) -> bool:
        """Rendered with data: rows came back and something was drawn from them."""
        if self.error or self.loading or self.empty or not self.rows:
            return False
        if self.viz_type.startswith("big_number"):
            return bool(self.big_number) and self.big_number not in NO_DATA_TEXTS
        if self.viz_type == "table":
            return self.table_rows > 0
        return self.drawn

    def describe(self) -> str:
        state = "error: " + self.error if self.error else ("data" if self.has_data else "no data")
        shown = self.big_number or (f"{self.table_rows} table rows" if self.table_rows else "")
        return f"{self.name} [{self.viz_type}] rows={self.rows} {shown} ({state})"


@dataclass
class DashboardRender:
    slug: str
    seconds: float  # navigation start -> every chart rendered (or failed)
    charts: list[ChartState] = field(default_factory=list)
    screenshot: Path | None = None

    @property
    def problems(self) -> list[str]:
        return [c.describe() for c in self.charts if not c.has_data]

    def big_numbers(self) -> dict[str, str]:
        return {c.name: c.big_number or "" for c in self.charts if c.viz_type.startswith("big_number")}


class RenderTimeout(TimeoutError):
    """Some chart was still loading when the time ran out."""


def _slice_id(url: str, post_data: str | None) -> int | None:
    """The chart id a `/api/v1/chart/data` request is for: a dashboard puts `{"slice_id": N}` in the URL's
    form_data; other callers may carry it in the body's form data. None for a filter's value request."""
    for text in [*parse_qs(urlsplit(url).query).get("form_data", []), post_data]:
        try:
            document = json.loads(text or "")
        except ValueError:
            continue
        form = document.get("form_data", document) if isinstance(document, dict) else {}
        value = form.get("slice_id") if isinstance(form, dict) else None
        if value is not None:
            return int(value)
    return None


def _answer(status: int, body: Any) -> tuple[int | None, str | None]:
    """(rows, error) of a chart data answer."""
    if status >= 400:
        message = body.get("message") if isinstance(body, dict) else None
        errors = body.get("errors") if isinstance(body, dict) else None
        return None, f"HTTP {status}: {message or errors or body}"[:300]
    results = body.get("result") if isinstance(body, dict) else None
    if not isinstance(results, list):
        return None, "no result in the chart data answer"
    failed = [r.get("error") for r in results if r.get("error")]
    if failed:
        return None, str(failed[0])[:300]
    return sum(int(r.get("rowcount") or 0) for r in results), None


class SupersetBrowser:
    """A logged-in headless Chromium on a Superset; open dashboards, read their charts, apply a native filter."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self._answers: dict[int, tuple[int | None, str | None]] = {}
        page.on("response", self._on_response)

    def _on_response(self, response: Any) -> None:
        if "/api/v1/chart/data" not in response.url or response.request.method != "POST":
            return
        chart_id = _slice_id(response.url, response.request.post_data)
        if chart_id is None:
            return
        try:
            body = response.json()
        except Exception:  # an HTML error page, a closed connection
            body = None
        self._answers[chart_id] = _answer(response.status, body)

    def log_in(self, url: str, username: str, password: str, timeout_s: float = 120) -> None:
        """The login form, filled in as a person does. While it is on screen the page's event log is not sent:
        the login page posts it (anonymously) as it unloads on submit, Superset answers with a fresh anonymous
        session cookie, and when that answer comes after the login's the browser is logged out again (seen on a
        busy machine). Checked with /api/v1/me/, tried three times."""
        self.url = url.rstrip("/")
        event_log = f"{self.url}/superset/log/**"
        self.page.route(event_log, lambda route: route.abort())
        try:
            for _ in range(3):
                self.page.goto(f"{self.url}/login/", wait_until="networkidle", timeout=timeout_s * 1000)
                self.page.fill("#username", username)
                self.page.fill("#password", password)
                with self.page.expect_navigation(timeout=timeout_s * 1000):
                    self.page.click("[type=submit]")
                self.page.wait_for_load_state("networkidle", timeout=timeout_s * 1000)
                if self.logged_in():
                    return
            raise RuntimeError(f"could not stay logged in to {self.url} as {username}")
        finally:
            self.page.unroute(event_log)

    def logged_in(self) -> bool:
        return self.page.request.get(f"{self.url}/api/v1/me/").status == 200

    def chart_states(self) -> list[ChartState]:
        states = []
        for raw in self.page.evaluate(_CHART_STATES_JS):
            rows, request_error = self._answers.get(raw["id"], (None, None))
            states.append(
                ChartState(
                    chart_id=raw["id"],
                    name=raw["name"] or "",
                    viz_type=raw["viz"] or "",
                    rows=rows,
                    request_error=request_error,
                    screen_error=raw["error"],
                    big_number=raw["bigNumber"],
                    table_rows=raw["tableRows"],
                    drawn=raw["drawn"],
                    empty=raw["empty"],
                    loading=raw["loading"],
                )
            )
        return states

    def _settled(self, states: list[ChartState]) -> bool:
        """Every chart answered and is no longer loading; a chart with data has also drawn it."""
        if not states:
            return False
        for state in states:
            if state.loading or (state.rows is None and state.request_error is None):
                return False
            if state.rows and not state.error and not state.empty and not state.has_data:
                return False  # rows are back, the drawing is not done yet
        return True

    def wait_rendered(self, timeout_s: float = 90) -> list[ChartState]:
        deadline = time.monotonic() + timeout_s
        while True:
            states = self.chart_states()
            if self._settled(states):
                return states
            if time.monotonic() > deadline:
                pending = [s.describe() for s in states if s.loading or s.rows is None]
                raise RenderTimeout(f"charts still loading after {timeout_s:g} s: {'; '.join(pending) or 'none found'}")
            time.sleep(0.1)

    def open(self, slug: str, screenshot: Path | None = None, timeout_s: float = 90) -> DashboardRender:
        """Navigate to the dashboard and wait until every chart has rendered; the time is navigation to that."""
        self._answers.clear()
        clock = time.perf_counter()
        self.page.goto(f"{self.url}/superset/dashboard/{slug}/", wait_until="commit", timeout=timeout_s * 1000)
        if "/login/" in self.page.url:
            raise RuntimeError(f"{slug}: Superset sent the browser to its login form (the session was lost)")
        self.page.wait_for_selector('[data-test="chart-grid-component"]', timeout=timeout_s * 1000)
        states = self.wait_rendered(timeout_s)
        render = DashboardRender(slug=slug, seconds=time.perf_counter() - clock, charts=states)
        if screenshot is not None:
            render.charts = self.screenshot(screenshot, timeout_s)
            render.screenshot = screenshot
        return render

    def screenshot(self, path: Path, timeout_s: float = 90) -> list[ChartState]:
        """The viewport as a PNG (it holds a whole dashboard: a full-page capture resizes the page, and Superset
        lays its grid out again while it is taken); taken again if the charts were not all drawn at that moment.
        Returns the charts as they were in the picture."""
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            before = self.wait_rendered(timeout_s)
            self.page.screenshot(path=str(path), full_page=False)
            after = self.chart_states()
            if self._settled(after) and [c.has_data for c in after] == [c.has_data for c in before]:
                return after
            time.sleep(0.5)
        return self.wait_rendered(timeout_s)

    def screenshot_now(self, path: Path) -> None:
        """The page as it is, without waiting (for a failure's record)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path))

    def apply_filter(self, label: str, value: str, timeout_s: float = 90) -> list[ChartState]:
        """Choose `value` in the native filter named `label` (the filter bar), apply, and wait for the charts."""
        page = self.page
        control = page.locator('[data-test="form-item-value"]').filter(
            has=page.locator('[data-test="filter-control-name"]', has_text=label)
        )
        if control.count() == 0:
            control = page.locator(f'.ant-form-item:has([data-test="filter-control-name"]:text-is("{label}"))')
        control.first.locator(".ant-select-selector").click()
        page.keyboard.type(value)
        page.locator(f'.ant-select-dropdown:visible .ant-select-item-option[title="{value}"]').first.click()
        page.keyboard.press("Escape")
        self._answers.clear()
        page.locator('[data-test="filterbar-action-buttons"] button').first.click()
        time.sleep(0.3)
        return self.wait_rendered(timeout_s)


@contextmanager
def superset_browser(url: str, username: str, password: str, locale: str = "zh-CN") -> Iterator[SupersetBrowser]:
    """A logged-in SupersetBrowser on a fresh Chromium profile, closed at the end of the block."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        raise FileNotFoundError(f"{CHROMIUM} is missing: apt-get install chromium (never `playwright install`)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport=VIEWPORT, locale=locale)
            context.set_default_timeout(90_000)  # a busy 2-core machine: clicks and loads may take a while
            page = context.new_page()
            checker = SupersetBrowser(page)
            checker.log_in(url, username, password)
            yield checker
        finally:
            browser.close()
