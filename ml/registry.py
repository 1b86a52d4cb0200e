"""The algorithm warehouse (算法仓) on MLflow's model registry.

One registered model per algorithm, `yiwang-<algorithm>`; every training that is registered becomes a version
that carries its weights (the model core's own save format, logged as an artifact of the version's run, so that
loading needs nothing but `ml.models` with the torchvision shim, never a pickle of torchvision classes) and, as
version tags, what a person or the scorer needs to judge it: classes, input size, the training data's
fingerprint, mAP@0.5 on the held-out set (and on the shifted set when measured), epochs, training seconds and
when it was made. The same figures go to the version's MLflow run as params and metrics, for MLflow's own tools.

The alias `production` names the version that scoring uses (`load_production`). Moving it is `promote`, which
refuses a version whose held-out mAP@0.5 is below the current production's unless a reason is given; who moved it,
when, and the reason are tags of the version promoted.

Where it lives: `MLFLOW_TRACKING_URI` (a tracking server) when set, else a SQLite store
`sqlite:///<warehouse parent or YIWANG_HOME>/ml/mlflow.db` with a `file://` artifact root `ml/artifacts` beside it.
MLflow's log lines go to `<home>/logs/ml.log`, never to the terminal.

The registry is also a catalog entry: after every change (register, promote, record_evaluation) one row per model
version is written to the Delta table `gold/ml/algorithms` (overwritten whole from the registry, so a failed
export is repaired by the next change, or by `export()`).
"""

from __future__ import annotations

import getpass
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ingestion.keys import CST

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from ingestion.settings import Settings
    from ingestion.warehouse import Warehouse

__all__ = [
    "ALGORITHMS_TABLE",
    "PRODUCTION_ALIAS",
    "ModelRegistry",
    "ModelVersionInfo",
    "RegistryError",
    "algorithms_table",
    "default_tracking_uri",
]

PRODUCTION_ALIAS = "production"
MODEL_PREFIX = "yiwang-"
ALGORITHMS_TABLE = "gold/ml/algorithms"
WEIGHTS_ARTIFACT = "weights"
# MLflow's loggers (and those of the libraries it drives) that would otherwise print to the terminal.
MLFLOW_LOGGERS = ("mlflow", "alembic", "sqlalchemy.engine", "huey")

# Version tags the registry itself writes; everything else a caller passes in `params` goes to the run only.
TAG_ALGORITHM = "algorithm"
TAG_CLASSES = "classes"
TAG_INPUT_SIZE = "input_size"
TAG_FINGERPRINT = "data_fingerprint"
TAG_MAP = "map_50"
TAG_MAP_SHIFTED = "map_50_shifted"
TAG_EPOCHS = "epochs"
TAG_SECONDS = "training_seconds"
TAG_CREATED = "created_at"
TAG_PROMOTED_AT = "promoted_at"
TAG_PROMOTED_BY = "promoted_by"
TAG_FORCE_REASON = "force_reason"
TAG_FORCED_OVER = "forced_over_version"
TAG_PER_CLASS = "ap_50_per_class"
TAG_EVALUATED_AT = "evaluated_at"
TAG_EVALUATION_PREFIX = "evaluation."
# Which held-out and shifted sets the figures were measured on (params of `register`, kept as tags).
TAG_HELDOUT_FINGERPRINT = "heldout_fingerprint"
TAG_SHIFTED_FINGERPRINT = "shifted_fingerprint"
# The version a run was trained further from (`yiwang ml train --start-from`), kept as a tag: a version's lineage.
TAG_STARTED_FROM = "started_from_version"

ALGORITHMS_SCHEMA = pa.schema(
    [
        pa.field("algorithm", pa.string(), nullable=False),
        pa.field("algorithm_label", pa.string()),
        pa.field("version", pa.int64(), nullable=False),
        pa.field("classes", pa.list_(pa.string())),
        pa.field("input_size", pa.int64()),
        pa.field("map_50", pa.float64()),
        pa.field("map_50_shifted", pa.float64()),
        pa.field("is_production", pa.bool_(), nullable=False),
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("data_fingerprint", pa.string()),
    ]
)

log = logging.getLogger(__name__)


