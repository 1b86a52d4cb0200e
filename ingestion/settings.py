"""Configuration as data: every setting has an environment variable and an embedded default.

The embedded default keeps everything under `.yiwang/` in the working directory: the demo landing
zone, the warehouse, the published DuckDB file, the reports, the open data and the locally generated keys.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

from ingestion.bronze import DEFAULT_REJECT_SHARE
from ingestion.warehouse import Warehouse

REPO_ROOT = Path(__file__).resolve().parent.parent
# The warehouse that dbt's wiring and the asset metadata read when YIWANG_WAREHOUSE is unset (runs export it).
DEFAULT_WAREHOUSE = REPO_ROOT / ".yiwang" / "warehouse"


@dataclass(frozen=True)
class Settings:
    home: Path
    landing: Path
    warehouse: str
    duckdb_path: Path
    reports_dir: Path
    key_file: Path
    models_dir: Path
    open_data_dir: Path
    reject_share: float = DEFAULT_REJECT_SHARE
    as_of: date | None = None

    @classmethod
    def from_env(cls) -> Settings:
        home = Path(os.environ.get("YIWANG_HOME", Path.cwd() / ".yiwang")).resolve()
        as_of = os.environ.get("YIWANG_AS_OF")
        return cls(
            home=home,
            landing=Path(os.environ.get("YIWANG_LANDING", home / "landing")),
            warehouse=os.environ.get("YIWANG_WAREHOUSE", str(home / "warehouse")),
            duckdb_path=Path(os.environ.get("YIWANG_DUCKDB", home / "yiwang.duckdb")),
            reports_dir=Path(os.environ.get("YIWANG_REPORTS", home / "reports")),
            key_file=Path(os.environ.get("YIWANG_PSEUDONYM_KEY_FILE", home / "secrets" / "pseudonym.key")),
            models_dir=Path(os.environ.get("YIWANG_MODELS", home / "models")),
            open_data_dir=Path(os.environ.get("YIWANG_OPEN_DATA", home / "open_data")),
            reject_share=float(os.environ.get("YIWANG_REJECT_SHARE", DEFAULT_REJECT_SHARE)),
            as_of=date.fromisoformat(as_of) if as_of else None,
        )

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def export(self) -> None:
        """Publish the settings to the environment, where dbt and Dagster's code locations read them."""
        os.environ["YIWANG_HOME"] = str(self.home)
        os.environ["YIWANG_LANDING"] = str(self.landing)
        os.environ["YIWANG_WAREHOUSE"] = self.warehouse
        os.environ["YIWANG_DUCKDB"] = str(self.duckdb_path)
        os.environ["YIWANG_REPORTS"] = str(self.reports_dir)
        os.environ["YIWANG_PSEUDONYM_KEY_FILE"] = str(self.key_file)
        os.environ["YIWANG_MODELS"] = str(self.models_dir)
        os.environ["YIWANG_OPEN_DATA"] = str(self.open_data_dir)
        os.environ["YIWANG_REJECT_SHARE"] = str(self.reject_share)
        if self.as_of:
            os.environ["YIWANG_AS_OF"] = self.as_of.isoformat()
        else:
            os.environ.pop("YIWANG_AS_OF", None)


def warehouse_root() -> str:
    """The warehouse root from YIWANG_WAREHOUSE, absolute (local) or without a trailing slash (s3://)."""
    return Warehouse.at(os.environ.get("YIWANG_WAREHOUSE") or DEFAULT_WAREHOUSE).root
