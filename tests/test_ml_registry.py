"""The algorithm warehouse (算法仓) on a real MLflow registry: SQLite store and file artifacts in a temporary folder.

No mocks. The registry does not judge weights, so one randomly initialised detector (`build_model`, saved once)
stands in for every version; the figures that promotion compares are given by each test. Creating MLflow's
schema takes seconds, so it is made once and each test starts from a copy of that empty database.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from ingestion.warehouse import Warehouse
from ml.algorithms import get_algorithm
from ml.registry import ALGORITHMS_TABLE, ModelRegistry, RegistryError
from orchestration import ml_cli
from orchestration.ml_cli import ml_app

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")

ROOT = Path(__file__).resolve().parents[1]
ALGORITHM = "helmet"


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A helmet detector with random weights, saved as the model core saves it (model.pt + model.json)."""
    from ml.models import ModelInfo, build_model, save_model

    algorithm = get_algorithm(ALGORITHM)
    info = ModelInfo(algorithm=ALGORITHM, classes=algorithm.class_names, input_size=algorithm.input_size)
    return save_model(build_model(algorithm), info, tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite database with its schema and nothing in it (copied by every test)."""
    database = tmp_path_factory.mktemp("template") / "mlflow.db"
    ModelRegistry(f"sqlite:///{database}").versions()
    assert not database.with_name("mlflow.db-wal").exists()  # one file holds everything: safe to copy
    return database


def _store_at(empty_store: Path, folder: Path) -> str:
    database = folder / "ml" / "mlflow.db"
    database.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(empty_store, database)
    return f"sqlite:///{database}"


@pytest.fixture
def registry(empty_store: Path, tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(
        _store_at(empty_store, tmp_path),
        warehouse=Warehouse.at(tmp_path / "warehouse"),
        log_file=tmp_path / "logs" / "ml.log",
    )


def _register(registry: ModelRegistry, weights: Path, map_50: float | None, heldout: str = "set-1") -> int:
    metrics = {"training_seconds": 12.5} | ({"map_50": map_50} if map_50 is not None else {})
    info = registry.register(
        ALGORITHM,
        weights,
        metrics=metrics,
        params={"epochs": 3, "images": 40, "seed": 1, "heldout_fingerprint": heldout},
        data_fingerprint=f"fp-{map_50}",
        losses=[9.0, 6.5, 5.25],
    )
    return info.version


def _gold(registry: ModelRegistry) -> pl.DataFrame:
    assert registry.warehouse is not None
    frame = pl.from_arrow(registry.warehouse.table(ALGORITHMS_TABLE).to_pyarrow_table())
    assert isinstance(frame, pl.DataFrame)
    return frame.sort("version")


# --- the registry ---------------------------------------------------------------------------------------------


def test_register_list_and_promote(registry: ModelRegistry, saved_model: Path) -> None:
    first = registry.register(
        ALGORITHM,
        saved_model,
        metrics={"map_50": 0.5, "map_50_shifted": 0.3, "training_seconds": 12.5},
        params={"epochs": 3, "images": 40},
        data_fingerprint="abc123",
        losses=[9.0, 6.5, 5.25],
        per_class={"rider_no_helmet": 0.4, "rider_helmet": 0.6},
    )
    assert (first.version, first.is_production, first.map_50, first.map_50_shifted) == (1, False, 0.5, 0.3)
    assert first.classes == ("rider_no_helmet", "rider_helmet") and first.input_size == 320
    assert (first.epochs, first.training_seconds, first.data_fingerprint) == (3, 12.5, "abc123")
    assert first.ap_per_class == {"rider_no_helmet": 0.4, "rider_helmet": 0.6}
    assert first.created_at.utcoffset().total_seconds() == 0
    assert first.as_dict()["created_at"].endswith("+08:00")
    assert registry.production(ALGORITHM) is None

    run = registry.client.get_run(first.run_id)  # the same figures on MLflow's own run, with the loss curve
    assert run.data.metrics["map_50"] == 0.5 and run.data.params["epochs"] == "3"
    assert [m.value for m in registry.client.get_metric_history(first.run_id, "loss")] == [9.0, 6.5, 5.25]

    second = _register(registry, saved_model, 0.6)
    assert [v.version for v in registry.versions(ALGORITHM)] == [1, second] == [1, 2]
    assert registry.versions() == registry.versions(ALGORITHM)

    registry.promote(ALGORITHM, 1)
    promoted = registry.promote(ALGORITHM, 2)
    assert promoted.is_production and promoted.promoted_by and promoted.promoted_at is not None
    assert promoted.force_reason is None
    assert registry.production(ALGORITHM).version == 2
    assert [v.is_production for v in registry.versions(ALGORITHM)] == [False, True]
    assert registry.production("street_vending") is None and registry.versions("street_vending") == []


def test_a_worse_version_is_refused_unless_forced_with_a_reason(registry: ModelRegistry, saved_model: Path) -> None:
    registry.promote(ALGORITHM, _register(registry, saved_model, 0.6))
    worse = _register(registry, saved_model, 0.4)
    with pytest.raises(RegistryError, match=r"0\.400, below production version 1 \(0\.600\).*--force-reason"):
        registry.promote(ALGORITHM, worse)
    with pytest.raises(RegistryError, match="empty"):
        registry.promote(ALGORITHM, worse, force_reason="   ")
    unmeasured = _register(registry, saved_model, None)
    with pytest.raises(RegistryError, match="no held-out mAP"):
        registry.promote(ALGORITHM, unmeasured)
    assert registry.production(ALGORITHM).version == 1

    forced = registry.promote(ALGORITHM, worse, force_reason="v1 misses riders at night", by="zhengshu-duty")
    assert forced.is_production and forced.force_reason == "v1 misses riders at night"
    assert forced.promoted_by == "zhengshu-duty" and forced.tags["forced_over_version"] == "1"
    tags = registry.client.get_model_version("yiwang-helmet", str(worse)).tags
    assert tags["force_reason"] == "v1 misses riders at night" and tags["promoted_at"].endswith("+00:00")

    equal = _register(registry, saved_model, 0.4)  # not worse than production: no reason needed
    assert registry.promote(ALGORITHM, equal).force_reason is None

    elsewhere = _register(registry, saved_model, 0.9, heldout="set-2")  # figures on another held-out set
    with pytest.raises(RegistryError, match="different held-out sets"):
        registry.promote(ALGORITHM, elsewhere)
    registry.record_evaluation(ALGORITHM, elsewhere, {"map_50": 0.45}, sets={"heldout_fingerprint": "set-1"})
    assert registry.promote(ALGORITHM, elsewhere).map_50 == 0.45  # measured again on production's set


def test_what_a_user_can_get_wrong_is_one_line(registry: ModelRegistry, saved_model: Path) -> None:
    cases = [
        (lambda: registry.versions("drones"), "unknown algorithm 'drones'"),
        (lambda: registry.promote(ALGORITHM, 7), "helmet has no version 7"),
        (lambda: registry.load_production(ALGORITHM), "no production version yet"),
        (lambda: registry.record_evaluation(ALGORITHM, 3, {"map_50": 0.1}), "no version 3"),
        (lambda: _register_as("street_vending", registry, saved_model), "a model for 'helmet'"),
        (lambda: _register_as(ALGORITHM, registry, saved_model.parent / "nothing" / "model.pt"), "no saved model"),
    ]
    for call, message in cases:
        with pytest.raises(RegistryError, match=message) as refused:
            call()
        assert "\n" not in str(refused.value)


def _register_as(algorithm: str, registry: ModelRegistry, weights: Path) -> None:
    registry.register(algorithm, weights, metrics={"map_50": 0.1}, params={}, data_fingerprint="x")


def test_gold_table_follows_the_registry(registry: ModelRegistry, saved_model: Path) -> None:
    from thematic_libs.sharing.datasets import get_dataset

    _register(registry, saved_model, 0.5)
    assert _gold(registry)["is_production"].to_list() == [False]
    _register(registry, saved_model, 0.7)
    registry.promote(ALGORITHM, 2)
    rows = _gold(registry)
    assert rows["version"].to_list() == [1, 2] and rows["is_production"].to_list() == [False, True]
    assert rows["algorithm_label"].to_list() == ["骑行未戴头盔识别"] * 2
    assert rows["classes"].to_list()[0] == ["rider_no_helmet", "rider_helmet"]
    assert rows["map_50"].to_list() == [0.5, 0.7] and rows["map_50_shifted"].to_list() == [None, None]
    assert rows["data_fingerprint"].to_list() == ["fp-0.5", "fp-0.7"] and rows["input_size"].to_list() == [320] * 2
    assert str(rows.schema["created_at"]) == "Datetime(time_unit='us', time_zone='UTC')"

    registry.record_evaluation(ALGORITHM, 1, {"map_50": 0.55, "map_50_shifted": 0.2}, per_class={"rider_helmet": 1})
    assert _gold(registry)["map_50_shifted"].to_list() == [0.2, None]
    assert registry.version(ALGORITHM, 1).map_50 == 0.55
    # a figure on some other data set is kept apart: it neither changes the held-out figure nor the table
    other = registry.record_evaluation(ALGORITHM, 2, {"map_50": 0.1}, dataset="f" * 64)
    assert other.map_50 == 0.7 and json.loads(other.tags["evaluation.ffffffffffff"])["metrics"] == {"map_50": 0.1}
    assert _gold(registry)["map_50"].to_list() == [0.55, 0.7]

    dataset = get_dataset("ml.algorithms", registry.warehouse)  # the catalog sees it as a conditional gold product
    assert (dataset.table, dataset.sharing_type, dataset.owner_department) == (
        ALGORITHMS_TABLE,
        "conditional",
        "zhengshu",
    )
    assert {"algorithm", "version", "map_50", "is_production", "created_at"} <= set(dataset.column_names)


def test_production_loads_in_a_fresh_process_and_scores_a_frame(registry: ModelRegistry, saved_model: Path) -> None:
    registry.promote(ALGORITHM, _register(registry, saved_model, 0.5))
    registry.promote(ALGORITHM, _register(registry, saved_model, 0.6))
    script = f"""
import json
import numpy as np
from ml.registry import ModelRegistry
from ml.scenes import draw_frame

detector, info = ModelRegistry({registry.tracking_uri!r}).load_production({ALGORITHM!r})
frame, _ = draw_frame(np.random.default_rng(7), {ALGORITHM!r})
found = detector.detect([frame, frame])
print(json.dumps({{"version": info.version, "detector": detector.version, "frames": len(found),
                  "classes": detector.classes}}))
"""
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    environment.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "version": 2,
        "detector": "2",
        "frames": 2,
        "classes": ["rider_no_helmet", "rider_helmet"],
    }
    assert "mlflow" not in done.stderr.lower()  # MLflow's chatter stays out of the terminal


# --- the command line -----------------------------------------------------------------------------------------


@pytest.fixture
def cli(empty_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run `yiwang ml ...` against a registry beside a warehouse in tmp_path (what the settings point at)."""
    from rich.console import Console

    monkeypatch.setenv("YIWANG_HOME", str(tmp_path))
    monkeypatch.setenv("YIWANG_WAREHOUSE", str(tmp_path / "warehouse"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(ml_cli, "console", Console(width=80))
    _store_at(empty_store, tmp_path)
    runner = CliRunner()
    return lambda *args: runner.invoke(ml_app, list(args))


def test_cli_lists_and_promotes(cli, saved_model: Path) -> None:
    assert "no model versions yet" in cli("list").output
    registry = ModelRegistry.from_settings()
    registry.promote(ALGORITHM, _register(registry, saved_model, 0.6))
    _register(registry, saved_model, 0.4)

    refused = cli("promote", ALGORITHM, "2")
    assert refused.exit_code == 2 and "below production version 1" in refused.stderr
    forced = cli("promote", ALGORITHM, "2", "--force-reason", "night shift")
    assert forced.exit_code == 0, forced.output
    assert "now version 2 (was version 1)" in forced.output and "night shift" in forced.output

    table = cli("list", "--algorithm", ALGORITHM)
    assert table.exit_code == 0 and "production" in table.output and "骑行未戴头盔识别" in table.output
    listed = json.loads(cli("list", "--format", "json").stdout)
    assert [(v["version"], v["is_production"], v["force_reason"]) for v in listed] == [
        (1, False, None),
        (2, True, "night shift"),
    ]
    assert listed[0]["created_at"].endswith("+08:00")
    assert (Path(os.environ["YIWANG_HOME"]) / "logs" / "ml.log").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("list", "--algorithm", "drones"), "unknown algorithm 'drones'"),
        (("train", "--algorithm", "drones"), "unknown algorithm 'drones'"),
        (("list", "--format", "xml"), "--format"),
        (("promote", ALGORITHM, "7"), "helmet has no version 7"),
        (("promote", ALGORITHM, "seven"), "not a version number"),
        (("evaluate", ALGORITHM), "no production version yet"),
        (("evaluate", ALGORITHM, "--version", "3"), "no version 3"),
        (("evaluate", ALGORITHM, "--data", "/nonexistent/annotations.json"), "no COCO annotations"),
        (("train", "--algorithm", ALGORITHM, "--seed", "2"), "held-out"),
        (("train", "--algorithm", ALGORITHM, "--epochs", "0"), "--epochs must be positive"),
        (("train", "--algorithm", ALGORITHM, "--start-from", "production"), "has no production version"),
        (("train", "--algorithm", ALGORITHM, "--start-from", "latest"), "a version number or production"),
        (("evaluate", ALGORITHM, "--device", "tpu"), "--device 'tpu'"),
        (("train", "--algorithm", ALGORITHM, "--data", "/nonexistent"), "no COCO annotations"),
        (("train", "--algorithm", ALGORITHM, "--data", "/nonexistent", "--images", "3"), "with --data"),
        (("generate", "--algorithm", "drones", "--out", "x", "--images", "2"), "unknown algorithm"),
    ],
)
def test_cli_refuses_in_one_line(cli, args: tuple[str, ...], message: str) -> None:
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_cli_generates_and_splits_a_coco_set(cli, tmp_path: Path) -> None:
    made = cli("generate", "--algorithm", "street_vending", "--out", str(tmp_path / "set"), "--images", "12")
    assert made.exit_code == 0 and "wrote 12 frames" in made.output
    train_json, heldout_json, images = ml_cli._split_coco(tmp_path / "set" / "annotations.json", tmp_path / "split")
    train, heldout = (json.loads(p.read_text(encoding="utf-8")) for p in (train_json, heldout_json))
    train_ids, heldout_ids = ({i["id"] for i in part["images"]} for part in (train, heldout))
    assert len(heldout_ids) == 1 and not train_ids & heldout_ids and len(train_ids | heldout_ids) == 12
    assert all(a["image_id"] in heldout_ids for a in heldout["annotations"]) and images == tmp_path / "set" / "images"
    again = ml_cli._split_coco(tmp_path / "set" / "annotations.json", tmp_path / "again")[1]
    assert json.loads(again.read_text(encoding="utf-8"))["images"] == heldout["images"]  # the same held-out images


