"""`yiwang ml`: the algorithm warehouse (算法仓) from the command line.

`train` generates scene data (or takes a COCO set), trains, measures mAP@0.5 on the held-out and shifted sets,
registers the model as a new version and promotes it when it is not worse than production; `list`, `promote`,
`evaluate` and `generate` do one thing each. The held-out and shifted sets are the same for every version of an
algorithm (fixed seeds, `--eval-images` frames, cached under `<home>/ml_runs/<algorithm>/data/`), so that versions
compare. Torch is imported inside the commands that need it: the CLI starts fast.

Exit codes as elsewhere: 0 done (also a new version kept out of production because it is worse), 2 a bad argument
or a refusal (unknown algorithm or version, no production version yet, a worse version without --force-reason),
always as one red line. MLflow's logs go to `<home>/logs/ml.log`; times are shown in China Standard Time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from orchestration.cli_output import fail as _fail

if TYPE_CHECKING:
    from ingestion.settings import Settings
    from ml.evaluate import Evaluation
    from ml.registry import ModelRegistry, ModelVersionInfo
    from ml.train import Recipe

console = Console()

ml_app = typer.Typer(
    help="The algorithm warehouse (算法仓): train, evaluate, register and promote the video-AI detectors.",
    no_args_is_help=True,
)

LIST_FORMATS = ("table", "json")
DEVICES = ("auto", "cpu", "cuda")
# Part of the data fingerprint shown in tables (the whole one is in `--format json` and gold/ml/algorithms).
SHORT_FINGERPRINT = 8
# Held-out share of a --data set that is split into training and held-out images.
HELDOUT_SHARE = 0.1


def _settings() -> Settings:
    from ingestion.settings import Settings

    return Settings.from_env()


def _registry(settings: Settings) -> ModelRegistry:
    from ml.registry import ModelRegistry

    return ModelRegistry.from_settings(settings)


@contextmanager
def _refusals() -> Iterator[None]:
    """A refusal of the registry (RegistryError: its message says what to do) becomes one red line, exit code 2."""
    from ml.registry import RegistryError

    try:
        yield
    except RegistryError as error:
        raise _fail(str(error)) from None


def _algorithm(name: str) -> Any:
    """The algorithm's definition (ml/algorithms.yaml), or one line naming the known ones."""
    from ml.algorithms import load_algorithms

    algorithms = load_algorithms()
    if name not in algorithms:
        raise _fail(f"unknown algorithm {name!r}: use one of {', '.join(algorithms)} (ml/algorithms.yaml)")
    return algorithms[name]


def _version_number(text: str) -> int:
    """VERSION as typed: a positive whole number (checked here so that a typo is one line, not a usage box)."""
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number <= 0:
        raise _fail(f"version {text!r} is not a version number: `yiwang ml list` shows them (1, 2, ...)")
    return number


def _check_device(device: str) -> None:
    if device not in DEVICES:
        raise _fail(f"--device {device!r}: use one of {', '.join(DEVICES)}")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise _fail("--device cuda: this machine has no CUDA GPU (auto uses one when there is)")


def _check_positive(**values: int | None) -> None:
    for name, value in values.items():
        if value is not None and value <= 0:
            raise _fail(f"--{name.replace('_', '-')} must be positive (got {value})")


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


# -- data --------------------------------------------------------------------------------------------------------


def _runs_dir(settings: Settings, algorithm: str) -> Path:
    """Where `train` keeps generated data and the last trained model of an algorithm."""
    return settings.home / "ml_runs" / algorithm


def _evaluation_sets(settings: Settings, algorithm: str, images: int) -> tuple[Path, Path]:
    """The held-out and shifted COCO sets every version of an algorithm is measured on (generated once, cached)."""
    from ml.train import RECIPE

    data = _runs_dir(settings, algorithm) / "data"
    heldout = _ensure_dataset(data / "heldout", algorithm, images, RECIPE.eval_seed, "train")
    shifted = _ensure_dataset(data / "shifted", algorithm, images, RECIPE.shifted_seed, "shifted")
    return heldout, shifted


