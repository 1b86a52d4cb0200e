"""Evaluate a detector on a COCO data set with pycocotools' COCOeval (the kept evaluator: no hand-written mAP).

Reported: mAP@0.5 and mAP@[0.5:0.95] (COCO's stats[1] and stats[0]), AP@0.5 per class, the precision-recall curve
per class at IoU 0.5 (COCO's 101 recall points, all areas, 100 detections), and confusion counts at the operating
threshold: detections matched to ground truth regardless of class (IoU >= 0.5, best score first), tallied by
(true class, predicted class), with misses and false alarms. COCOeval matches per class, so it cannot say that a
rider without a helmet was taken for one with a helmet; the confusion counts can.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ml.algorithms import get_algorithm
from ml.data import load_image, resolve_coco

MISSED = "missed"  # column: a ground-truth box no detection matched
FALSE_ALARM = "background"  # row: a detection that matched no ground-truth box


@dataclass
class Evaluation:
    """The numbers of one evaluation; ``pr_curves[c] = {"recall": [...], "precision": [...]}`` at IoU 0.5."""

    map_50: float
    map_50_95: float
    per_class_ap50: dict[str, float]
    pr_curves: dict[str, dict[str, list[float]]]
    confusion: dict[str, dict[str, int]]
    n_images: int
    n_annotations: int
    n_detections: int
    score_threshold: float
    operating_point: dict[str, dict[str, float]] = field(default_factory=dict)
    by_condition: dict[str, dict[str, float]] = field(default_factory=dict)  # mAP@0.5 per lighting, palette, ...

    def summary(self) -> dict[str, Any]:
        """Everything but the curves (for reports and registry metrics)."""
        out = asdict(self)
        out.pop("pr_curves")
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _quiet_coco(gt: dict[str, Any]) -> COCO:
    """A COCO index from a dict, without pycocotools' prints."""
    coco = COCO()
    coco.dataset = gt
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between boxes given as (x, y, w, h), as COCO stores them."""
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx2, by2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, 0][:, None], b[:, 0][None]), 0, None)
    ih = np.clip(np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, 1][:, None], b[:, 1][None]), 0, None)
    inter = iw * ih
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def _confusion(
    gt: dict[str, Any], detections: list[dict[str, Any]], names: dict[int, str], threshold: float
) -> dict[str, dict[str, int]]:
    """Class-agnostic greedy matching at IoU 0.5 per image; counts[true][predicted], misses, false alarms."""
    classes = [names[k] for k in sorted(names)]
    counts = {row: dict.fromkeys([*classes, MISSED], 0) for row in [*classes, FALSE_ALARM]}
    by_image_gt: dict[int, list[dict]] = {}
    for ann in gt["annotations"]:
        if not ann.get("iscrowd", 0) and ann["category_id"] in names:
            by_image_gt.setdefault(ann["image_id"], []).append(ann)
    by_image_det: dict[int, list[dict]] = {}
    for det in detections:
        if det["score"] >= threshold and det["category_id"] in names:
            by_image_det.setdefault(det["image_id"], []).append(det)
    for image in gt["images"]:
        truths = by_image_gt.get(image["id"], [])
        preds = sorted(by_image_det.get(image["id"], []), key=lambda d: -d["score"])
        used = np.zeros(len(truths), dtype=bool)
        if truths and preds:
            ious = _iou_matrix(
                np.array([d["bbox"] for d in preds], dtype=np.float64),
                np.array([t["bbox"] for t in truths], dtype=np.float64),
            )
        for i, pred in enumerate(preds):
            match = -1
            if truths:
                candidates = np.where(~used, ious[i], -1.0)
                best = int(np.argmax(candidates))
                if candidates[best] >= 0.5:
                    match = best
            if match < 0:
                counts[FALSE_ALARM][names[pred["category_id"]]] += 1
                continue
            used[match] = True
            counts[names[truths[match]["category_id"]]][names[pred["category_id"]]] += 1
        for j, truth in enumerate(truths):
            if not used[j]:
                counts[names[truth["category_id"]]][MISSED] += 1
    return counts


def _operating_point(counts: dict[str, dict[str, int]], classes: list[str]) -> dict[str, dict[str, float]]:
    """Precision and recall per class at the operating threshold, from the confusion counts."""
    out: dict[str, dict[str, float]] = {}
    for c in classes:
        true_positive = counts[c][c]
        predicted = sum(counts[row][c] for row in counts)
        actual = sum(counts[c].values())
        out[c] = {
            "precision": round(true_positive / predicted, 4) if predicted else 0.0,
            "recall": round(true_positive / actual, 4) if actual else 0.0,
        }
    return out


def evaluate_detections(
    gt: dict[str, Any] | Path | str,
    detections: list[dict[str, Any]],
    score_threshold: float = 0.5,
) -> Evaluation:
    """COCOeval over detections already in COCO result format (image_id, category_id, bbox xywh, score).

    This is the part with no model in it: the unit test feeds it hand-made cases.
    """
    if not isinstance(gt, dict):
        gt = json.loads(Path(gt).read_text(encoding="utf-8"))
    gt.setdefault("info", {})
    gt.setdefault("licenses", [])
    for annotation in gt["annotations"]:  # optional in COCO files written by others; COCOeval needs both
        annotation.setdefault("iscrowd", 0)
        annotation.setdefault("area", float(annotation["bbox"][2]) * float(annotation["bbox"][3]))
    names = {int(c["id"]): str(c["name"]) for c in gt["categories"]}
    coco_gt = _quiet_coco(gt)
    per_class: dict[str, float] = dict.fromkeys(names.values(), 0.0)
    curves: dict[str, dict[str, list[float]]] = {}
    map_50 = map_50_95 = 0.0
    recall_points = np.linspace(0.0, 1.0, 101)
    if detections:
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = coco_gt.loadRes([dict(d) for d in detections])
            evaluator = COCOeval(coco_gt, coco_dt, "bbox")
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        map_50_95 = max(0.0, float(evaluator.stats[0]))
        map_50 = max(0.0, float(evaluator.stats[1]))
        # precision[T, R, K, A, M]: IoU threshold 0 (0.5), all recall points, class k, area "all", maxDets 100.
        precision = evaluator.eval["precision"]
        recall_points = evaluator.params.recThrs
        for k, cat_id in enumerate(evaluator.params.catIds):
            curve = precision[0, :, k, 0, -1]
            valid = curve[curve > -1]
            per_class[names[cat_id]] = float(valid.mean()) if valid.size else 0.0
            curves[names[cat_id]] = {
                "recall": [round(float(r), 4) for r in recall_points],
                "precision": [round(float(max(p, 0.0)), 4) for p in curve],
            }
    for name in names.values():
        curves.setdefault(name, {"recall": [round(float(r), 4) for r in recall_points], "precision": [0.0] * 101})
    confusion = _confusion(gt, detections, names, score_threshold)
    return Evaluation(
        map_50=round(map_50, 4),
        map_50_95=round(map_50_95, 4),
        per_class_ap50={k: round(v, 4) for k, v in per_class.items()},
        pr_curves=curves,
        confusion=confusion,
        n_images=len(gt["images"]),
        n_annotations=sum(1 for a in gt["annotations"] if not a.get("iscrowd", 0)),
        n_detections=len(detections),
        score_threshold=score_threshold,
        operating_point=_operating_point(confusion, [names[k] for k in sorted(names)]),
    )


def map50_by_condition(
    gt: dict[str, Any], detections: list[dict[str, Any]], keys: Sequence[str] = ("lighting", "palette")
) -> dict[str, dict[str, float]]:
    """mAP@0.5 on the images of each condition, where image records say how they were drawn (``scene``).

    Generated sets record palette and lighting per frame; a real set without ``scene`` gives an empty answer.
    """
    out: dict[str, dict[str, float]] = {}
    for key in keys:
        groups: dict[str, set[int]] = {}
        for image in gt["images"]:
            scene = image.get("scene") or {}
            if key in scene:
                groups.setdefault(str(scene[key]), set()).add(image["id"])
        if not groups:
            continue
        out[key] = {}
        for value, ids in sorted(groups.items()):
            subset = dict(
                gt,
                images=[i for i in gt["images"] if i["id"] in ids],
                annotations=[a for a in gt["annotations"] if a["image_id"] in ids],
            )
            out[key][value] = evaluate_detections(subset, [d for d in detections if d["image_id"] in ids]).map_50
    return out


def predict_coco(
    detector: Any,
    gt: dict[str, Any],
    images_dir: Path,
    batch_size: int = 16,
) -> list[dict[str, Any]]:
    """Run a Detector over every image of a COCO set; results in COCO format with the set's category ids."""
    category_of = {str(c["name"]): int(c["id"]) for c in gt["categories"]}
    results: list[dict[str, Any]] = []
    images = gt["images"]
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        frames = [load_image(images_dir / record["file_name"]) for record in chunk]
        for record, found in zip(chunk, detector.detect(frames), strict=True):
            for det in found:
                if det.class_name not in category_of:
                    continue
                x1, y1, x2, y2 = det.box
                results.append(
                    {
                        "image_id": record["id"],
                        "category_id": category_of[det.class_name],
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "score": det.score,
                    }
                )
    return results