@pytest.mark.slow
def test_cli_trains_registers_promotes_and_evaluates(cli) -> None:
    """The whole `train` path on a tiny set (2 frames, one step): the figures mean nothing, the wiring does."""
    small = ("--eval-images", "2")
    trained = cli("train", "--algorithm", "street_vending", "--images", "2", "--epochs", "1", *small)
    assert trained.exit_code == 0, trained.output
    assert "registered yiwang-street_vending version 1" in trained.output and "is now version 1" in trained.output
    evaluated = cli("evaluate", "street_vending", *small)
    assert evaluated.exit_code == 0, evaluated.output
    assert "vendor_stall" in evaluated.output and "shifted" in evaluated.output
    info = ModelRegistry.from_settings().production("street_vending")
    assert info is not None and info.tags["evaluated_at"] and info.tags["heldout_fingerprint"]
    assert info.map_50 is not None and info.map_50_shifted is not None and info.epochs == 1
    further = cli(
        "train", "--algorithm", "street_vending", "--images", "2", "--epochs", "1", "--start-from", "1", *small
    )
    assert further.exit_code == 0, further.output
    assert "registered yiwang-street_vending version 2" in further.output
    assert ModelRegistry.from_settings().version("street_vending", 2).tags["started_from_version"] == "1"


def test_a_packaged_version_imports_once_with_its_figures(
    cli, saved_model: Path, empty_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`package` writes a version as files; `import` registers it elsewhere once, with the figures it was measured
    with, and promotes it; importing again changes nothing."""
    from ml.packages import read_package

    registry = ModelRegistry.from_settings()
    version = _register(registry, saved_model, 0.83)
    registry.client.set_model_version_tag("yiwang-helmet", str(version), "ap_50_per_class", '{"rider_helmet": 0.8}')
    packaged = cli("package", "--algorithm", ALGORITHM, "--version", str(version), "--out", str(tmp_path / "pkgs"))
    assert packaged.exit_code == 0, packaged.output
    package = read_package(tmp_path / "pkgs" / ALGORITHM)
    assert package.registration["metrics"]["map_50"] == pytest.approx(0.83)
    assert package.registration["losses"] == [] and package.registration["params"]["epochs"] == 3

    other = tmp_path / "other"  # a fresh machine: another home and warehouse, an empty registry
    monkeypatch.setenv("YIWANG_HOME", str(other))
    monkeypatch.setenv("YIWANG_WAREHOUSE", str(other / "warehouse"))
    _store_at(empty_store, other)
    first = cli("import", str(tmp_path / "pkgs"))
    assert first.exit_code == 0, first.output
    assert "registered yiwang-helmet version 1" in first.output and "is now version 1" in first.output
    fresh = ModelRegistry.from_settings()
    info = fresh.production(ALGORITHM)
    assert info is not None and info.map_50 == pytest.approx(0.83) and info.data_fingerprint == "fp-0.83"
    assert info.ap_per_class == {"rider_helmet": 0.8} and info.tags["package_sha256"] == package.sha256
    again = cli("import", str(tmp_path / "pkgs"))
    assert again.exit_code == 0 and "already: kept" in again.output
    assert [v.version for v in fresh.versions(ALGORITHM)] == [1]

    empty = cli("import", str(tmp_path))
    assert empty.exit_code == 2 and "holds no model packages" in empty.stderr
    missing = cli("package", "--algorithm", "garbage_overflow", "--out", str(tmp_path / "pkgs"))
    assert missing.exit_code == 2 and "no production version" in missing.stderr
