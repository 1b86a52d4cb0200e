"""Train a detector for one algorithm on a COCO data set, on two CPU cores or on a GPU, unchanged.

The schedule is made for short runs from scratch (there are no pretrained weights offline): AdamW with a one-cycle
learning rate (warm-up, then cosine down), no weight decay on norms and biases, gradient clipping for the first
noisy steps. On CUDA the data loader pins memory and uses workers, and the forward pass runs under autocast
(bfloat16 where supported); on the CPU it uses ``threads`` threads and no workers (two cores have nothing to spare).

``train`` is the building block (a data set in, weights out); ``train_algorithm`` is the recipe behind
``yiwang ml train``: generate the scene data sets if missing, train, evaluate on a held-out and a shifted set.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ml.algorithms import get_algorithm
from ml.data import Augment, CocoDetectionDataset, collate, dataset_fingerprint, resolve_coco
from ml.models import ANCHOR_SCALES, ModelInfo, build_model, load_model, resolve_device, save_model

CHECKPOINT_FILE = "checkpoint.pt"


@dataclass
class TrainResult:
    """What a training run produced and how it went."""

    weights: Path
    losses: list[float]  # mean loss per epoch
    seconds: float
    data_fingerprint: str
    epochs: int
    images: int
    device: str
    step_losses: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0  # CPU time of all threads of this process: wall time on a busy shared machine says little

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["weights"] = str(self.weights)
        return out


def seed_everything(seed: int) -> None:
    """Same seed, same run (on one device type; GPU kernels may still differ in the last bits)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv/linear weights only: decaying BatchNorm scales and biases only slows a short run."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed precision only on CUDA (bfloat16 when the GPU has it); CPU runs in float32."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def train(
    algorithm: str,
    dataset: Path | str,
    out_dir: Path | str,
    epochs: int = 8,
    batch_size: int = 8,
    lr: float = 2e-3,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
    *,
    images_dir: Path | str | None = None,
    weight_decay: float = 1e-4,
    warmup: float = 0.08,
    threads: int = 2,
    width_mult: float = 0.5,
    channels_last: bool = True,
    augment: Augment | None = Augment(),
    on_step: Callable[[int, float], None] | None = None,
    resume: bool = True,
    checkpoint_every: int = 1,
    init_from: Path | str | None = None,
) -> TrainResult:
    """Train a fresh model for ``algorithm`` on a COCO data set (folder or annotations file); save it in out_dir.

    Returns the weights path, the mean loss of every epoch, the wall time and the data fingerprint (also written
    into ``model.json``, with the settings of the run). After every ``checkpoint_every`` epochs the full training
    state goes to ``out_dir/checkpoint.pt``; with ``resume`` a run with the same settings continues from there
    (on a shared machine a long run can be killed), and the finished run removes it. Seconds count this process.

    ``init_from`` (a saved model of the same algorithm) starts from its weights instead of random ones: a version
    trained further on new frames. Its width and anchors win over ``width_mult``; the epochs and losses it was
    trained with are carried into ``model.json`` (``trained_from``), so a version says how it came to be.
    """
    started = time.perf_counter()
    cpu_started = time.process_time()
    algo = get_algorithm(algorithm)
    target = resolve_device(device)
    if target.type == "cpu":
        torch.set_num_threads(threads)
    seed_everything(seed)
    paths = resolve_coco(dataset, images_dir)
    data = CocoDetectionDataset(paths.annotations, algo.class_names, algo.input_size, augment, paths.images, seed)
    if len(data) == 0:
        raise ValueError(f"{paths.annotations} has no images")
    generator = torch.Generator().manual_seed(seed)
    workers = 0 if target.type == "cpu" else 4
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=batch_size,
        shuffle=True,
        generator=generator,
        collate_fn=collate,
        num_workers=workers,
        pin_memory=target.type == "cuda",
        drop_last=len(data) > batch_size,
    )
    start: ModelInfo | None = None
    if init_from is None:
        model = build_model(algo, width_mult=width_mult)
    else:
        model, start = load_model(init_from)  # shaped as it was saved: its width and anchors
        _check_start(start, algo.name, algo.class_names, algo.input_size, init_from)
        width_mult = start.width_mult
    model = model.to(target)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    model.train()
    optimizer = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr)
    total_steps = max(1, epochs * len(loader))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=total_steps, pct_start=warmup, div_factor=20.0, final_div_factor=200.0
    )
    amp_dtype = _autocast_dtype(target)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    epoch_losses: list[float] = []
    step_losses: list[float] = []
    checkpoint = Path(out_dir) / CHECKPOINT_FILE
    settings = {
        "algorithm": algo.name,
        "data": str(paths.annotations),
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "width_mult": width_mult,
        "started_from": _lineage(start) if start else None,  # what the model was, not where its files lay
    }
    first_epoch = 0
    if resume and checkpoint.is_file():
        state = torch.load(checkpoint, map_location=target, weights_only=False)
        if state["settings"] == settings:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            first_epoch, epoch_losses, step_losses = state["epoch"], state["epoch_losses"], state["step_losses"]
    step = first_epoch * len(loader)
    bar = tqdm(
        total=total_steps,
        initial=step,
        desc=f"train {algorithm}",
        disable=not progress,
        unit="batch",
        dynamic_ncols=True,
    )
    for epoch in range(first_epoch, epochs):
        data.epoch = epoch
        generator.manual_seed(seed * 100_003 + epoch)  # each epoch's order depends on (seed, epoch) only: resumable
        running = 0.0
        batches = 0
        for images, targets in loader:
            images = [img.to(target, non_blocking=True) for img in images]
            targets = [{k: v.to(target, non_blocking=True) for k, v in t.items()} for t in targets]
            with torch.autocast(target.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                loss_parts = model(images, targets)
                loss = sum(loss_parts.values())
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"loss became {value} at step {step}: lower the learning rate")
            running += value
            batches += 1
            step += 1
            step_losses.append(value)
            if on_step is not None:
                on_step(step, value)
            bar.set_postfix(epoch=epoch + 1, loss=f"{running / batches:.3f}", lr=f"{scheduler.get_last_lr()[0]:.1e}")
            bar.update(1)
        epoch_losses.append(running / max(1, batches))
        if checkpoint_every and (epoch + 1) % checkpoint_every == 0 and epoch + 1 < epochs:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            state = {
                "settings": settings,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "epoch": epoch + 1,
                "epoch_losses": epoch_losses,
                "step_losses": step_losses,
            }
            torch.save(state, checkpoint.with_suffix(".tmp"))
            checkpoint.with_suffix(".tmp").replace(checkpoint)
    bar.close()
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    fingerprint = dataset_fingerprint(paths)
    info = ModelInfo(
        algorithm=algo.name,
        classes=algo.class_names,
        input_size=algo.input_size,
        width_mult=width_mult,
        anchor_scales=list(start.anchor_scales) if start else list(ANCHOR_SCALES),
        extra={
            "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "data_fingerprint": fingerprint,
            "dataset": str(paths.annotations),
            "images": len(data),
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "seed": seed,
            "device": str(target),
            "seconds": round(seconds, 1),
            "cpu_seconds": round(cpu_seconds, 1),
            "losses": [round(v, 4) for v in epoch_losses],
            "torch": torch.__version__,
            **({"trained_from": _lineage(start)} if start else {}),
        },
    )
    weights = save_model(model, info, Path(out_dir))
    checkpoint.unlink(missing_ok=True)
    return TrainResult(
        weights, epoch_losses, seconds, fingerprint, epochs, len(data), str(target), step_losses, cpu_seconds
    )


