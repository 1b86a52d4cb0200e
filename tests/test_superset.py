"""Superset for analysts, end to end, with no mocks: the demo run's warehouse (plus a few share orders and calls,
made through the real sharing server) is published with `yiwang superset publish`; `yiwang superset start` sets up
a real Superset in its own environment on 127.0.0.1 and imports the asset bundle; importing twice changes nothing
and the export gives the repository's files back byte for byte; a changed file updates its chart in place and a
change made through Superset's API (what the UI's save calls) comes back with `yiwang superset export`; headless
Chromium logs in, opens the six dashboards, sees every chart render with data and none fail, applies a native
filter and sees the numbers change; screenshots go to test-artefacts/superset/ (ignored by git). The server is
stopped by its pid at the end, leaving nothing running."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ingestion.pseudonym import Pseudonymiser
from ingestion.warehouse import Warehouse
from orchestration.cli import app
from tests.conftest import DemoRun, platform_env
from thematic_libs.analytics.browser import CHROMIUM, superset_browser
from thematic_libs.analytics.bundle import BUNDLE_DIR, dump, normalise_export, read_bundle
from thematic_libs.analytics.superset_service import (
    ADMIN_USER,
    SupersetClient,
    SupersetPaths,
    ensure_secrets,
    free_port,
    is_our_server,
    needs_setup,
    port_open,
    read_state,
    run_setup,
)

REPO = Path(__file__).resolve().parent.parent
ARTEFACTS = REPO / "test-artefacts" / "superset"
YIWANG = Path(sys.executable).parent / "yiwang"
DASHBOARDS = ("tickets", "party", "enterprises", "emergency", "crosscheck", "quality-sharing")
TITLES = {"工单闭环考核", "民呼党应", "重点企业", "智慧应急", "社会救助核查", "数据质量与共享"}

needs_superset = pytest.mark.skipif(
    not SupersetPaths.for_home(REPO).gunicorn.exists(), reason="needs .venv-superset (make superset-setup)"
)


@dataclass
class Running:
    home: Path
    env: dict[str, str]
    url: str
    paths: SupersetPaths
    start_output: str

    def client(self) -> SupersetClient:
        return SupersetClient(self.url, ADMIN_USER, ensure_secrets(self.paths).admin_password)

    def yiwang(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [str(YIWANG), *args], env=self.env, cwd=self.home, capture_output=True, text=True, timeout=600
        )
        if check:
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done


def share_activity(warehouse: Warehouse, key_file: Path) -> None:
    """A few real share orders and calls, so that the sharing charts have data: two unconditional orders (approved
    on request), one conditional order waiting for its owner, and calls to the running sharing server, one of
    them refused."""
    from tests.share_kit import api, order_and_approve, running_server, share_state
    from thematic_libs.sharing.orders import request_order
    from thematic_libs.sharing.tokens import issue_token

    order_and_approve(warehouse, "zhengshu.grid_registry", "chengguan", ["grid_code", "grid_name"])
    order_and_approve(warehouse, "yingji.emergency_resources", "shuiwuju", ["resource_id", "name"])
    request_order(
        warehouse, dataset_id="gongan.household_registration", department="minzheng", columns=["household_id"],
        purpose="核对低保家庭户籍",
    )  # fmt: skip
    pseudonymiser = Pseudonymiser.from_environment(default_key_file=key_file)
    with running_server(share_state(warehouse, pseudonymiser), refresh_seconds=5) as server:
        token = issue_token(warehouse, "chengguan").token
        for _ in range(3):
            assert api(server, token, "GET", "/shares").status_code == 200
        assert api(server, "ysh_000000000000_" + "A" * 43, "GET", "/shares").status_code == 401


@pytest.fixture(scope="module")
def running(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    home = tmp_path_factory.mktemp("superset") / "home"
    home.mkdir()
    paths = SupersetPaths.for_home(home)
    # Superset's first setup (about 30 s) runs while the session's demo warehouse is built, if it is not yet.
    setup_error: list[BaseException] = []

    def setup() -> None:
        try:
            run_setup(paths, ensure_secrets(paths))
        except BaseException as error:  # re-raised in the test's thread below
            setup_error.append(error)

    preparing = threading.Thread(target=setup, name="superset-setup")
    preparing.start()
    try:
        demo: DemoRun = request.getfixturevalue("demo_run")
        shutil.copytree(demo.warehouse, home / "warehouse")
        shutil.copytree(demo.home / "secrets", home / "secrets")
        share_activity(Warehouse.at(home / "warehouse"), home / "secrets" / "pseudonym.key")
    finally:
        preparing.join()
    env = platform_env(home, PYTHONUNBUFFERED="1", COLUMNS="200")
    for name in ("DAGSTER_HOME", "YIWANG_WAREHOUSE", "YIWANG_DUCKDB", "YIWANG_LANDING", "YIWANG_AS_OF"):
        env.pop(name, None)
    if setup_error:
        raise setup_error[0]
    port = free_port()
    state = Running(home=home, env=env, url=f"http://127.0.0.1:{port}", paths=paths, start_output="")
    state.yiwang("superset", "publish")
    assert not needs_setup(paths, ensure_secrets(paths))
    started = state.yiwang("superset", "start", "--port", str(port))
    state.start_output = started.stdout
    server = read_state(paths)
    assert server is not None and server.port == port
    try:
        yield state
    finally:
        stopped = state.yiwang("superset", "stop", check=False)
        assert stopped.returncode == 0 and "Superset stopped" in stopped.stdout, stopped.stdout + stopped.stderr
        assert not is_our_server(server) and not port_open(port)


@pytest.mark.slow
@needs_superset
def test_start_reports_one_line_per_step_and_serves_on_loopback(running: Running):
    lines = [line for line in running.start_output.splitlines() if line.strip()]
    assert len(lines) == 3, lines  # started, imported, where to log in
    assert lines[0].startswith(f"Superset on {running.url} (pid ")
    assert lines[1].startswith("imported 6 dashboards and 47 charts")
    assert "as admin, password in" in lines[2] and str(running.home / "logs" / "superset.log") in lines[2]
    assert (running.paths.state_dir / "admin_password").stat().st_mode & 0o777 == 0o600
    assert (running.paths.state_dir / "secret_key").stat().st_mode & 0o777 == 0o600
    server = read_state(running.paths)
    cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().split(b"\0")
    assert f"127.0.0.1:{server.port}".encode() in cmdline
    status = running.yiwang("superset", "status")
    assert f"Superset on {running.url} pid {server.pid}" in status.stdout and "healthy" in status.stdout


@pytest.mark.slow
@needs_superset
def test_import_twice_changes_nothing_and_exports_the_repository_files(running: Running):
    client = running.client()
    before = {kind: client.all_ids(kind) for kind in ("dashboard", "chart", "dataset")}
    assert (len(before["dashboard"]), len(before["chart"]), len(before["dataset"])) == (6, 47, 18)
    running.yiwang("superset", "import")
    after = {kind: client.all_ids(kind) for kind in ("dashboard", "chart", "dataset")}
    assert after == before  # same objects, same ids: updated in place, nothing added
    exported = normalise_export(client.export_assets())
    assert exported == read_bundle(BUNDLE_DIR)  # the round trip gives the committed bytes back
    check = running.yiwang("superset", "export", "--check")
    assert "matches Superset (73 files)" in check.stdout
    dashboards = client.get("/api/v1/dashboard/", q="(columns:!(dashboard_title,slug),page_size:100)")["result"]
    assert {d["dashboard_title"] for d in dashboards} == TITLES
    assert {d["slug"] for d in dashboards} == set(DASHBOARDS)
    with zipfile.ZipFile(io.BytesIO(client.export_assets())) as archive:
        databases = [yaml.safe_load(archive.read(n)) for n in archive.namelist() if "/databases/" in n]
    published = running.home / "analytics" / "yiwang_gold.duckdb"
    assert [d["sqlalchemy_uri"] for d in databases] == [f"duckdb:///{published}"]  # the path written in at import
    assert databases[0]["extra"]["engine_params"]["connect_args"] == {
        "read_only": True,
        "config": {"enable_external_access": False},
    }


@pytest.mark.slow
@needs_superset
def test_a_changed_file_updates_in_place_and_a_ui_change_exports_back(running: Running, tmp_path: Path):
    client = running.client()
    ids = client.all_ids("chart")
    folder = tmp_path / "bundle"
    shutil.copytree(BUNDLE_DIR, folder)
    chart_file = next(p for p in sorted((folder / "charts").glob("ticket_kpis_*.yaml")) if "工单总数" in p.read_text())
    chart = yaml.safe_load(chart_file.read_text(encoding="utf-8"))
    chart["slice_name"] = "工单总数（改）"
    chart_file.write_text(dump(chart), encoding="utf-8")
    running.yiwang("superset", "import", "--folder", str(folder))
    assert client.all_ids("chart") == ids  # the same chart, updated: no new one
    chart_id = ids[chart["uuid"]]
    assert client.get(f"/api/v1/chart/{chart_id}")["result"]["slice_name"] == "工单总数（改）"

    # an analyst edits a chart in the UI (the UI saves through this endpoint), then exports back
    response = client.session.put(
        f"{client.url}/api/v1/chart/{chart_id}", json={"description": "Tickets created, all sources."}, timeout=60
    )
    assert response.status_code == 200, response.text
    exported = running.yiwang("superset", "export", "--folder", str(folder))
    assert f"changed charts/{chart_file.name}" in exported.stdout
    assert "wrote 1 and removed 0 file(s)" in exported.stdout
    assert yaml.safe_load(chart_file.read_text(encoding="utf-8"))["description"] == "Tickets created, all sources."
    differ = {n for n, text in read_bundle(folder).items() if read_bundle(BUNDLE_DIR).get(n) != text}
    assert differ == {f"charts/{chart_file.name}"}

    # the repository's bundle puts everything back as it was
    running.yiwang("superset", "import")
    assert normalise_export(client.export_assets()) == read_bundle(BUNDLE_DIR)


@pytest.mark.slow
@needs_superset
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt install chromium)")
def test_every_dashboard_renders_with_data_and_a_filter_changes_the_numbers(running: Running):
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    password = ensure_secrets(running.paths).admin_password
    with superset_browser(running.url, ADMIN_USER, password) as browser:
        renders = {slug: browser.open(slug, screenshot=ARTEFACTS / f"{slug}.png") for slug in DASHBOARDS}
        for slug, render in renders.items():
            assert render.charts, f"{slug}: no chart on the page"
            assert not render.problems, f"{slug}: {render.problems}"
        assert sum(len(r.charts) for r in renders.values()) == 47

        # one native filter: the street filter of the ticket dashboard
        browser.open("tickets")
        before = browser.chart_states()
        after = browser.apply_filter("街道/镇", "桂城街道")
        browser.screenshot(ARTEFACTS / "tickets-filtered.png")
    by_name = {c.name: c for c in after}
    assert not [c.describe() for c in after if not c.has_data]
    total_before = next(c for c in before if c.name == "工单总数").big_number
    total_after = by_name["工单总数"].big_number
    assert total_before and total_after and total_after != total_before, (total_before, total_after)
    assert int(total_after.replace(",", "")) < int(total_before.replace(",", ""))
    # a department-level chart has no street: the filter does not apply to it (and it does not fail)
    ranking_before = next(c for c in before if c.name == "一月一排名")
    assert by_name["一月一排名"].rows == ranking_before.rows
    for slug in DASHBOARDS:
        assert (ARTEFACTS / f"{slug}.png").stat().st_size > 100_000  # a blank grid is about 50 kB


# --- refusals: one red line, the right exit code, no traceback ---------------------------------------------------


def refused(args: list[str], code: int, env: dict[str, str | None], *words: str) -> None:
    result = CliRunner().invoke(app, args, prog_name="yiwang", env=env)
    assert result.exit_code == code, (args, result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.stderr)
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[0], (args, lines[0])


def test_superset_commands_refuse_in_one_line(tmp_path: Path):
    env = {"YIWANG_HOME": str(tmp_path / "home"), "YIWANG_WAREHOUSE": None, "COLUMNS": "200"}
    refused(["superset", "start", "--port", "80"], 2, env, "--port 80", "1024")
    refused(["superset", "export"], 2, env, "not running", "yiwang superset start")
    refused(["superset", "import"], 2, env, "not running")
    refused(["superset", "import", "--folder", str(tmp_path / "nowhere")], 2, env, "does not exist", "metadata.yaml")
    refused(["superset", "publish"], 2, env, "does not exist", "yiwang run")
    refused(["superset", "start", "--port", "18088"], 2, env, "does not exist", "yiwang run")
    missing = {**env, "YIWANG_SUPERSET_VENV": str(tmp_path / "no-venv")}
    refused(["superset", "start", "--no-import", "--port", "18088"], 2, missing, "make superset-setup")
    status = CliRunner().invoke(app, ["superset", "status"], prog_name="yiwang", env=env)
    assert status.exit_code == 1 and "Superset is not running" in status.output
    stop = CliRunner().invoke(app, ["superset", "stop"], prog_name="yiwang", env=env)
    assert stop.exit_code == 0 and "Superset was not running" in stop.output
