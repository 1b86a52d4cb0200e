"""The one Dagster resource every yiwang asset shares: where things are and the run's parameters."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

from dagster import ConfigurableResource, InitResourceContext

from ingestion.pseudonym import Pseudonymiser
from ingestion.settings import Settings
from ingestion.warehouse import Warehouse
from orchestration.run_lock import run_lock
from thematic_libs.urban.classifier import AppealClassifier, ClassifierConfig
from thematic_libs.urban.model_store import ModelStore


class PlatformResource(ConfigurableResource):
    landing: str
    warehouse: str
    reports_dir: str
    key_file: str
    models_dir: str = ".yiwang/models"
    reject_share: float = 0.05
    as_of: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> PlatformResource:
        return cls(
            landing=str(settings.landing),
            warehouse=settings.warehouse,
            reports_dir=str(settings.reports_dir),
            key_file=str(settings.key_file),
            models_dir=str(settings.models_dir),
            reject_share=settings.reject_share,
            as_of=settings.as_of.isoformat() if settings.as_of else None,
        )

    @contextmanager
    def yield_for_execution(self, context: InitResourceContext) -> Iterator[PlatformResource]:
        """Hold the warehouse's run lock for the whole run (the platform job runs in process): a run started
        from the Dagster UI, a sensor or the schedule is one run at a time too (orchestration/run_lock.py)."""
        with run_lock(self.warehouse):
            yield self

    def get_warehouse(self) -> Warehouse:
        return Warehouse.at(self.warehouse)

    def landing_path(self) -> Path:
        return Path(self.landing)

    def as_of_date(self) -> date | None:
        return date.fromisoformat(self.as_of) if self.as_of else None

    def appeal_classifier(self) -> tuple[str, AppealClassifier]:
        """The promoted appeal-classifier version and its model (trained from the corpus on first use)."""
        return ModelStore(Path(self.models_dir)).promoted_classifier(ClassifierConfig.load())

    def pseudonymiser(self) -> Pseudonymiser:
        return Pseudonymiser.from_environment(default_key_file=Path(self.key_file))