def _coco_paths(path: Path) -> Any:
    """The annotations and images of a --data set, or one line saying what is missing."""
    from ml.data import resolve_coco

    try:
        return resolve_coco(path)
    except FileNotFoundError as error:
        raise _fail(f"--data {path}: {error} (a COCO annotations JSON, or a folder with annotations.json)") from None


def _fingerprint(data: Path | None) -> str | None:
    """The data fingerprint of a --data set (None for the generated sets)."""
    if data is None:
        return None
    from ml.data import dataset_fingerprint

    return dataset_fingerprint(_coco_paths(data))


def _ensure_dataset(folder: Path, algorithm: str, images: int, seed: int, scenes: str) -> Path:
    """A generated scene set, made once and reused while algorithm, count, seed and scenes stay the same."""
    from ml.train import RECIPE, _ensure_dataset

    return _ensure_dataset(folder, algorithm, images, seed, scenes, RECIPE.frame_size)


def _split_coco(path: Path, out_dir: Path) -> tuple[Path, Path, Path]:
    """Split a COCO set into training and held-out annotation files (10 %, at least one image, chosen by a fixed
    seed so that the same file always gives the same held-out images); returns (train, heldout, images folder)."""
    import numpy as np

    paths = _coco_paths(path)
    coco = json.loads(paths.annotations.read_text(encoding="utf-8"))
    ids = sorted(int(image["id"]) for image in coco.get("images", []))
    if len(ids) < 2:
        raise _fail(f"--data {path}: {len(ids)} images; training and a held-out set need at least 2")
    count = max(1, round(len(ids) * HELDOUT_SHARE))
    held = set(np.random.default_rng(0).choice(ids, size=count, replace=False).tolist())
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, keep in (("train", lambda i: i not in held), ("heldout", lambda i: i in held)):
        part = {
            **coco,
            "images": [image for image in coco["images"] if keep(int(image["id"]))],
            "annotations": [a for a in coco.get("annotations", []) if keep(int(a["image_id"]))],
        }
        target = out_dir / f"{name}.json"
        target.write_text(json.dumps(part, ensure_ascii=False), encoding="utf-8")
        written.append(target)
    return written[0], written[1], paths.images


# -- commands ----------------------------------------------------------------------------------------------------