class RegistryError(ValueError):
    """Something a user asked for that the registry cannot do; the message is one line that says what to do."""


@dataclass(frozen=True)
class ModelVersionInfo:
    """One registered version as people and the scorer see it (read off the version's tags)."""

    algorithm: str
    version: int
    classes: tuple[str, ...]
    input_size: int | None
    data_fingerprint: str
    map_50: float | None
    map_50_shifted: float | None
    epochs: int | None
    training_seconds: float | None
    created_at: datetime  # UTC
    is_production: bool
    run_id: str | None
    source: str  # the artifact URI of the weights folder
    tags: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def model_name(self) -> str:
        return model_name(self.algorithm)

    @property
    def uri(self) -> str:
        """`models:/yiwang-<algorithm>/<version>`, what MLflow's tools accept."""
        return f"models:/{self.model_name}/{self.version}"

    @property
    def created_at_cst(self) -> datetime:
        return self.created_at.astimezone(CST)

    @property
    def promoted_at(self) -> datetime | None:
        return _parse_time(self.tags.get(TAG_PROMOTED_AT))

    @property
    def promoted_by(self) -> str | None:
        return self.tags.get(TAG_PROMOTED_BY)

    @property
    def force_reason(self) -> str | None:
        return self.tags.get(TAG_FORCE_REASON)

    @property
    def ap_per_class(self) -> dict[str, float]:
        text = self.tags.get(TAG_PER_CLASS)
        return {str(k): float(v) for k, v in json.loads(text).items()} if text else {}

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, times in China Standard Time (what `yiwang ml list --format json` prints)."""
        promoted = self.promoted_at
        return {
            "algorithm": self.algorithm,
            "version": self.version,
            "is_production": self.is_production,
            "classes": list(self.classes),
            "input_size": self.input_size,
            "map_50": self.map_50,
            "map_50_shifted": self.map_50_shifted,
            "ap_50_per_class": self.ap_per_class,
            "epochs": self.epochs,
            "training_seconds": self.training_seconds,
            "data_fingerprint": self.data_fingerprint,
            "created_at": self.created_at_cst.isoformat(timespec="seconds"),
            "promoted_at": promoted.astimezone(CST).isoformat(timespec="seconds") if promoted else None,
            "promoted_by": self.promoted_by,
            "force_reason": self.force_reason,
            "run_id": self.run_id,
            "uri": self.uri,
        }


def model_name(algorithm: str) -> str:
    return f"{MODEL_PREFIX}{algorithm}"


# --- where the registry lives ----------------------------------------------------------------------------------


def registry_folder(settings: Settings) -> Path:
    """`<warehouse parent>/ml` for a local warehouse (the store sits beside the data), else `<YIWANG_HOME>/ml`."""
    if "://" in settings.warehouse:
        return settings.home / "ml"
    return Path(settings.warehouse).resolve().parent / "ml"


def default_tracking_uri(settings: Settings) -> str:
    """`MLFLOW_TRACKING_URI` when set (a tracking server in production), else the local SQLite store."""
    configured = os.environ.get("MLFLOW_TRACKING_URI")
    if configured:
        return configured
    return f"sqlite:///{registry_folder(settings) / 'mlflow.db'}"


def _local_artifact_root(tracking_uri: str) -> str | None:
    """The `file://` artifact root beside a SQLite store; None for a server (it decides where artifacts go)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    return (database.parent / "artifacts").resolve().as_uri()


def _import_mlflow(log_file: Path | None) -> type[MlflowClient]:
    """Import MLflow quietly: no telemetry, no progress bars, its log lines to `log_file` (or nowhere).

    MLflow puts a stderr handler on its loggers when it is imported; those handlers are replaced here, every
    time, since another module may have imported it first.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow import MlflowClient

    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(log_file, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    else:
        handler = logging.NullHandler()
    for name in MLFLOW_LOGGERS:
        logger = logging.getLogger(name)
        for old in logger.handlers:
            if isinstance(old, logging.FileHandler) and old is not handler:
                old.close()
        logger.handlers = [handler]
        logger.propagate = False
    return MlflowClient


# --- the algorithms the model core defines -------------------------------------------------------------------


def _algorithm_names() -> tuple[str, ...]:
    from ml.algorithms import load_algorithms

    return tuple(load_algorithms())


def _algorithm_label(algorithm: str) -> str | None:
    from ml.algorithms import load_algorithms

    spec = load_algorithms().get(algorithm)
    return spec.title_zh if spec is not None else None


def _load_detector(folder: Path, version: int) -> Any:
    """The scorer's `Detector` over a saved model folder (`ml.models` imports the torchvision shim first)."""
    from ml.score import Detector

    return Detector.load(folder, version=str(version))