def _check_start(start: ModelInfo, algorithm: str, classes: list[str], input_size: int, path: Path | str) -> None:
    """A model of another algorithm, classes or input size cannot start this one."""
    if start.algorithm != algorithm or start.classes != classes or start.input_size != input_size:
        raise ValueError(
            f"{path} is a {start.algorithm} model with classes {start.classes} at {start.input_size} px: "
            f"it cannot start a {algorithm} model with classes {classes} at {input_size} px"
        )


def _lineage(start: ModelInfo) -> dict[str, Any]:
    """What the starting model was trained with (its own lineage included): epochs add up over a chain."""
    extra = start.extra
    earlier = extra.get("trained_from") or {}
    return {
        "data_fingerprint": extra.get("data_fingerprint"),
        "epochs": int(extra.get("epochs", 0)) + int(earlier.get("epochs", 0)),
        "images": extra.get("images"),
        "trained_at": extra.get("trained_at"),
    }


# --------------------------------------------------------------------------------------------------------------------
# The recipe behind `yiwang ml train`
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """Data set sizes and training settings of ``yiwang ml train`` (what they reach: bench/RESULTS.md, video)."""

    train_images: int = 3000
    eval_images: int = 300
    frame_size: tuple[int, int] = (640, 360)
    epochs: int = 8
    batch_size: int = 8
    lr: float = 2e-3
    width_mult: float = 0.5
    train_seed: int = 1
    eval_seed: int = 2
    shifted_seed: int = 3