@ml_app.command("train")
def train_command(
    algorithm: str = typer.Option(..., "--algorithm", help="An algorithm of ml/algorithms.yaml, e.g. helmet."),
    images: int | None = typer.Option(None, "--images", help="Training frames to generate (default: the recipe's)."),
    epochs: int | None = typer.Option(None, "--epochs", help="Passes over the training set (default: the recipe's)."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of the training frames and the run (default 1)."),
    data: Path | None = typer.Option(None, "--data", help="Train on this COCO set instead (10 % held out)."),
    eval_images: int | None = typer.Option(
        None, "--eval-images", help="Frames of the held-out and shifted sets (default: the recipe's; keep it fixed)."
    ),
    device: str = typer.Option("auto", "--device", help="auto (a GPU when there is one), cpu or cuda."),
    no_promote: bool = typer.Option(False, "--no-promote", help="Register only; leave production as it is."),
    start_from: str | None = typer.Option(
        None,
        "--start-from",
        help="Train further from a registered version (a number, or production) instead of from random weights.",
    ),
) -> None:
    """Train a detector, measure it, register it as a new version; promote it when it is not worse."""
    _algorithm(algorithm)
    _check_device(device)
    _check_positive(images=images, epochs=epochs, eval_images=eval_images)
    if data is not None and (images is not None or eval_images is not None):
        raise _fail("--images and --eval-images size generated sets: with --data, the set is given (10 % held out)")
    from ml.train import recipe_for

    recipe = recipe_for(algorithm)
    seed = recipe.train_seed if seed is None else seed
    if data is None and seed in (recipe.eval_seed, recipe.shifted_seed):
        raise _fail(f"--seed {seed} draws the held-out or shifted frames: train with another seed")
    settings = _settings()
    registry = _registry(settings)
    runs = _runs_dir(settings, algorithm)
    with _refusals(), _starting_weights(registry, algorithm, start_from) as start:
        result, heldout, shifted, sets = _train_and_measure(
            algorithm,
            runs,
            recipe=replace(recipe, train_images=images or recipe.train_images, epochs=epochs or recipe.epochs),
            seed=seed,
            data=data,
            eval_images=eval_images or recipe.eval_images,
            device=device,
            settings=settings,
            init_from=start.folder if start else None,
        )
        metrics = {"map_50": heldout.map_50, "map_50_95": heldout.map_50_95, "training_seconds": result.seconds}
        if shifted is not None:
            metrics["map_50_shifted"] = shifted.map_50
        params = {
            "epochs": result.epochs,
            "images": result.images,
            "seed": seed,
            "device": result.device,
            "data": str(data) if data else "generated",
            **({"started_from_version": start.version} if start else {}),
            **sets,
        }
        info = registry.register(
            algorithm,
            result.weights,
            metrics=metrics,
            params=params,
            data_fingerprint=result.data_fingerprint,
            losses=result.losses,
            per_class=heldout.per_class_ap50,
        )
    console.print(
        f"[green]registered[/] {info.model_name} version {info.version}: held-out mAP@0.5 {_figure(info.map_50)}, "
        f"shifted {_figure(info.map_50_shifted)} ({result.seconds:.0f} s, loss {result.losses[-1]:.3f})"
    )
    if no_promote:
        console.print("not promoted (--no-promote): `yiwang ml promote` moves production when you decide")
        return
    _promote_if_not_worse(registry, algorithm, info.version)


def _train_and_measure(
    algorithm: str,
    runs: Path,
    *,
    recipe: Recipe,
    seed: int,
    data: Path | None,
    eval_images: int,
    device: str,
    settings: Settings,
    init_from: Path | None = None,
) -> tuple[Any, Evaluation, Evaluation | None, dict[str, str]]:
    """Data, training with the trainer's progress bar (loss per batch), held-out and shifted evaluations.

    Returns (training result, held-out evaluation, shifted evaluation or None for a --data set, the evaluation sets'
    fingerprints as params).
    """
    from ml.evaluate import evaluate
    from ml.train import train

    images = recipe.train_images
    shifted_json: Path | None = None
    if data is None:
        console.print(f"generating {images} training and {eval_images}+{eval_images} evaluation frames (cached)")
        train_json = _ensure_dataset(runs / "data" / "train", algorithm, images, seed, "train")
        heldout_json, shifted_json = _evaluation_sets(settings, algorithm, eval_images)
        images_dir = None
    else:
        train_json, heldout_json, images_dir = _split_coco(data, runs / "data" / "split")
    try:
        result = train(
            algorithm,
            train_json,
            runs / "model",
            epochs=recipe.epochs,
            batch_size=recipe.batch_size,
            lr=recipe.lr,
            width_mult=recipe.width_mult,
            device=device,
            seed=seed,
            images_dir=images_dir,
            init_from=init_from,
        )
    except (ValueError, FloatingPointError) as error:
        raise _fail(f"training {algorithm} failed: {error}") from None
    console.print(f"trained {result.epochs} epochs on {result.images} frames: loss per epoch {_losses(result.losses)}")
    heldout = evaluate(result.weights, heldout_json, images_dir, device=device)
    shifted = evaluate(result.weights, shifted_json, device=device) if shifted_json else None
    return result, heldout, shifted, _set_fingerprints(heldout_json, shifted_json, images_dir)


class StartingPoint(NamedTuple):
    """The registered version a --start-from run begins with, and its saved model on local disk."""

    folder: Path
    version: int


@contextmanager
def _starting_weights(
    registry: ModelRegistry, algorithm: str, start_from: str | None
) -> Iterator[StartingPoint | None]:
    """The version a --start-from run begins with, its files on local disk while training lasts; None without."""
    if start_from is None:
        yield None
        return
    if start_from == "production":
        info = registry.production(algorithm)
        if info is None:
            raise _fail(f"--start-from production: {algorithm} has no production version (train one without it)")
    elif start_from.isdigit():
        info = registry.version(algorithm, int(start_from))
    else:
        raise _fail(f"--start-from {start_from}: give a version number or production")
    with registry.weights_of(info) as folder:
        yield StartingPoint(folder, info.version)


def _losses(losses: list[float]) -> str:
    """The mean loss per epoch, `a → b → c`; a long run shows its first and last three epochs."""
    texts = [f"{value:.3f}" for value in losses]
    return " → ".join(texts if len(texts) <= 8 else [*texts[:3], "…", *texts[-3:]])


def _promote_if_not_worse(registry: ModelRegistry, algorithm: str, version: int) -> None:
    """Promote a fresh version; a worse one stays registered and production stays (not an error: exit 0)."""
    from ml.registry import RegistryError

    try:
        info = registry.promote(algorithm, version)
    except RegistryError as error:
        console.print(f"[yellow]not promoted:[/] {error}")
        return
    console.print(f"[green]production[/] {info.model_name} is now version {info.version}")


@ml_app.command("list")
def list_command(
    algorithm: str | None = typer.Option(None, "--algorithm", help="Only this algorithm's versions."),
    output: str = typer.Option("table", "--format", help="table or json."),
) -> None:
    """Every registered version: held-out and shifted mAP@0.5, which one is in production, when it was made."""
    if output not in LIST_FORMATS:
        raise _fail(f"--format {output!r}: use one of {', '.join(LIST_FORMATS)}")
    if algorithm is not None:
        _algorithm(algorithm)
    with _refusals():
        versions = _registry(_settings()).versions(algorithm)
    if output == "json":
        typer.echo(json.dumps([info.as_dict() for info in versions], ensure_ascii=False, indent=2))
        return
    if not versions:
        console.print(f"no model versions yet: `yiwang ml train --algorithm {algorithm or 'helmet'}` trains one")
        return
    console.print(_versions_table(versions))


def _versions_table(versions: list[ModelVersionInfo]) -> Table:
    """Fits 80 columns: the Chinese titles go in the caption; epochs, timings and who promoted are in --format json."""
    from ml.algorithms import load_algorithms

    titles = {name: spec.title_zh for name, spec in load_algorithms().items()}
    shown = dict.fromkeys(info.algorithm for info in versions)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title="算法仓 Algorithm warehouse")
    table.caption = " · ".join(f"{name} {titles.get(name, '')}" for name in shown)
    for column, justify in (
        ("algorithm", "left"),
        ("ver", "right"),
        ("mAP@0.5", "right"),
        ("shifted", "right"),
        ("created (CST)", "left"),
        ("data", "left"),
        ("status", "left"),
    ):
        table.add_column(column, justify=justify, no_wrap=column != "status")  # type: ignore[arg-type]
    for info in versions:
        status = "[green]production[/]" if info.is_production else ""
        if info.is_production and info.force_reason:
            status += f" [yellow]forced: {info.force_reason}[/]"
        table.add_row(
            info.algorithm,
            str(info.version),
            _figure(info.map_50),
            _figure(info.map_50_shifted),
            info.created_at_cst.strftime("%Y-%m-%d %H:%M"),
            info.data_fingerprint[:SHORT_FINGERPRINT] or "-",
            status,
        )
    return table


