"""A torch Dataset over any COCO-format detection data set (an images folder and an annotations JSON).

Nothing here knows about the scene generator: a real, labelled set of camera frames in COCO format trains the same
way. Classes are matched by category *name* to the algorithm's classes, so category ids may be anything; categories
the algorithm does not know are ignored (with their boxes), ``iscrowd`` boxes too.

Frames are resized to the model's square input here, with Pillow's antialiased resampling, and the scorer does the
same (:func:`resize_for_model`): the model never sees the aliasing of torchvision's internal non-antialiased resize,
and training and scoring see identical pixels.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageEnhance

ANNOTATIONS_FILE = "annotations.json"
IMAGES_DIR = "images"


@dataclass(frozen=True)
class CocoPaths:
    """Where a COCO data set's annotations and images are."""

    annotations: Path
    images: Path


def resolve_coco(dataset: Path | str, images_dir: Path | str | None = None) -> CocoPaths:
    """Accept a data set folder (``annotations.json`` + ``images/``) or an annotations file (images beside it)."""
    path = Path(dataset)
    annotations = path / ANNOTATIONS_FILE if path.is_dir() else path
    if not annotations.is_file():
        raise FileNotFoundError(f"no COCO annotations at {annotations}")
    if images_dir is not None:
        images = Path(images_dir)
    elif (annotations.parent / IMAGES_DIR).is_dir():
        images = annotations.parent / IMAGES_DIR
    else:
        images = annotations.parent
    return CocoPaths(annotations, images)


def load_image(path: Path) -> Image.Image:
    """Decode with Pillow (torchvision's compiled decoders are missing on the CPU torch) as RGB."""
    with Image.open(path) as image:
        return image.convert("RGB")


def resize_for_model(image: Image.Image, input_size: int) -> tuple[Image.Image, float, float]:
    """The square model input and the factors (sx, sy) that map its pixels back to the original frame."""
    width, height = image.size
    resized = (
        image if image.size == (input_size, input_size) else image.resize((input_size, input_size), Image.BILINEAR)
    )
    return resized, width / input_size, height / input_size


def to_tensor(image: Image.Image) -> torch.Tensor:
    """A CHW float tensor in [0, 1] (what torchvision's detectors take)."""
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def dataset_fingerprint(paths: CocoPaths) -> str:
    """sha256 over the annotations file and the referenced images' names and sizes: which data trained a model.

    Sizes rather than contents keep it fast on large sets; a regenerated set with other pixels but the same
    annotations and byte counts is the same set in every way that matters for provenance.
    """
    digest = hashlib.sha256()
    raw = paths.annotations.read_bytes()
    digest.update(raw)
    coco = json.loads(raw)
    for image in sorted(coco.get("images", []), key=lambda i: str(i["file_name"])):
        file = paths.images / image["file_name"]
        size = file.stat().st_size if file.is_file() else -1
        digest.update(f"{image['file_name']}\t{size}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class Augment:
    """Light photometric and geometric augmentation; the ranges are relative changes."""

    flip: float = 0.5
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3


class CocoDetectionDataset(torch.utils.data.Dataset):
    """Items are ``(image tensor CxSxS in [0, 1], target)`` with target boxes (x1, y1, x2, y2) in model pixels.

    ``classes`` gives label order (label i is classes[i - 1]); without it, the file's categories in id order.
    Augmentation is deterministic: it draws from ``numpy.random.default_rng([seed, epoch, index])``; the trainer
    sets ``epoch`` before each pass.
    """

    def __init__(
        self,
        dataset: Path | str,
        classes: Sequence[str] | None = None,
        input_size: int = 320,
        augment: Augment | None = None,
        images_dir: Path | str | None = None,
        seed: int = 0,
    ) -> None:
        self.paths = resolve_coco(dataset, images_dir)
        coco = json.loads(self.paths.annotations.read_text(encoding="utf-8"))
        categories = sorted(coco.get("categories", []), key=lambda c: c["id"])
        self.classes = list(classes) if classes is not None else [str(c["name"]) for c in categories]
        label_of_name = {name: i for i, name in enumerate(self.classes, start=1)}
        self.label_of_category = {c["id"]: label_of_name[c["name"]] for c in categories if c["name"] in label_of_name}
        self.images: list[dict[str, Any]] = sorted(coco.get("images", []), key=lambda i: i["id"])
        self.boxes: dict[int, list[tuple[list[float], int]]] = {image["id"]: [] for image in self.images}
        for ann in coco.get("annotations", []):
            label = self.label_of_category.get(ann["category_id"])
            if label is None or ann.get("iscrowd", 0) or ann["image_id"] not in self.boxes:
                continue
            x, y, w, h = (float(v) for v in ann["bbox"])
            if w < 1 or h < 1:
                continue
            self.boxes[ann["image_id"]].append(([x, y, x + w, y + h], label))
        self.input_size = input_size
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.images)

    def image_path(self, index: int) -> Path:
        return self.paths.images / self.images[index]["file_name"]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        record = self.images[index]
        image = load_image(self.image_path(index))
        width, height = image.size
        image, sx, sy = resize_for_model(image, self.input_size)
        entries = self.boxes[record["id"]]
        boxes = np.array([b for b, _ in entries], dtype=np.float32).reshape(-1, 4)
        labels = np.array([label for _, label in entries], dtype=np.int64)
        boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width) / sx
        boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height) / sy
        if self.augment is not None:
            image, boxes = self._augment(image, boxes, np.random.default_rng([self.seed, self.epoch, index]))
        keep = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
        target = {
            "boxes": torch.from_numpy(boxes[keep]),
            "labels": torch.from_numpy(labels[keep]),
            "image_id": torch.tensor(int(record["id"])),
        }
        return to_tensor(image), target

    def _augment(
        self, image: Image.Image, boxes: np.ndarray, rng: np.random.Generator
    ) -> tuple[Image.Image, np.ndarray]:
        aug = self.augment
        assert aug is not None
        if rng.random() < aug.flip:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
            boxes = boxes.copy()
            boxes[:, [0, 2]] = self.input_size - boxes[:, [2, 0]]
        for enhancer, amount in (
            (ImageEnhance.Brightness, aug.brightness),
            (ImageEnhance.Contrast, aug.contrast),
            (ImageEnhance.Color, aug.saturation),
        ):
            if amount > 0:
                image = enhancer(image).enhance(float(rng.uniform(1 - amount, 1 + amount)))
        return image, boxes


def collate(batch: list[tuple[torch.Tensor, dict[str, torch.Tensor]]]) -> tuple[list[torch.Tensor], list[dict]]:
    """Detection batches are lists (torchvision's detectors take a list of images and a list of targets)."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)
