"""The model core of the video algorithms (issue 14): shim, scenes, data, training, evaluation, scoring.

Small on purpose (a few images, a few steps): the real training runs are in ml/train.py's recipe.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import ml.torchvision_shim as shim
from ml.algorithms import get_algorithm, load_algorithms
from ml.data import CocoDetectionDataset, dataset_fingerprint, resolve_coco
from ml.evaluate import evaluate, evaluate_detections
from ml.models import ModelInfo, build_model, load_model, save_model
from ml.scenes import SHIFTED, TRAIN, draw_frame, generate_dataset
from ml.score import Detector
from ml.torchvision_shim import SHIMMED, torchvision
from ml.train import CHECKPOINT_FILE, train

# The PyPI torchvision is a CUDA build: on the CPU torch its compiled ops cannot load and the shim must step in.
EXPECT_SHIM = torch.version.cuda is None and "+cu" in torchvision.__version__

ROOT = Path(__file__).resolve().parents[1]


# --- the shim ---------------------------------------------------------------------------------------------------


def _brute_force_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Greedy NMS written the slow, obvious way (float64, pairwise)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep: list[int] = []
    for i in order:
        ok = True
        for j in keep:
            x1, y1 = max(boxes[i, 0], boxes[j, 0]), max(boxes[i, 1], boxes[j, 1])
            x2, y2 = min(boxes[i, 2], boxes[j, 2]), min(boxes[i, 3], boxes[j, 3])
            inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
            area_i = (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])
            area_j = (boxes[j, 2] - boxes[j, 0]) * (boxes[j, 3] - boxes[j, 1])
            if inter / (area_i + area_j - inter) > threshold:
                ok = False
                break
        if ok:
            keep.append(i)
    return keep


@pytest.mark.parametrize(
    ("n", "threshold", "matrix_limit"),
    [(0, 0.5, 3000), (1, 0.5, 3000), (50, 0.3, 3000), (400, 0.5, 3000), (400, 0.7, 3000), (300, 0.5, 10)],
)
def test_shim_nms_agrees_with_brute_force(
    n: int, threshold: float, matrix_limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both code paths of the shim's kernel (IoU matrix, and row by row above _MATRIX_LIMIT boxes)."""
    if EXPECT_SHIM:
        assert SHIMMED
    monkeypatch.setattr(shim, "_MATRIX_LIMIT", matrix_limit)
    rng = np.random.default_rng(n)
    xy = rng.uniform(0, 300, size=(n, 2))
    wh = rng.uniform(5, 80, size=(n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    scores = rng.permutation(n).astype(np.float32) / max(n, 1)  # distinct scores: the order is unambiguous
    kept = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), threshold)
    assert kept.dtype == torch.int64
    assert kept.tolist() == _brute_force_nms(boxes.astype(np.float64), scores, threshold)
    idxs = rng.integers(0, 3, size=n)
    batched = torchvision.ops.batched_nms(
        torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(idxs), threshold
    )
    expected: set[int] = set()
    for c in range(3):
        members = np.flatnonzero(idxs == c)
        if members.size:
            kept_c = _brute_force_nms(boxes[members].astype(np.float64), scores[members], threshold)
            expected |= {int(members[k]) for k in kept_c}
    assert set(batched.tolist()) == expected


