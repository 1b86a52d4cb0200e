"""The detector every video algorithm uses, and how a trained one is saved and loaded.

SSDlite320 with a MobileNetV3-Large backbone: it trains and infers on the CPU-only torch through the shim (Faster
R-CNN needs ``roi_align``, which the shim does not provide: torchvision then falls back to a ``torch.compile``d Python
version that takes ~30 s to compile and is slow on two cores). No pretrained weights: the machines have no network.

The default anchors of torchvision's SSDlite start at 20% of the image (64 pixels at 320), made for COCO photos;
camera frames show riders and bins of 20 to 60 pixels once a 16:9 frame is squeezed to 320x320, so the anchor
scales here start at 8% and stop at 80%.

A saved model is two files in one folder: ``model.pt`` (the state dict: no pickled classes, loads with
``weights_only=True``) and ``model.json`` (algorithm, classes, input size, architecture settings, and whatever the
trainer adds: version, data fingerprint, metrics). Loading needs nothing but this module.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ml.algorithms import Algorithm, get_algorithm
from ml.torchvision_shim import torchvision

ARCHITECTURE = "ssdlite320_mobilenet_v3_large"
# One scale per SSDlite feature map (20, 10, 5, 3, 2, 1 cells at 320) plus the extra one DefaultBoxGenerator wants.
ANCHOR_SCALES: tuple[float, ...] = (0.08, 0.16, 0.32, 0.48, 0.64, 0.8, 0.95)
WEIGHTS_FILE = "model.pt"
INFO_FILE = "model.json"


@dataclass
class ModelInfo:
    """What a saved model is: enough to rebuild it and to read its outputs (label i is classes[i - 1])."""

    algorithm: str
    classes: list[str]
    input_size: int = 320
    architecture: str = ARCHITECTURE
    width_mult: float = 1.0
    anchor_scales: list[float] = field(default_factory=lambda: list(ANCHOR_SCALES))
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes) + 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelInfo:
        known = {k: raw[k] for k in ("algorithm", "classes", "input_size", "architecture", "width_mult") if k in raw}
        info = cls(**known)
        if "anchor_scales" in raw:
            info.anchor_scales = [float(s) for s in raw["anchor_scales"]]
        info.extra = dict(raw.get("extra", {}))
        return info


def _anchor_generator(scales: tuple[float, ...] | list[float]) -> nn.Module:
    """Six anchors per cell (ratios 1, 1', 2, 1/2, 3, 1/3) as in SSDlite: the head's shape does not change."""
    detection = torchvision.models.detection
    return detection.anchor_utils.DefaultBoxGenerator([[2, 3] for _ in range(6)], scales=list(scales))


def build_model(
    algorithm: str | Algorithm,
    num_classes: int | None = None,
    *,
    input_size: int | None = None,
    width_mult: float = 1.0,
    anchor_scales: tuple[float, ...] | list[float] = ANCHOR_SCALES,
    score_thresh: float = 0.01,
    detections_per_img: int = 100,
) -> nn.Module:
    """A fresh (randomly initialised) SSDlite for an algorithm.

    ``num_classes`` counts the background (torchvision's convention); by default it is the algorithm's classes + 1.
    ``score_thresh`` is the evaluation default: scoring raises it to the algorithm's threshold, which also prunes
    boxes before NMS.
    """
    algo = get_algorithm(algorithm) if isinstance(algorithm, str) else algorithm
    size = int(input_size or algo.input_size)
    kwargs: dict[str, Any] = {"width_mult": width_mult} if width_mult != 1.0 else {}
    model = torchvision.models.detection.ssdlite320_mobilenet_v3_large(
        weights=None,
        weights_backbone=None,
        num_classes=num_classes or algo.num_classes,
        score_thresh=score_thresh,
        detections_per_img=detections_per_img,
        topk_candidates=200,
        **kwargs,
    )
    model.anchor_generator = _anchor_generator(anchor_scales)
    if size != 320:
        model.transform.fixed_size = (size, size)
        model.transform.min_size = (size,)
        model.transform.max_size = size
    return model


def model_from_info(info: ModelInfo) -> nn.Module:
    """An untrained model shaped as ``info`` says (used to load weights into)."""
    if info.architecture != ARCHITECTURE:
        raise ValueError(f"unsupported architecture {info.architecture!r} (this code builds {ARCHITECTURE})")
    algo = get_algorithm(info.algorithm)
    return build_model(
        algo,
        num_classes=info.num_classes,
        input_size=info.input_size,
        width_mult=info.width_mult,
        anchor_scales=info.anchor_scales,
    )


def save_model(model: nn.Module, info: ModelInfo, out_dir: Path) -> Path:
    """Write ``model.pt`` and ``model.json`` into out_dir; returns the weights path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    weights = out_dir / WEIGHTS_FILE
    torch.save(state, weights)
    (out_dir / INFO_FILE).write_text(json.dumps(info.to_dict(), ensure_ascii=False, indent=2), encoding="utf-8")
    return weights


def read_info(path: Path) -> ModelInfo:
    """The ModelInfo of a saved model (path: its folder, its model.pt or its model.json)."""
    path = Path(path)
    info_path = path / INFO_FILE if path.is_dir() else path.with_name(INFO_FILE)
    return ModelInfo.from_dict(json.loads(info_path.read_text(encoding="utf-8")))


def load_model(path: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelInfo]:
    """A saved model in eval mode on ``device``, with its info (path: its folder, model.pt or model.json)."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    info = read_info(folder)
    model = model_from_info(info)
    state = torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.to(device).eval(), info


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto``: CUDA when there is one, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