RECIPE = Recipe()
# The helmet classes differ only by a few pixels of head: they need more passes than bins or stalls.
RECIPES: dict[str, Recipe] = {"helmet": Recipe(epochs=10)}


def recipe_for(algorithm: str) -> Recipe:
    """The tuned recipe of an algorithm (the default one unless it has its own)."""
    return RECIPES.get(algorithm, RECIPE)


def _ensure_dataset(folder: Path, algorithm: str, images: int, seed: int, settings: str, size: tuple[int, int]) -> Path:
    """Generate a scene data set unless the same one (algorithm, count, seed, settings, size) is already there."""
    from ml.scenes import GENERATOR_VERSION, generate_dataset, resolve_settings

    stamp = folder / "generated.json"
    wanted = {
        "algorithm": algorithm,
        "images": images,
        "seed": seed,
        "settings": resolve_settings(settings).to_dict(),
        "size": list(size),
        "generator_version": GENERATOR_VERSION,
    }
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted and (folder / "annotations.json").is_file():
        return folder / "annotations.json"
    path = generate_dataset(folder, algorithm, images, seed, settings, size)
    stamp.write_text(json.dumps(wanted))
    return path


def train_algorithm(
    algorithm: str,
    runs_dir: Path | str = Path(".yiwang/ml_runs"),
    recipe: Recipe | None = None,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Generate data (cached), train, evaluate held-out and shifted; write ``report.json``; return the report.

    Layout: ``<runs_dir>/<algorithm>/{data/train,data/heldout,data/shifted,model/,report.json}``.
    """
    from ml.evaluate import evaluate

    recipe = recipe or recipe_for(algorithm)
    root = Path(runs_dir) / algorithm
    t0 = time.perf_counter()
    train_json = _ensure_dataset(
        root / "data" / "train", algorithm, recipe.train_images, recipe.train_seed, "train", recipe.frame_size
    )
    heldout_json = _ensure_dataset(
        root / "data" / "heldout", algorithm, recipe.eval_images, recipe.eval_seed, "train", recipe.frame_size
    )
    shifted_json = _ensure_dataset(
        root / "data" / "shifted", algorithm, recipe.eval_images, recipe.shifted_seed, "shifted", recipe.frame_size
    )
    generate_seconds = time.perf_counter() - t0
    result = train(
        algorithm,
        train_json,
        root / "model",
        epochs=recipe.epochs,
        batch_size=recipe.batch_size,
        lr=recipe.lr,
        device=device,
        seed=recipe.train_seed,
        progress=progress,
        width_mult=recipe.width_mult,
    )
    heldout = evaluate(result.weights, heldout_json, device=device)
    shifted = evaluate(result.weights, shifted_json, device=device)
    report = {
        "algorithm": algorithm,
        "recipe": asdict(recipe),
        "generate_seconds": round(generate_seconds, 1),
        "train": result.to_dict() | {"step_losses": None},
        "heldout": heldout.summary(),
        "shifted": shifted.summary(),
    }
    (root / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    return report


def main(argv: list[str] | None = None) -> None:
    """``python -m ml.train --algorithm helmet [--runs-dir DIR] [--epochs N]``: the recipe from the command line."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithm", required=True)
    parser.add_argument("--runs-dir", type=Path, default=Path(".yiwang/ml_runs"))
    parser.add_argument("--epochs", type=int, help="default: the algorithm's recipe")
    parser.add_argument("--train-images", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    changes = {k: v for k, v in (("epochs", args.epochs), ("train_images", args.train_images), ("lr", args.lr)) if v}
    recipe = replace(recipe_for(args.algorithm), **changes)
    report = train_algorithm(args.algorithm, args.runs_dir, recipe, args.device)
    print(json.dumps({k: report[k] for k in ("heldout", "shifted")}, indent=2))


if __name__ == "__main__":
    main()
