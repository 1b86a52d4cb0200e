"""Scoring throughput: frames per second of ``Detector.detect`` per batch size, on this machine's device.

``python -m ml.bench_scoring --weights .yiwang/ml_runs/helmet/model --out bench.json`` times the whole path a
scorer pays for: 640x360 frames as PIL images in, resize, model, NMS, boxes back in frame pixels. Without
``--weights`` it uses an untrained model of the algorithm (an untrained model scores everything near 1/classes, so
its NMS load is not a trained model's: say so when quoting such numbers).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ml.algorithms import get_algorithm
from ml.models import build_model, resolve_device
from ml.scenes import draw_frame
from ml.score import Detector


def _frames(algorithm: str, count: int, size: tuple[int, int], seed: int) -> list:
    rng = np.random.default_rng(seed)
    return [draw_frame(rng, algorithm, "train", size)[0] for _ in range(count)]


def benchmark(
    weights: Path | None,
    algorithm: str = "helmet",
    batch_sizes: tuple[int, ...] = (8, 16, 32),
    frames: int = 96,
    device: str = "auto",
    threads: int = 2,
    frame_size: tuple[int, int] = (640, 360),
    repeats: int = 2,
) -> dict[str, Any]:
    """Frames/s per batch size (best of ``repeats`` passes over ``frames`` frames, after one warm-up batch)."""
    target = resolve_device(device)
    if target.type == "cpu":
        torch.set_num_threads(threads)
    if weights is not None:
        base = Detector.load(weights, device=target)
        algorithm = base.algorithm
    else:
        torch.manual_seed(0)
        algo = get_algorithm(algorithm)
        base = Detector(build_model(algo), algo.name, algo.class_names, algo.input_size, device=target)
    images = _frames(algorithm, frames, frame_size, seed=99)
    results = []
    for batch_size in batch_sizes:
        base.batch_size = batch_size
        base.detect(images[:batch_size])
        best = float("inf")
        found = 0
        for _ in range(repeats):
            if target.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            detections = base.detect(images)
            if target.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
            found = sum(len(d) for d in detections)
        results.append(
            {
                "batch_size": batch_size,
                "frames": frames,
                "seconds": round(best, 3),
                "frames_per_second": round(frames / best, 2),
                "detections_per_frame": round(found / frames, 2),
            }
        )
        print(
            f"batch {batch_size:>3}: {frames / best:7.2f} frames/s on {target} ({found / frames:.2f} detections/frame)"
        )
    return {
        "algorithm": algorithm,
        "weights": str(weights) if weights else None,
        "trained": weights is not None,
        "device": str(target),
        "device_name": torch.cuda.get_device_name(target) if target.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads() if target.type == "cpu" else None,
        "input_size": base.input_size,
        "frame_size": list(frame_size),
        "score_threshold": base.score_threshold,
        "torch": torch.__version__,
        "results": results,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, help="a saved model folder; default: an untrained model")
    parser.add_argument("--algorithm", default="helmet")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    report = benchmark(args.weights, args.algorithm, tuple(args.batch_sizes), args.frames, args.device, args.threads)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
