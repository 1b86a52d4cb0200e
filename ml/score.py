"""Batched inference: frames in, detections in the frames' own pixel coordinates out.

This module is what batch and stream scoring import, on this machine or a GPU one, so it depends on nothing of the
platform: only ``ml.*``, torch, torchvision (through the shim), PIL and numpy.

Speed on two CPU cores comes from three things: frames are resized with Pillow before they become tensors (a
320x320 uint8 batch is all that is copied), the model's score threshold is the algorithm's (so boxes are pruned
before NMS instead of after), and the shim's NMS is vectorised.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ml.algorithms import get_algorithm
from ml.data import resize_for_model
from ml.models import load_model, resolve_device


def fuse_conv_bn(model: torch.nn.Module) -> torch.nn.Module:
    """Fold every BatchNorm that directly follows a convolution into it (inference only; fewer passes over memory).

    MobileNetV3 and the SSDlite head are Conv2d-BatchNorm-activation sequences throughout; folding removes about a
    third of the layers a frame goes through and gives the same outputs up to float rounding.
    """
    for module in model.modules():
        if not isinstance(module, torch.nn.Sequential):
            continue
        children = list(module.named_children())
        for (name, conv), (next_name, bn) in itertools.pairwise(children):
            if isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d):
                setattr(module, name, torch.nn.utils.fusion.fuse_conv_bn_eval(conv, bn))
                setattr(module, next_name, torch.nn.Identity())
    return model


@dataclass(frozen=True)
class Detection:
    """One detected object: class name, score in [0, 1], box (x1, y1, x2, y2) in pixels of the original frame."""

    class_name: str
    score: float
    box: tuple[float, float, float, float]

    def to_dict(self) -> dict:
        return {"class_name": self.class_name, "score": self.score, "box": list(self.box)}


class Detector:
    """A trained model ready to score frames of any size, in batches, with its algorithm's threshold.

    ``version`` is carried for the caller (the registry's model version) and not used here. With ``fuse`` (the
    default) the Detector works on a copy of the model with BatchNorm folded into the convolutions.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        algorithm: str,
        classes: Sequence[str],
        input_size: int = 320,
        version: str = "",
        device: str | torch.device = "auto",
        score_threshold: float | None = None,
        batch_size: int = 16,
        max_detections: int = 100,
        fuse: bool = True,
    ) -> None:
        self.device = resolve_device(device)
        self.algorithm = algorithm
        self.classes = list(classes)
        self.input_size = int(input_size)
        self.version = version
        self.batch_size = batch_size
        self.score_threshold = (
            float(score_threshold) if score_threshold is not None else get_algorithm(algorithm).score_threshold
        )
        model = model.to(self.device).eval()
        if fuse:
            model = fuse_conv_bn(copy.deepcopy(model))
        if self.device.type == "cpu":
            model = model.to(memory_format=torch.channels_last)
        # SSD drops boxes under score_thresh before its per-class top-k and NMS: the cheap place to prune.
        model.score_thresh = self.score_threshold
        model.detections_per_img = max_detections
        self.model = model

    @classmethod
    def load(
        cls,
        path: Path | str,
        device: str | torch.device = "auto",
        version: str = "",
        score_threshold: float | None = None,
        batch_size: int = 16,
    ) -> Detector:
        """A Detector from a saved model folder (``model.pt`` + ``model.json``)."""
        target = resolve_device(device)
        model, info = load_model(Path(path), target)
        return cls(model, info.algorithm, info.classes, info.input_size, version, target, score_threshold, batch_size)

    def _chunks(self, images: Sequence[Image.Image]) -> Iterator[Sequence[Image.Image]]:
        for start in range(0, len(images), self.batch_size):
            yield images[start : start + self.batch_size]

    def _batch_tensor(self, images: Sequence[Image.Image]) -> tuple[torch.Tensor, list[tuple[float, float]]]:
        """Resize on the CPU with Pillow, stack as uint8, convert to float on the target device."""
        arrays, scales = [], []
        for image in images:
            rgb = image if image.mode == "RGB" else image.convert("RGB")
            resized, sx, sy = resize_for_model(rgb, self.input_size)
            arrays.append(np.asarray(resized, dtype=np.uint8))
            scales.append((sx, sy))
        batch = torch.from_numpy(np.stack(arrays)).to(self.device, non_blocking=True)
        return batch.permute(0, 3, 1, 2).float().div_(255.0), scales

    @torch.inference_mode()
    def detect(self, images: Sequence[Image.Image]) -> list[list[Detection]]:
        """Detections per frame, best first, above the score threshold, boxes in the frame's own pixels."""
        results: list[list[Detection]] = []
        for chunk in self._chunks(list(images)):
            batch, scales = self._batch_tensor(chunk)
            outputs = self.model(list(batch))
            for output, (sx, sy) in zip(outputs, scales, strict=True):
                boxes = output["boxes"].float().cpu().numpy() * np.array([sx, sy, sx, sy], dtype=np.float32)
                scores = output["scores"].float().cpu().numpy()
                labels = output["labels"].cpu().numpy()
                found: list[Detection] = []
                for box, score, label in zip(boxes, scores, labels, strict=True):
                    if 0 < int(label) <= len(self.classes) and score >= self.score_threshold:
                        x1, y1, x2, y2 = (round(float(v), 1) for v in box)
                        found.append(Detection(self.classes[int(label) - 1], round(float(score), 4), (x1, y1, x2, y2)))
                results.append(found)
        return results