def evaluate(
    model: torch.nn.Module | Path | str,
    annotations: Path | str,
    images_dir: Path | str | None = None,
    device: str = "auto",
    *,
    algorithm: str | None = None,
    classes: Sequence[str] | None = None,
    input_size: int = 320,
    score_threshold: float | None = None,
    batch_size: int = 16,
) -> Evaluation:
    """Evaluate saved weights (a model folder or its model.pt) or a model object on a COCO data set.

    Detections down to score 0.01 go to COCOeval (mAP needs the whole ranking); the confusion counts use the
    algorithm's score threshold unless ``score_threshold`` is given. For a model object, pass ``algorithm`` (and
    ``classes`` when they differ from the algorithm's).
    """
    from ml.models import read_info
    from ml.score import Detector

    paths = resolve_coco(annotations, images_dir)
    gt = json.loads(paths.annotations.read_text(encoding="utf-8"))
    if isinstance(model, (str, Path)):
        detector = Detector.load(model, device=device, score_threshold=0.01, batch_size=batch_size)
        algorithm = read_info(Path(model)).algorithm
    else:
        if algorithm is None:
            raise ValueError("evaluate(model object, ...) needs algorithm=")
        names = list(classes) if classes is not None else get_algorithm(algorithm).class_names
        was_training, saved = model.training, (model.score_thresh, model.detections_per_img)
        detector = Detector(model, algorithm, names, input_size, device=device, score_threshold=0.01)
        detector.batch_size = batch_size
    detections = predict_coco(detector, gt, paths.images, batch_size)
    if not isinstance(model, (str, Path)):
        model.score_thresh, model.detections_per_img = saved
        model.train(was_training)
    threshold = score_threshold if score_threshold is not None else get_algorithm(algorithm).score_threshold
    evaluation = evaluate_detections(gt, detections, threshold)
    evaluation.by_condition = map50_by_condition(gt, detections)
    return evaluation