@ml_app.command("promote")
def promote_command(
    algorithm: str = typer.Argument(..., help="The algorithm, e.g. helmet."),
    version: str = typer.Argument(..., help="The version to put in production."),
    force_reason: str | None = typer.Option(
        None, "--force-reason", help="Promote a version with a lower held-out mAP@0.5, and say why (recorded)."
    ),
) -> None:
    """Point production at a version; refused when it is worse on the held-out set, unless a reason is given."""
    _algorithm(algorithm)
    number = _version_number(version)
    with _refusals():
        registry = _registry(_settings())
        before = registry.production(algorithm)
        info = registry.promote(algorithm, number, force_reason=force_reason)
    if before is not None and before.version == info.version:
        console.print(f"{info.model_name} version {info.version} is already in production")
        return
    forced = f" [yellow](forced: {info.force_reason})[/]" if info.force_reason and force_reason else ""
    was = f" (was version {before.version})" if before else ""
    console.print(f"[green]production[/] {info.model_name} is now version {info.version}{was}{forced}")


@ml_app.command("import")
def import_command(
    source: Path | None = typer.Argument(
        None, help="A folder of model packages, one per algorithm (default: the models shipped in ml/pretrained)."
    ),
) -> None:
    """Register shipped or packaged models (once each) and promote each one that is not worse than production."""
    from ml.packages import PRETRAINED_DIR, find_packages, import_package

    root = source or PRETRAINED_DIR
    with _refusals():
        packages = find_packages(root)
        if not packages:
            raise _fail(f"{root} holds no model packages: `yiwang ml package --algorithm NAME --out {root}` writes one")
        registry = _registry(_settings())
        for package in packages:
            _algorithm(package.algorithm)
            info, registered = import_package(registry, package)
            if not registered:
                console.print(f"{info.model_name} version {info.version} is {package.folder.name} already: kept")
                continue
            console.print(
                f"[green]registered[/] {info.model_name} version {info.version} from {package.folder}: held-out "
                f"mAP@0.5 {_figure(info.map_50)}, shifted {_figure(info.map_50_shifted)} (figures of the package)"
            )
            _promote_if_not_worse(registry, package.algorithm, info.version)