def test_shim_recovers_from_an_earlier_failed_import() -> None:
    """A plain ``import torchvision`` that failed first must not poison the shim's import."""
    code = (
        "import torch\n"
        "try:\n    import torchvision\nexcept Exception as e:\n    print('plain import failed:', type(e).__name__)\n"
        "from ml.torchvision_shim import torchvision, SHIMMED\n"
        "b = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30.]])\n"
        "print(torchvision.ops.nms(b, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist(), SHIMMED)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == f"[0, 2] {SHIMMED}"


# --- algorithms -------------------------------------------------------------------------------------------------


def test_algorithms_are_data() -> None:
    algorithms = load_algorithms()
    assert {"helmet", "garbage_overflow", "street_vending"} <= set(algorithms)
    helmet = get_algorithm("helmet")
    assert helmet.class_names[0] == "rider_no_helmet" and helmet.event_classes == ["rider_no_helmet"]
    assert helmet.input_size == 320 and 0 < helmet.score_threshold < 1
    assert helmet.event_rule.min_detections >= 1 and helmet.event_rule.window_minutes > 0
    assert helmet.label_zh("rider_no_helmet")
    with pytest.raises(KeyError):
        get_algorithm("nope")


# --- scenes -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["helmet", "garbage_overflow", "street_vending"])
def test_generator_is_deterministic_and_writes_valid_coco(tmp_path: Path, algorithm: str) -> None:
    from pycocotools.coco import COCO

    first = generate_dataset(tmp_path / "a", algorithm, 24, seed=5, size=(320, 180))
    second = generate_dataset(tmp_path / "b", algorithm, 24, seed=5, size=(320, 180))
    other = generate_dataset(tmp_path / "c", algorithm, 24, seed=6, size=(320, 180))
    assert first.read_bytes() == second.read_bytes()
    assert (tmp_path / "a/images/000007.jpg").read_bytes() == (tmp_path / "b/images/000007.jpg").read_bytes()
    assert first.read_bytes() != other.read_bytes()
    coco = COCO(str(first))
    assert len(coco.getImgIds()) == 24
    used = {ann["category_id"] for ann in coco.dataset["annotations"]}
    assert used == set(coco.getCatIds()), "every category appears"
    assert [c["name"] for c in coco.dataset["categories"]] == get_algorithm(algorithm).class_names
    for ann in coco.dataset["annotations"]:
        image = coco.imgs[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        assert w > 0 and h > 0 and x >= 0 and y >= 0
        assert x + w <= image["width"] + 1e-6 and y + h <= image["height"] + 1e-6
        with Image.open(tmp_path / "a/images" / image["file_name"]) as frame:
            assert frame.size == (image["width"], image["height"]) and frame.format == "JPEG"


def test_draw_frame_settings_differ() -> None:
    assert set(TRAIN.palettes).isdisjoint(SHIFTED.palettes) and set(TRAIN.lighting).isdisjoint(SHIFTED.lighting)
    assert TRAIN.camera_height_m[1] < SHIFTED.camera_height_m[0]
    image, boxes = draw_frame(np.random.default_rng(0), "helmet", "shifted", (320, 320))
    assert image.size == (320, 320) and image.mode == "RGB"
    for box in boxes:
        assert box["category"] in {"rider_no_helmet", "rider_helmet"} and 0 < box["visibility"] <= 1


# --- data, training, evaluation -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_helmet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("helmet"), "helmet", 8, seed=11, size=(320, 180))


def test_dataset_items_and_fingerprint(tiny_helmet: Path) -> None:
    data = CocoDetectionDataset(tiny_helmet.parent, ["rider_no_helmet", "rider_helmet"], input_size=320)
    image, target = data[0]
    assert image.shape == (3, 320, 320) and float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert target["boxes"].shape[1] == 4 and set(target["labels"].tolist()) <= {1, 2}
    assert float(target["boxes"].max()) <= 320
    fingerprint = dataset_fingerprint(resolve_coco(tiny_helmet))
    assert len(fingerprint) == 64 and fingerprint == dataset_fingerprint(resolve_coco(tiny_helmet.parent))


def test_a_few_training_steps_lower_the_loss(tiny_helmet: Path, tmp_path: Path) -> None:
    result = train(
        "helmet", tiny_helmet, tmp_path / "model", epochs=6, batch_size=8, lr=3e-3, seed=0, progress=False, augment=None
    )
    assert len(result.losses) == 6 and len(result.step_losses) == 6
    assert result.losses[-1] < 0.8 * result.step_losses[0]
    assert result.weights.is_file() and (tmp_path / "model/model.json").is_file()
    info = json.loads((tmp_path / "model/model.json").read_text())
    assert info["extra"]["data_fingerprint"] == result.data_fingerprint
    model, loaded = load_model(result.weights)
    assert loaded.classes == ["rider_no_helmet", "rider_helmet"] and not model.training


def test_training_further_starts_from_the_given_weights(tiny_helmet: Path, tmp_path: Path) -> None:
    """--start-from: the second run begins where the first ended (its first loss is near the first run's last, far
    below a fresh model's), keeps the first model's shape and records its lineage; another algorithm is refused."""
    settings = {"batch_size": 8, "lr": 3e-3, "seed": 0, "progress": False, "augment": None}
    first = train("helmet", tiny_helmet, tmp_path / "first", epochs=6, width_mult=0.75, **settings)
    further = train("helmet", tiny_helmet, tmp_path / "further", epochs=1, init_from=tmp_path / "first", **settings)
    assert further.step_losses[0] < 0.8 * first.step_losses[0]
    info = json.loads((tmp_path / "further/model.json").read_text())
    assert info["width_mult"] == 0.75  # the starting model's shape, not the default width
    assert info["extra"]["trained_from"]["epochs"] == 6
    assert info["extra"]["trained_from"]["data_fingerprint"] == first.data_fingerprint
    with pytest.raises(ValueError, match="cannot start a street_vending model"):
        train("street_vending", tiny_helmet, tmp_path / "wrong", epochs=1, init_from=tmp_path / "first", **settings)


def test_a_killed_training_resumes_from_its_last_epoch(tiny_helmet: Path, tmp_path: Path) -> None:
    """A run stopped in its second epoch leaves the first epoch's checkpoint; the same run again goes on from there
    (the first epoch's losses are kept, not recomputed) and the finished run removes the checkpoint."""
    settings = {"epochs": 2, "batch_size": 4, "lr": 3e-3, "seed": 0, "progress": False, "augment": None}
    steps_per_epoch = 2  # 8 frames, batches of 4

    def stop_in_second_epoch(step: int, loss: float) -> None:
        if step == steps_per_epoch + 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train("helmet", tiny_helmet, tmp_path / "model", on_step=stop_in_second_epoch, **settings)
    assert (tmp_path / "model" / CHECKPOINT_FILE).is_file()
    first_epoch = torch.load(tmp_path / "model" / CHECKPOINT_FILE, weights_only=False)["epoch_losses"]

    seen: list[int] = []
    result = train("helmet", tiny_helmet, tmp_path / "model", on_step=lambda step, _: seen.append(step), **settings)
    assert seen == [3, 4]  # only the second epoch ran
    assert result.losses[0] == first_epoch[0] and len(result.losses) == 2 and len(result.step_losses) == 4
    assert not (tmp_path / "model" / CHECKPOINT_FILE).exists() and result.weights.is_file()


def _hand_made_gt() -> dict:
    """Three 100x100 images: two cats in image 1, one dog in image 2, one cat in image 3."""
    return {
        "images": [{"id": i, "file_name": f"{i}.jpg", "width": 100, "height": 100} for i in (1, 2, 3)],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [60, 60, 30, 30], "area": 900, "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 2, "bbox": [5, 5, 50, 40], "area": 2000, "iscrowd": 0},
            {"id": 4, "image_id": 3, "category_id": 1, "bbox": [40, 40, 30, 30], "area": 900, "iscrowd": 0},
        ],
    }


def _as_detection(ann: dict, score: float, **changes: object) -> dict:
    det = {"image_id": ann["image_id"], "category_id": ann["category_id"], "bbox": list(ann["bbox"]), "score": score}
    det.update(changes)
    return det


def test_evaluator_on_hand_made_cases() -> None:
    gt = _hand_made_gt()
    anns = gt["annotations"]
    perfect = evaluate_detections(_hand_made_gt(), [_as_detection(a, 0.9) for a in anns])
    assert perfect.map_50 == 1.0 and perfect.map_50_95 == 1.0
    assert perfect.per_class_ap50 == {"cat": 1.0, "dog": 1.0}
    assert perfect.confusion["cat"]["cat"] == 3 and perfect.confusion["dog"]["dog"] == 1
    # Cats: 2 of 3 found, both ranked first: precision 1 up to recall 2/3, then nothing. COCO interpolates at 101
    # recall points r = 0, 0.01, ..., 1: 67 of them are <= 2/3, so AP(cat) = 67/101; dog is perfect.
    two_of_three = evaluate_detections(_hand_made_gt(), [_as_detection(a, 0.9) for a in anns if a["id"] != 4])
    assert two_of_three.per_class_ap50["cat"] == pytest.approx(67 / 101, abs=1e-4)
    assert two_of_three.map_50 == pytest.approx((67 / 101 + 1.0) / 2, abs=1e-4)
    assert two_of_three.confusion["cat"]["missed"] == 1
    # A false alarm ranked above all cats: precision 1/2 at recall 1/3, 2/3 at 2/3, 3/4 at 1; interpolated
    # precision is the best to the right, 3/4 everywhere: AP(cat) = 0.75.
    false_alarm = {"image_id": 2, "category_id": 1, "bbox": [70, 5, 20, 20], "score": 0.99}
    with_false_alarm = evaluate_detections(_hand_made_gt(), [false_alarm, *(_as_detection(a, 0.9) for a in anns)])
    assert with_false_alarm.per_class_ap50["cat"] == pytest.approx(0.75, abs=1e-4)
    assert with_false_alarm.confusion["background"]["cat"] == 1
    # A dog taken for a cat: COCO sees a missed dog and a false cat; the confusion counts see the mix-up.
    swapped = [_as_detection(a, 0.9, category_id=1) for a in anns]
    mixed = evaluate_detections(_hand_made_gt(), swapped)
    assert mixed.per_class_ap50["dog"] == 0.0 and mixed.confusion["dog"]["cat"] == 1
    assert mixed.operating_point["cat"]["recall"] == 1.0 and mixed.operating_point["cat"]["precision"] == 0.75
    nothing = evaluate_detections(_hand_made_gt(), [])
    assert nothing.map_50 == 0.0 and nothing.confusion["cat"]["missed"] == 3
    curve = perfect.pr_curves["cat"]
    assert len(curve["recall"]) == len(curve["precision"]) == 101


# --- scoring ----------------------------------------------------------------------------------------------------


class _FixedBoxes(torch.nn.Module):
    """Stands in for SSD: answers every image with one box at (32, 32)-(64, 96) in model-input pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.score_thresh = 0.0
        self.detections_per_img = 100
        self.seen: list[tuple[int, ...]] = []

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        self.seen.extend(tuple(img.shape) for img in images)
        box = torch.tensor([[32.0, 32.0, 64.0, 96.0], [0.0, 0.0, 10.0, 10.0]])
        return [{"boxes": box, "scores": torch.tensor([0.9, 0.2]), "labels": torch.tensor([2, 1])} for _ in images]


def test_detector_returns_boxes_in_original_pixels() -> None:
    stub = _FixedBoxes()
    detector = Detector(stub, "helmet", ["rider_no_helmet", "rider_helmet"], 320, "v1", "cpu", batch_size=2, fuse=False)
    frames = [Image.new("RGB", (640, 360)), Image.new("RGB", (320, 320)), Image.new("RGB", (1280, 720))]
    found = detector.detect(frames)
    assert stub.seen == [(3, 320, 320)] * 3
    assert [len(f) for f in found] == [1, 1, 1], "the 0.2 box is under the helmet threshold"
    assert found[0][0].class_name == "rider_helmet" and found[0][0].score == pytest.approx(0.9)
    assert found[0][0].box == (64.0, 36.0, 128.0, 108.0)
    assert found[1][0].box == (32.0, 32.0, 64.0, 96.0)
    assert found[2][0].box == (128.0, 72.0, 256.0, 216.0)
    # A real (untrained) SSDlite through the same path: every box inside its frame.
    real = Detector(
        build_model("helmet"), "helmet", ["rider_no_helmet", "rider_helmet"], 320, device="cpu", score_threshold=0.0
    )
    for frame, boxes in zip(frames[:1], real.detect(frames[:1]), strict=True):
        assert boxes and all(0 <= d.box[0] < d.box[2] <= frame.width for d in boxes)
        assert all(0 <= d.box[1] < d.box[3] <= frame.height for d in boxes)


def test_save_and_load_give_the_same_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("garbage_overflow").eval()
    save_model(model, ModelInfo("garbage_overflow", get_algorithm("garbage_overflow").class_names), tmp_path)
    loaded, info = load_model(tmp_path)
    assert info.num_classes == 4
    x = [torch.rand(3, 320, 320)]
    with torch.inference_mode():
        a, b = model(x)[0], loaded(x)[0]
    assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])


# --- a COCO set that is not ours ----------------------------------------------------------------------------------


def test_a_foreign_coco_dataset_trains_and_evaluates(tmp_path: Path) -> None:
    """Category ids, file layout and extra categories as another tool would write them; matched by class name."""
    pictures = tmp_path / "frames" / "cam7"
    pictures.mkdir(parents=True)
    images, annotations = [], []
    for i in range(6):
        frame = Image.new("RGB", (200, 150), (90 + 10 * i, 120, 100))
        draw = ImageDraw.Draw(frame)
        x = 20 + 25 * i
        draw.rectangle((x, 40, x + 40, 110), fill=(220, 30, 30))
        draw.rectangle((150 - i * 10, 10, 190 - i * 10, 50), fill=(240, 220, 40))
        frame.save(pictures / f"shot_{i}.jpg", quality=90)
        images.append({"id": 100 + i, "file_name": f"cam7/shot_{i}.jpg", "width": 200, "height": 150})
        annotations += [
            {"id": 10 * i + 1, "image_id": 100 + i, "category_id": 42, "bbox": [x, 40, 41, 71], "iscrowd": 0},
            {"id": 10 * i + 2, "image_id": 100 + i, "category_id": 7, "bbox": [150 - i * 10, 10, 41, 41]},
            {"id": 10 * i + 3, "image_id": 100 + i, "category_id": 9, "bbox": [0, 0, 5, 5], "iscrowd": 0},
            {"id": 10 * i + 4, "image_id": 100 + i, "category_id": 42, "bbox": [0, 100, 199, 49], "iscrowd": 1},
        ]
    coco = {
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": 7, "name": "rider_helmet"},
            {"id": 9, "name": "traffic_cone"},
            {"id": 42, "name": "rider_no_helmet"},
        ],
    }
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(coco))
    data = CocoDetectionDataset(labels, ["rider_no_helmet", "rider_helmet"], images_dir=tmp_path / "frames")
    assert sorted(data[0][1]["labels"].tolist()) == [1, 2], "cone and crowd boxes dropped, ids mapped by name"
    result = train(
        "helmet", labels, tmp_path / "model", epochs=2, batch_size=3, progress=False, images_dir=tmp_path / "frames"
    )
    assert len(result.losses) == 2 and all(np.isfinite(result.losses))
    evaluation = evaluate(result.weights, labels, tmp_path / "frames", device="cpu")
    assert evaluation.n_images == 6 and evaluation.n_annotations == 18  # every non-crowd box, the cone included
    assert set(evaluation.per_class_ap50) == {"rider_helmet", "traffic_cone", "rider_no_helmet"}
    assert 0.0 <= evaluation.map_50 <= 1.0