# --- tag helpers -----------------------------------------------------------------------------------------------


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _time_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def _parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text).astimezone(UTC) if text else None


def _number(value: object) -> float | None:
    """A figure from a tag or a caller: None when missing or not a finite number (NaN is 'not measured')."""
    if value is None or value == "":
        return None
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else None


def _integer(value: object) -> int | None:
    number = _number(value)
    return int(number) if number is not None else None


def _figure_text(value: float) -> str:
    return repr(float(value))


def _info(version: ModelVersion, production: int | None) -> ModelVersionInfo:
    tags = dict(version.tags or {})
    created = _parse_time(tags.get(TAG_CREATED)) or datetime.fromtimestamp(version.creation_timestamp / 1000, UTC)
    algorithm = tags.get(TAG_ALGORITHM) or version.name.removeprefix(MODEL_PREFIX)
    number = int(version.version)
    return ModelVersionInfo(
        algorithm=algorithm,
        version=number,
        classes=tuple(json.loads(tags[TAG_CLASSES])) if tags.get(TAG_CLASSES) else (),
        input_size=_integer(tags.get(TAG_INPUT_SIZE)),
        data_fingerprint=tags.get(TAG_FINGERPRINT, ""),
        map_50=_number(tags.get(TAG_MAP)),
        map_50_shifted=_number(tags.get(TAG_MAP_SHIFTED)),
        epochs=_integer(tags.get(TAG_EPOCHS)),
        training_seconds=_number(tags.get(TAG_SECONDS)),
        created_at=created,
        is_production=production == number,
        run_id=version.run_id,
        source=version.source,
        tags=tags,
    )


