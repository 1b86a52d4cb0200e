"""Benchmark: video AI scoring throughput and the shipped models' accuracy (issue 14).

1. Frames per second of batch scoring (`Detector.detect` on 640x360 frames: resize, model, NMS, boxes back in
   frame pixels) with the production `helmet` model at its input size, batch sizes 8/16/32, on this machine's
   device (2 CPU cores here; run the same command on a GPU machine for the GPU figure).
2. mAP@0.5 of each algorithm's production version on the held-out generated set (another seed, the training
   settings) and on the shifted set (settings the training set never used), as the registry recorded them.

Without a production `helmet` model it times the newest trained model under `.yiwang/ml_runs/helmet/model`, else
an untrained one (and says so: an untrained model's NMS load is not a trained model's).
Targets: >= 20 frames/s on 2 CPU cores; >= 3,100 frames/s on one H100/H200-class GPU; mAP@0.5 >= 0.8 held out.
Run: `python -m bench.video [--device auto|cpu|cuda]`; figures in bench/out/video.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from ml.algorithms import load_algorithms
from ml.bench_scoring import benchmark

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "video.json"


def _production_weights() -> tuple[Path | None, str]:
    """The production helmet model's folder (copied out of the registry), else a local training run's."""
    from ml.registry import ModelRegistry, RegistryError

    try:
        registry = ModelRegistry.from_settings()
        info = registry.production("helmet")
        if info is not None:
            target = Path(tempfile.mkdtemp(prefix="bench-video-")) / "model"
            with registry.weights_of(info) as folder:
                shutil.copytree(folder, target)
            return target, f"registry helmet version {info.version} (production)"
    except RegistryError:
        pass
    local = ROOT / ".yiwang" / "ml_runs" / "helmet" / "model"
    if (local / "model.pt").is_file():
        return local, f"local training run {local}"
    return None, "untrained helmet model (no production or trained model found)"


def _accuracy() -> dict[str, dict[str, float | str | None]]:
    from ml.registry import ModelRegistry, RegistryError

    figures: dict[str, dict[str, float | str | None]] = {}
    try:
        registry = ModelRegistry.from_settings()
    except RegistryError:
        return figures
    for name in load_algorithms():
        info = registry.production(name)
        if info is not None:
            figures[name] = {"version": info.version, "map_50": info.map_50, "map_50_shifted": info.map_50_shifted}
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--frames", type=int, default=96)
    args = parser.parse_args(argv)
    weights, which = _production_weights()
    print(f"model: {which}")
    report = benchmark(weights, "helmet", (8, 16, 32), args.frames, args.device)
    report["model"] = which
    report["accuracy"] = _accuracy()
    for name, figures in report["accuracy"].items():
        held_out, shifted = figures["map_50"], figures["map_50_shifted"]
        print(f"{name}: version {figures['version']}, mAP@0.5 held-out {held_out}, shifted {shifted}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"written to {OUT}")


if __name__ == "__main__":
    main()