@ml_app.command("package")
def package_command(
    algorithm: str = typer.Option(..., "--algorithm", help="An algorithm of ml/algorithms.yaml, e.g. helmet."),
    version: str | None = typer.Option(None, "--version", help="The version (default: production)."),
    out: Path = typer.Option(None, "--out", help="Folder of packages to write into (default: ml/pretrained)."),
) -> None:
    """Write a registered version as a model package (weights, model.json, registration.json) to ship or move."""
    from ml.packages import PRETRAINED_DIR, write_package

    _algorithm(algorithm)
    number = _version_number(version) if version is not None else None
    with _refusals():
        package = write_package(_registry(_settings()), algorithm, out or PRETRAINED_DIR, number)
    size = (package.folder / "model.pt").stat().st_size / 1e6
    console.print(f"[green]packaged[/] {algorithm} in {package.folder} ({size:.1f} MB, sha256 {package.sha256[:12]})")


@ml_app.command("evaluate")
def evaluate_command(
    algorithm: str = typer.Argument(..., help="The algorithm, e.g. helmet."),
    version: str | None = typer.Option(None, "--version", help="The version (default: production)."),
    data: Path | None = typer.Option(None, "--data", help="A COCO set (default: the held-out and shifted sets)."),
    eval_images: int | None = typer.Option(
        None, "--eval-images", help="Frames of the generated held-out and shifted sets (default: the recipe's)."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
) -> None:
    """Per-class AP@0.5 and mAP@0.5 of a version; the figures are recorded on the version."""
    _algorithm(algorithm)
    _check_device(device)
    _check_positive(eval_images=eval_images)
    number = _version_number(version) if version is not None else None
    fingerprint = _fingerprint(data)
    settings = _settings()
    with _refusals():
        registry = _registry(settings)
        info = registry.version(algorithm, number) if number is not None else _production_or_fail(registry, algorithm)
        results, sets = _measure(registry, info, settings, data, eval_images, device)
        metrics = {f"map_50{suffix}": result.map_50 for suffix, result in results.items()}
        recorded = registry.record_evaluation(
            algorithm, info.version, metrics, per_class=results[""].per_class_ap50, dataset=fingerprint, sets=sets
        )
    for suffix, result in results.items():
        title = {"": "held-out" if data is None else str(data), "_shifted": "shifted"}[suffix]
        console.print(_evaluation_table(algorithm, title, result))
    where = "as its held-out figures" if data is None else f"as an evaluation on {data}"
    console.print(f"recorded on {recorded.model_name} version {recorded.version} {where}")


def _production_or_fail(registry: ModelRegistry, algorithm: str) -> ModelVersionInfo:
    from ml.registry import RegistryError

    info = registry.production(algorithm)
    if info is None:
        raise RegistryError(
            f"{algorithm} has no production version yet: pass --version, or promote one (`yiwang ml promote`)"
        )
    return info


def _measure(
    registry: ModelRegistry,
    info: ModelVersionInfo,
    settings: Settings,
    data: Path | None,
    eval_images: int | None,
    device: str,
) -> tuple[dict[str, Evaluation], dict[str, str]]:
    """Evaluations keyed by metric suffix, `""` (held-out, or the --data set) and `_shifted` (generated sets only),
    and the fingerprints of the standard sets measured on (none for a --data set)."""
    from ml.evaluate import evaluate
    from ml.train import RECIPE

    if data is not None:
        paths, names = {"": data}, {}
    else:
        heldout, shifted = _evaluation_sets(settings, info.algorithm, eval_images or RECIPE.eval_images)
        paths, names = {"": heldout, "_shifted": shifted}, _set_fingerprints(heldout, shifted)
    with registry.weights_of(info) as folder:
        return {suffix: evaluate(folder, path, device=device) for suffix, path in paths.items()}, names


def _set_fingerprints(heldout: Path, shifted: Path | None, images_dir: Path | None = None) -> dict[str, str]:
    """`heldout_fingerprint` (and `shifted_fingerprint`): which sets a version's figures were measured on."""
    from ml.data import dataset_fingerprint, resolve_coco

    names = {"heldout_fingerprint": dataset_fingerprint(resolve_coco(heldout, images_dir))}
    if shifted is not None:
        names["shifted_fingerprint"] = dataset_fingerprint(resolve_coco(shifted))
    return names


def _evaluation_table(algorithm: str, title: str, result: Evaluation) -> Table:
    from ml.algorithms import get_algorithm

    spec = get_algorithm(algorithm)
    table = Table(box=box.SIMPLE_HEAD, title=f"{algorithm} · {title}: mAP@0.5 {result.map_50:.3f}")
    for column in ("class", "AP@0.5", "precision", "recall"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, ap in result.per_class_ap50.items():
        point = result.operating_point.get(name, {})
        label = spec.label_zh(name) if name in spec.class_names else ""
        table.add_row(f"{name} {label}", f"{ap:.3f}", _figure(point.get("precision")), _figure(point.get("recall")))
    table.caption = (
        f"{result.n_images} frames, {result.n_annotations} objects; precision and recall at score "
        f"{result.score_threshold:g}"
    )
    return table


@ml_app.command("generate")
def generate_command(
    algorithm: str = typer.Option(..., "--algorithm", help="An algorithm of ml/algorithms.yaml, e.g. helmet."),
    out: Path = typer.Option(..., "--out", help="Folder to write (images/ and annotations.json)."),
    images: int = typer.Option(..., "--images", help="How many frames."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same frames."),
    shifted: bool = typer.Option(False, "--shifted", help="Streets, light and cameras training never sees."),
) -> None:
    """Write a labelled COCO set of procedural street frames (what `train` generates for itself)."""
    _algorithm(algorithm)
    _check_positive(images=images)
    from ml.scenes import generate_dataset
    from ml.train import RECIPE

    path = generate_dataset(out, algorithm, images, seed, "shifted" if shifted else "train", RECIPE.frame_size)
    coco = json.loads(path.read_text(encoding="utf-8"))
    console.print(
        f"[green]wrote[/] {len(coco['images'])} frames, {len(coco['annotations'])} labelled objects to {path} "
        f"({'shifted' if shifted else 'train'} scenes, seed {seed})"
    )