def _is_missing(error: Exception) -> bool:
    return getattr(error, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


# --- the registry ----------------------------------------------------------------------------------------------


class ModelRegistry:
    """The algorithm warehouse: MLflow's registry plus the `gold/ml/algorithms` export.

    `ModelRegistry(tracking_uri)` talks to any MLflow store; `from_settings()` is what the CLI and the scorer use
    (the store beside the warehouse, the export into it, MLflow's log lines to `<home>/logs/ml.log`).
    """

    def __init__(
        self,
        tracking_uri: str,
        *,
        artifact_root: str | None = None,
        warehouse: Warehouse | None = None,
        log_file: Path | None = None,
    ) -> None:
        if tracking_uri.startswith("sqlite:///"):
            Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        client_class = _import_mlflow(log_file)
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root or _local_artifact_root(tracking_uri)
        self.warehouse = warehouse
        self.client: MlflowClient = client_class(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    @classmethod
    def from_settings(cls, settings: Settings | None = None, *, tracking_uri: str | None = None) -> ModelRegistry:
        from ingestion.settings import Settings
        from ingestion.warehouse import Warehouse

        settings = settings or Settings.from_env()
        return cls(
            tracking_uri or default_tracking_uri(settings),
            warehouse=Warehouse.at(settings.warehouse),
            log_file=settings.home / "logs" / "ml.log",
        )

    # -- reading --------------------------------------------------------------------------------------------

    def algorithms(self) -> tuple[str, ...]:
        """The algorithms the model core defines (ml/algorithms.yaml), registered or not."""
        return _algorithm_names()

    def versions(self, algorithm: str | None = None) -> list[ModelVersionInfo]:
        """Every version of one algorithm (or of all), by algorithm then version number."""
        names = [self._checked(algorithm)] if algorithm else self._registered_algorithms()
        found: list[ModelVersionInfo] = []
        for name in names:
            production = self._production_number(name)
            versions = self.client.search_model_versions(f"name = '{model_name(name)}'")
            found += [_info(v, production) for v in versions]
        return sorted(found, key=lambda info: (info.algorithm, info.version))

    def version(self, algorithm: str, version: int) -> ModelVersionInfo:
        """One version; RegistryError when the algorithm has no such version."""
        self._checked(algorithm)
        return _info(self._model_version(algorithm, version), self._production_number(algorithm))

    def production(self, algorithm: str) -> ModelVersionInfo | None:
        """The version the `production` alias names, or None before the first promotion."""
        self._checked(algorithm)
        number = self._production_number(algorithm)
        return None if number is None else _info(self._model_version(algorithm, number), number)

    def load_production(self, algorithm: str) -> tuple[Any, ModelVersionInfo]:
        """The production version's `Detector` and which version it is: what scoring uses, always by the alias."""
        info = self.production(algorithm)
        if info is None:
            raise RegistryError(
                f"{algorithm} has no production version yet: run `yiwang ml train --algorithm {algorithm}` "
                f"or `yiwang ml promote {algorithm} VERSION`"
            )
        with self.weights_of(info) as folder:
            detector = _load_detector(folder, info.version)
        log.info("loaded %s version %s (production) from %s", info.model_name, info.version, info.source)
        return detector, info

    @contextmanager
    def weights_of(self, info: ModelVersionInfo) -> Iterator[Path]:
        """The saved model folder of a version (`model.pt` + `model.json`) on local disk while the `with` lasts.

        Artifacts are downloaded into a temporary folder (a copy, also for a `file://` store), so that nothing
        the caller does with the files can change the registry.
        """
        import mlflow.artifacts

        scratch = tempfile.mkdtemp(prefix="yiwang-weights-")
        try:
            folder = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=info.source, dst_path=scratch, tracking_uri=self.tracking_uri
                )
            )
            yield folder
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    # -- changing -------------------------------------------------------------------------------------------

    def register(
        self,
        algorithm: str,
        weights_path: str | Path,
        *,
        metrics: Mapping[str, float],
        params: Mapping[str, object],
        data_fingerprint: str,
        losses: Sequence[float] = (),
        per_class: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> ModelVersionInfo:
        """Log a training as an MLflow run (saved model, params, metrics, loss curve) and register it as a version.

        `weights_path` is a saved model (`model.pt`, or its folder, with `model.json` beside it, as
        `ml.models.save_model` writes them); its classes and input size come from `model.json`. `params` holds the
        run's settings (`epochs`, `images`, `seed`, ...), `metrics` the figures: `map_50` (held-out), optionally
        `map_50_shifted`, `training_seconds`, anything else worth keeping on the run. `losses` is the loss per epoch,
        `per_class` the held-out AP@0.5 of each class, `tags` more version tags (e.g. the package a version came from).
        """
        self._checked(algorithm)
        files = _saved_model_files(Path(weights_path))
        saved = json.loads(files[1].read_text(encoding="utf-8"))
        if saved.get("algorithm") != algorithm:
            raise RegistryError(
                f"{files[0]} is a model for {saved.get('algorithm')!r}, not {algorithm!r}: register it under that name"
            )
        name = model_name(algorithm)
        version_tags = {**(tags or {}), **_version_tags(algorithm, saved, metrics, params, data_fingerprint)}
        if per_class:
            version_tags[TAG_PER_CLASS] = _per_class_text(per_class)
        run_id = self._log_run(algorithm, files, metrics, params, version_tags, losses)
        self._ensure_model(algorithm)
        source = f"{self.client.get_run(run_id).info.artifact_uri}/{WEIGHTS_ARTIFACT}"
        created = self.client.create_model_version(name, source=source, run_id=run_id, tags=version_tags)
        info = _info(created, self._production_number(algorithm))
        log.info("registered %s version %s from run %s", name, info.version, run_id)
        self.export()
        return info

    def promote(
        self, algorithm: str, version: int, *, force_reason: str | None = None, by: str | None = None
    ) -> ModelVersionInfo:
        """Point `production` at `version`, unless its held-out mAP@0.5 is below production's and no reason is given.

        A version with no held-out figure counts as worse than a production that has one. The version promoted gets
        tags `promoted_at` (UTC), `promoted_by` (`by`, else the operating-system user) and, when forced,
        `force_reason` and `forced_over_version`.
        """
        candidate = self.version(algorithm, version)
        current = self.production(algorithm)
        if current is not None and current.version == candidate.version:
            return candidate
        reason = force_reason.strip() if force_reason is not None else None
        if force_reason is not None and not reason:
            raise RegistryError("--force-reason is empty: say why this version must go to production anyway")
        worse = _worse_than(candidate, current)
        if worse and not reason:
            raise RegistryError(worse)
        name = model_name(algorithm)
        self.client.set_model_version_tag(name, str(version), TAG_PROMOTED_AT, _time_text(_utc_now()))
        self.client.set_model_version_tag(name, str(version), TAG_PROMOTED_BY, by or _current_user())
        if worse and reason:
            assert current is not None
            self.client.set_model_version_tag(name, str(version), TAG_FORCE_REASON, reason)
            self.client.set_model_version_tag(name, str(version), TAG_FORCED_OVER, str(current.version))
        self.client.set_registered_model_alias(name, PRODUCTION_ALIAS, str(version))
        log.info("promoted %s version %s%s", name, version, f" (forced: {reason})" if worse else "")
        self.export()
        return self.version(algorithm, version)

    def record_evaluation(
        self,
        algorithm: str,
        version: int,
        metrics: Mapping[str, float],
        *,
        per_class: Mapping[str, float] | None = None,
        dataset: str | None = None,
        sets: Mapping[str, str] | None = None,
    ) -> ModelVersionInfo:
        """Record a new measurement of a version, so that `list` and `promote` use the latest figures.

        On the standard sets (`dataset` None), `map_50` / `map_50_shifted` and the per-class AP replace the version's
        held-out figures. On another set (`dataset`: its fingerprint), they are kept apart, as the tag
        `evaluation.<fingerprint[:12]>` and metrics `evaluation.<fingerprint[:12]>.<name>`: a figure on some other
        data must not decide a promotion. `sets` names the standard sets measured on (`heldout_fingerprint`,
        `shifted_fingerprint`). Every figure is also a metric of the version's run.
        """
        existing = self.version(algorithm, version)
        name, number = model_name(algorithm), str(version)
        now = _time_text(_utc_now())
        figures = {key: value for key, value in ((k, _number(v)) for k, v in metrics.items()) if value is not None}
        if dataset:
            key = f"{TAG_EVALUATION_PREFIX}{dataset[:12]}"
            record = {"dataset": dataset, "metrics": figures, "per_class": dict(per_class or {}), "at": now}
            self.client.set_model_version_tag(name, number, key, json.dumps(record, ensure_ascii=False)[:5000])
            figures = {f"{key}.{metric}": value for metric, value in figures.items()}
        else:
            for key in (TAG_MAP, TAG_MAP_SHIFTED):
                if key in figures:
                    self.client.set_model_version_tag(name, number, key, _figure_text(figures[key]))
            if per_class:
                self.client.set_model_version_tag(name, number, TAG_PER_CLASS, _per_class_text(per_class))
            for key in (TAG_HELDOUT_FINGERPRINT, TAG_SHIFTED_FINGERPRINT, TAG_STARTED_FROM):
                if sets and sets.get(key):
                    self.client.set_model_version_tag(name, number, key, sets[key])
            self.client.set_model_version_tag(name, number, TAG_EVALUATED_AT, now)
        if existing.run_id:
            self._log_metrics(existing.run_id, figures)
        self.export()
        return self.version(algorithm, version)

    def export(self) -> int:
        """Rewrite `gold/ml/algorithms` from the registry (one row per version); returns the number of rows."""
        if self.warehouse is None:
            return 0
        from deltalake import write_deltalake

        table = algorithms_table(self.versions())
        write_deltalake(
            self.warehouse.uri(ALGORITHMS_TABLE),
            table,
            mode="overwrite",
            schema_mode="overwrite",
            storage_options=self.warehouse.options(),
        )
        return table.num_rows

    # -- internals ------------------------------------------------------------------------------------------

    def _checked(self, algorithm: str) -> str:
        known = _algorithm_names()
        if algorithm not in known:
            raise RegistryError(f"unknown algorithm {algorithm!r}: use one of {', '.join(known)} (ml/algorithms.yaml)")
        return algorithm

    def _registered_algorithms(self) -> list[str]:
        """Registered `yiwang-*` models, paged (MLflow returns at most 100 per call)."""
        names: list[str] = []
        token: str | None = None
        while True:
            page = self.client.search_registered_models(f"name LIKE '{MODEL_PREFIX}%'", page_token=token)
            names += [m.name.removeprefix(MODEL_PREFIX) for m in page]
            token = page.token
            if not token:
                return sorted(names)

    def _production_number(self, algorithm: str) -> int | None:
        try:
            aliases = self.client.get_registered_model(model_name(algorithm)).aliases
        except Exception as error:
            if _is_missing(error):
                return None
            raise
        number = (aliases or {}).get(PRODUCTION_ALIAS)
        return int(number) if number is not None else None

    def _model_version(self, algorithm: str, version: int) -> ModelVersion:
        try:
            return self.client.get_model_version(model_name(algorithm), str(int(version)))
        except Exception as error:
            if _is_missing(error):
                raise RegistryError(
                    f"{algorithm} has no version {version}: `yiwang ml list --algorithm {algorithm}` lists its versions"
                ) from None
            raise

    def _ensure_model(self, algorithm: str) -> None:
        name = model_name(algorithm)
        try:
            self.client.get_registered_model(name)
        except Exception as error:
            if not _is_missing(error):
                raise
            label = _algorithm_label(algorithm) or algorithm
            self.client.create_registered_model(
                name, tags={TAG_ALGORITHM: algorithm}, description=f"{label}: yiwang algorithm warehouse (算法仓)"
            )

    def _experiment_id(self, algorithm: str) -> str:
        name = model_name(algorithm)
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        location = f"{self.artifact_root}/{algorithm}" if self.artifact_root else None
        return self.client.create_experiment(name, artifact_location=location, tags={TAG_ALGORITHM: algorithm})

    def _log_run(
        self,
        algorithm: str,
        files: Sequence[Path],
        metrics: Mapping[str, float],
        params: Mapping[str, object],
        tags: Mapping[str, str],
        losses: Sequence[float],
    ) -> str:
        """One finished MLflow run holding the saved model (under `weights/`), params, metrics and the loss curve."""
        from mlflow.entities import Metric, Param

        run = self.client.create_run(self._experiment_id(algorithm), tags=dict(tags), run_name=f"train-{algorithm}")
        run_id = run.info.run_id
        try:
            stamp = int(_utc_now().timestamp() * 1000)
            logged = [Param(key, _param_text(value)) for key, value in sorted(params.items())]
            curve = [
                Metric("loss", float(loss), stamp, step) for step, loss in enumerate(losses) if math.isfinite(loss)
            ]
            self.client.log_batch(run_id, metrics=curve, params=logged)
            self._log_metrics(run_id, metrics)
            for file in files:
                self.client.log_artifact(run_id, str(file), artifact_path=WEIGHTS_ARTIFACT)
        except BaseException:
            self.client.set_terminated(run_id, status="FAILED")
            raise
        self.client.set_terminated(run_id)
        return run_id

    def _log_metrics(self, run_id: str, metrics: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        stamp = int(_utc_now().timestamp() * 1000)
        figures = {key: _number(value) for key, value in metrics.items()}
        self.client.log_batch(run_id, metrics=[Metric(k, v, stamp, 0) for k, v in figures.items() if v is not None])


def _saved_model_files(path: Path) -> tuple[Path, Path]:
    """(`model.pt`, `model.json`) of a saved model given as either file or its folder."""
    from ml.models import INFO_FILE, WEIGHTS_FILE

    folder = path if path.is_dir() else path.parent
    weights, info = folder / WEIGHTS_FILE, folder / INFO_FILE
    if not weights.is_file() or not info.is_file():
        raise RegistryError(
            f"no saved model at {path}: it needs {WEIGHTS_FILE} and {INFO_FILE} side by side (train first)"
        )
    return weights, info


def _version_tags(
    algorithm: str,
    saved: Mapping[str, Any],
    metrics: Mapping[str, float],
    params: Mapping[str, object],
    data_fingerprint: str,
) -> dict[str, str]:
    """The tags a new version carries: what the model is (from its `model.json`), on what data, how good."""
    from ml.algorithms import get_algorithm

    spec = get_algorithm(algorithm)
    tags = {
        TAG_ALGORITHM: algorithm,
        TAG_CLASSES: json.dumps(list(saved.get("classes") or spec.class_names), ensure_ascii=False),
        TAG_INPUT_SIZE: str(int(saved.get("input_size") or spec.input_size)),
        TAG_FINGERPRINT: data_fingerprint,
        TAG_CREATED: _time_text(_utc_now()),
    }
    for key in (TAG_MAP, TAG_MAP_SHIFTED, TAG_SECONDS):
        value = _number(metrics.get(key))
        if value is not None:
            tags[key] = _figure_text(value)
    epochs = _integer(params.get(TAG_EPOCHS))
    if epochs is not None:
        tags[TAG_EPOCHS] = str(epochs)
    for key in (TAG_HELDOUT_FINGERPRINT, TAG_SHIFTED_FINGERPRINT, TAG_STARTED_FROM):
        if params.get(key):
            tags[key] = str(params[key])
    return tags


def _per_class_text(per_class: Mapping[str, float]) -> str:
    return json.dumps({str(k): round(float(v), 6) for k, v in per_class.items()}, ensure_ascii=False)


def _param_text(value: object) -> str:
    """MLflow params are strings (at most 6,000 characters); lists and mappings as JSON."""
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, list | tuple | dict) else str(value)
    return text[:6000]


def _current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _worse_than(candidate: ModelVersionInfo, current: ModelVersionInfo | None) -> str | None:
    """Why `candidate` may not replace `current` without a reason, or None when it is not worse.

    Figures compare only on the same held-out set: when both versions name theirs (`heldout_fingerprint`) and the
    names differ, neither figure says which is better.
    """
    if current is None or current.map_50 is None:
        return None
    if candidate.map_50 is None:
        return (
            f"{candidate.algorithm} version {candidate.version} has no held-out mAP@0.5 and production is version "
            f"{current.version} ({current.map_50:.3f}): run `yiwang ml evaluate {candidate.algorithm} --version "
            f"{candidate.version}` first, or pass --force-reason"
        )
    sets = (candidate.tags.get(TAG_HELDOUT_FINGERPRINT), current.tags.get(TAG_HELDOUT_FINGERPRINT))
    if all(sets) and sets[0] != sets[1]:
        return (
            f"{candidate.algorithm} version {candidate.version} and production version {current.version} were "
            f"measured on different held-out sets: run `yiwang ml evaluate {candidate.algorithm} --version "
            f"{candidate.version}` and for version {current.version} first, or pass --force-reason TEXT"
        )
    if candidate.map_50 < current.map_50:
        return (
            f"{candidate.algorithm} version {candidate.version} has held-out mAP@0.5 {candidate.map_50:.3f}, below "
            f"production version {current.version} ({current.map_50:.3f}): keep version {current.version} in "
            "production, or pass --force-reason TEXT"
        )
    return None


def algorithms_table(versions: Sequence[ModelVersionInfo]) -> pa.Table:
    """The rows of `gold/ml/algorithms`: one per model version, in the catalog's schema."""
    labels = {}
    for info in versions:
        if info.algorithm not in labels:
            labels[info.algorithm] = _algorithm_label(info.algorithm)
    rows = [
        {
            "algorithm": info.algorithm,
            "algorithm_label": labels[info.algorithm],
            "version": info.version,
            "classes": list(info.classes),
            "input_size": info.input_size,
            "map_50": info.map_50,
            "map_50_shifted": info.map_50_shifted,
            "is_production": info.is_production,
            "created_at": info.created_at,
            "data_fingerprint": info.data_fingerprint or None,
        }
        for info in versions
    ]
    return pa.Table.from_pylist(rows, schema=ALGORITHMS_SCHEMA)
