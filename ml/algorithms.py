"""The algorithm warehouse as data: which classes each video algorithm detects and when its detections are an event.

The definitions live in ``algorithms.yaml`` beside this module so that the trainer, the scorer and the event code
(written elsewhere) read one source; adding a threshold or a class is an edit to data, not to code.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

DEFINITIONS = Path(__file__).with_name("algorithms.yaml")


@dataclass(frozen=True)
class DetectionClass:
    """One class a detector finds: English key, Chinese label, and whether a detection of it raises an event."""

    name: str
    label_zh: str
    event: bool


@dataclass(frozen=True)
class EventRule:
    """An event is K detections of an event class on one camera within W minutes (then a cooldown)."""

    min_detections: int
    window_minutes: float
    cooldown_minutes: float


@dataclass(frozen=True)
class Algorithm:
    """A video algorithm of the warehouse. ``class_names`` gives the model's labels 1..n (0 is background)."""

    name: str
    title_zh: str
    description: str
    input_size: int
    score_threshold: float
    classes: tuple[DetectionClass, ...]
    event_rule: EventRule

    @property
    def class_names(self) -> list[str]:
        """Class names in label order (label i+1 is class_names[i])."""
        return [c.name for c in self.classes]

    @property
    def event_classes(self) -> list[str]:
        """Names of the classes whose detections count towards an event."""
        return [c.name for c in self.classes if c.event]

    @property
    def num_classes(self) -> int:
        """Number of model outputs, background included (what torchvision's detectors call num_classes)."""
        return len(self.classes) + 1

    def label_zh(self, class_name: str) -> str:
        """The Chinese label of a class, for dispatchers and dashboards."""
        for c in self.classes:
            if c.name == class_name:
                return c.label_zh
        raise KeyError(f"{self.name} has no class {class_name!r}")


def _parse(name: str, raw: dict) -> Algorithm:
    """Build one Algorithm from its YAML mapping, failing loudly on a missing key."""
    classes = tuple(
        DetectionClass(str(c["name"]), str(c["label_zh"]), bool(c.get("event", False))) for c in raw["classes"]
    )
    if not classes or not any(c.event for c in classes):
        raise ValueError(f"algorithm {name}: needs at least one class with event: true")
    if len({c.name for c in classes}) != len(classes):
        raise ValueError(f"algorithm {name}: duplicate class names")
    rule = raw["event_rule"]
    return Algorithm(
        name=name,
        title_zh=str(raw.get("title_zh", name)),
        description=str(raw.get("description", "")),
        input_size=int(raw.get("input_size", 320)),
        score_threshold=float(raw["score_threshold"]),
        classes=classes,
        event_rule=EventRule(
            min_detections=int(rule["min_detections"]),
            window_minutes=float(rule["window_minutes"]),
            cooldown_minutes=float(rule.get("cooldown_minutes", 0)),
        ),
    )


@cache
def _load(path: Path) -> dict[str, Algorithm]:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))["algorithms"]
    return {name: _parse(name, body) for name, body in raw.items()}


def load_algorithms(path: Path | None = None) -> dict[str, Algorithm]:
    """All algorithms of the warehouse by name (from ``algorithms.yaml`` unless another file is given)."""
    return dict(_load((path or DEFINITIONS).resolve()))


def get_algorithm(name: str) -> Algorithm:
    """One algorithm by name, with the known names in the error when it does not exist."""
    algorithms = load_algorithms()
    if name not in algorithms:
        raise KeyError(f"unknown algorithm {name!r}; known: {', '.join(sorted(algorithms))}")
    return algorithms[name]
