"""Versions of the appeal classifier on disk: train, record, promote, load.

    <models>/appeal_classifier/
        versions/<version>/model.joblib   the trained AppealClassifier
        versions/<version>/card.json      fingerprint, training data, parameters, held-out figures
        promoted.json                     the version the platform uses
        promotions.jsonl                  every promotion: version, when (CST), why

A version is named after its data fingerprint (`ac-` + 12 hex digits of SHA-256 over the training
rows, the training parameters and the library versions), so training twice on the same labels gives
the same version and new labels always give a new one. Versions are written to a temporary folder
and renamed into place, and `promoted.json` is replaced atomically: a reader never meets half a model.
The folder is local and written only by the platform; `joblib` (pickle) files are loaded from it only.

When the video-AI model registry arrives, this store's versions move into it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import joblib
import polars as pl

from ingestion.keys import CST
from thematic_libs.urban.classifier import AppealClassifier, ClassifierConfig, data_fingerprint
from thematic_libs.urban.corpus import corpus_split, file_sha256, read_labels
from thematic_libs.urban.evaluation import evaluate, meets_floors

NAME = "appeal_classifier"


class ModelStoreError(RuntimeError):
    """A version that does not exist, or a store that cannot be used."""


@dataclass(frozen=True)
class TrainingOutcome:
    version: str
    card: dict[str, Any]
    created: bool  # False: a version with this fingerprint existed already
    promoted: bool
    not_promoted_because: list[str]


def _now() -> str:
    return datetime.now(CST).isoformat(timespec="seconds")


class ModelStore:
    def __init__(self, models_dir: Path) -> None:
        self.root = Path(models_dir) / NAME

    def _version_dir(self, version: str) -> Path:
        return self.root / "versions" / version

    def versions(self) -> list[dict[str, Any]]:
        """Every version's card, oldest first."""
        cards = [json.loads(p.read_text(encoding="utf-8")) for p in self.root.glob("versions/*/card.json")]
        return sorted(cards, key=lambda c: (c["created_at"], c["version"]))

    def card(self, version: str) -> dict[str, Any]:
        path = self._version_dir(version) / "card.json"
        if not path.is_file():
            known = ", ".join(c["version"] for c in self.versions()) or "none yet"
            raise ModelStoreError(f"no classifier version {version!r} in {self.root} (known: {known})")
        return json.loads(path.read_text(encoding="utf-8"))

    def load(self, version: str) -> AppealClassifier:
        self.card(version)
        return joblib.load(self._version_dir(version) / "model.joblib")

    def promoted(self) -> str | None:
        path = self.root / "promoted.json"
        return json.loads(path.read_text(encoding="utf-8"))["version"] if path.is_file() else None

    def promote(self, version: str, reason: str) -> None:
        self.card(version)
        entry = {"version": version, "promoted_at": _now(), "reason": reason}
        self.root.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.root, prefix=".promoted-")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(entry, out, ensure_ascii=False)
        os.replace(temporary, self.root / "promoted.json")
        with (self.root / "promotions.jsonl").open("a", encoding="utf-8") as log:
            log.write(json.dumps(entry, ensure_ascii=False) + "\n")

    def _save(self, version: str, classifier: AppealClassifier, card: dict[str, Any]) -> bool:
        """Write a version atomically; False when another process wrote the same version first."""
        target = self._version_dir(version)
        if target.exists():
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{version}-"))
        try:
            joblib.dump(classifier, staging / "model.joblib")
            (staging / "card.json").write_text(json.dumps(card, ensure_ascii=False, indent=2), encoding="utf-8")
            os.rename(staging, target)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if target.exists():  # lost the race to an identical version
                return False
            raise
        return True

    def train(
        self,
        config: ClassifierConfig,
        labels: Path | None = None,
        test_labels: Path | None = None,
        promote: bool = True,
    ) -> TrainingOutcome:
        """Train on the corpus's training split plus `labels`; evaluate on the held-out split (plus
        `test_labels`); record the version; promote it when its figures reach the floors."""
        training = corpus_split("train").select("text", "event_code").with_columns(pl.lit("corpus").alias("source"))
        sources: list[dict[str, Any]] = [{"source": "corpus train split", "rows": training.height}]
        if labels is not None:
            extra = read_labels(labels)
            training = pl.concat([training, extra])
            sources.append({"source": str(labels), "rows": extra.height, "sha256": file_sha256(labels)})
        test = corpus_split("test")
        if test_labels is not None:
            extra_test = read_labels(test_labels).with_columns(pl.lit("district").alias("style"))
            test = pl.concat([test.select("text", "event_code", "style"), extra_test.drop("source")])
        texts = training.get_column("text").to_list()
        codes = training.get_column("event_code").to_list()
        fingerprint = data_fingerprint(texts, codes, config)
        version = f"ac-{fingerprint[:12]}"
        created = not (self._version_dir(version) / "card.json").is_file()
        if created:
            classifier = AppealClassifier.fit(texts, codes, config)
            card = {
                "version": version,
                "fingerprint": fingerprint,
                "created_at": _now(),
                "training": {"rows": training.height, "sources": sources},
                "held_out": {
                    "rows": test.height,
                    "test_labels": str(test_labels) if test_labels else None,
                    **evaluate(classifier, test, config.min_confidence),
                },
                "model": classifier.describe(),
            }
            created = self._save(version, classifier, card)
        card = self.card(version)
        missed = meets_floors(card["held_out"]["overall"], config.promote_floors)
        promoted = False
        if promote and not missed and self.promoted() != version:
            self.promote(version, "trained; held-out figures reach the floors")
            promoted = True
        return TrainingOutcome(version, card, created, promoted or self.promoted() == version, missed)

    def promoted_classifier(self, config: ClassifierConfig) -> tuple[str, AppealClassifier]:
        """The promoted version. A store with none trains one from the packaged corpus and promotes it even
        below the floors (the packaged configuration is what the test suite holds to them; a platform
        that classified nothing would be worse); the card and promotions.jsonl record what it missed."""
        version = self.promoted()
        if version is None:
            outcome = self.train(config, promote=False)
            version = outcome.version
            missed = "; ".join(outcome.not_promoted_because)
            self.promote(
                version, "first use: trained on the packaged corpus" + (f" (below floors: {missed})" if missed else "")
            )
        return version, self.load(version)
