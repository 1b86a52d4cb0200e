from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from stdnum.cn import ric

from ingestion.pseudonym import Pseudonymiser
from ingestion.warehouse import Warehouse


def pytest_configure(config: pytest.Config) -> None:
    """The suite never reads the developer's own settings: every test names its home, warehouse and files."""
    for name in [n for n in os.environ if n.startswith("YIWANG_")]:
        del os.environ[name]


@contextmanager
def environment_kept() -> Iterator[None]:
    """Whatever runs inside leaves os.environ as it found it.

    An in-process `yiwang run` or `build_definitions()` publishes its settings to os.environ for dbt and Dagster
    (Settings.export); without this, later tests' runs would read that test's DuckDB file and reports folder."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def platform_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment for a `yiwang` subprocess with its own home: every other YIWANG_ setting left out."""
    kept = {name: value for name, value in os.environ.items() if not name.startswith("YIWANG_")}
    return {**kept, "YIWANG_HOME": str(home), **extra}


@pytest.fixture(autouse=True)
def _environment_restored() -> Iterator[None]:
    """Per test, after the module and session fixtures (whose environment their tests share) are set up."""
    with environment_kept():
        yield


def resident_id(i: int, year: int = 1980) -> str:
    body = f"440605{year + i % 30}{1 + i % 12:02d}{1 + i % 28:02d}{i % 1000:03d}"
    return body + ric.calc_check_digit(body + "0")


def person(i: int, **changes: object) -> dict:
    row = {
        "id_number": resident_id(i),
        "name": f"居民{i}",
        "gender": "1" if i % 2 else "2",
        "birth_date": None,
        "household_id": f"H{i // 3:05d}",
        "relation_to_head": "head",
        "address": "南海区桂城街道",
        "division_code": "440605001001",
        "status": "normal",
        "status_date": None,
        "updated_at": "2026-11-01T02:00:00+08:00",
    }
    ident = row["id_number"]
    row["birth_date"] = f"{ident[6:10]}-{ident[10:12]}-{ident[12:14]}"
    row.update(changes)
    return row


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    return tmp_path / "landing"


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    return Warehouse.at(tmp_path / "warehouse")


@pytest.fixture
def pseudonymiser() -> Pseudonymiser:
    return Pseudonymiser(secrets.token_bytes(32))


@dataclass(frozen=True)
class DemoRun:
    """A warehouse `yiwang run` built from a small demo landing zone, with its home (published file included)."""

    root: Path
    home: Path
    landing: Path
    as_of: str
    output: str  # the run's terminal output (stdout)
    errors: str  # its stderr

    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse"

    def settings(self) -> dict[str, str]:
        """What another run on the same landing zone sets to build the same rows (the pseudonym key included)."""
        return {"YIWANG_PSEUDONYM_KEY": DEMO_RUN_KEY.hex(), "YIWANG_AS_OF": self.as_of}


# Seed 3 at this scale: its planted defects quarantine no party organisation that has branches below it
# (an orphaned branch fails the org tree's relationship test in dbt, and dbt then skips the party marts).
DEMO_RUN_SCALE, DEMO_RUN_SEED = 0.05, 3
# A fixed key: tests that compare another run's pseudonymised rows with this run's use the same one.
DEMO_RUN_KEY = b"demo-run-test-key-0123456789abcd"


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """`make run` on a small demo: `yiwang run` in a subprocess on the embedded default (a home whose landing zone
    holds demo data: 1,000 residents), built once per session for the end-to-end test and the tests that read what
    a run makes (the thematic notebook, the published warehouse, Superset, the incremental and determinism tests).
    Read it; a test that writes copies what it needs first."""
    import subprocess
    import sys

    from demo_data import generate_landing_zone

    root = tmp_path_factory.mktemp("demo_run")
    home = root / "home"
    summary = generate_landing_zone(home / "landing", scale=DEMO_RUN_SCALE, seed=DEMO_RUN_SEED, progress=False)
    as_of = summary.as_of.isoformat()
    # the key file `make run` would generate on first use, with a known key (other runs compare rows with it)
    key_file = home / "secrets" / "pseudonym.key"
    key_file.parent.mkdir()
    key_file.write_text(DEMO_RUN_KEY.hex(), encoding="ascii")
    key_file.chmod(0o600)
    env = platform_env(home, PYTHONUNBUFFERED="1", YIWANG_AS_OF=as_of)
    env.pop("DAGSTER_HOME", None)
    yiwang = Path(sys.executable).parent / "yiwang"
    done = subprocess.run([str(yiwang), "run"], env=env, cwd=root, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return DemoRun(root=root, home=home, landing=home / "landing", as_of=as_of, output=done.stdout, errors=done.stderr)
