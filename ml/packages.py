"""Model packages: one registered version as plain files, to ship trained models with the repository.

Training a detector takes the better part of an hour on 2 CPU cores, so the models trained here are kept in
`ml/pretrained/<algorithm>/` (`model.pt` + `model.json` as `ml.models.save_model` writes them, and
`registration.json`: the figures the version was registered with: held-out and shifted mAP@0.5, per-class AP,
epochs, training seconds, the fingerprints of the training, held-out and shifted sets). `yiwang ml import`
registers them in any registry, so that `make run` scores frames on a fresh machine with models whose figures
were measured when they were trained, and says so. `yiwang ml package` writes a package from a registered version.

Importing is idempotent: a package is recognised by the SHA-256 of its weights (the version tag
`package_sha256`), and importing it again registers nothing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml.models import INFO_FILE, WEIGHTS_FILE
from ml.registry import (
    TAG_HELDOUT_FINGERPRINT,
    TAG_SHIFTED_FINGERPRINT,
    ModelRegistry,
    ModelVersionInfo,
    RegistryError,
)

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
REGISTRATION_FILE = "registration.json"
TAG_PACKAGE = "package_sha256"


@dataclass(frozen=True)
class Package:
    """A model package on disk: where it is, what it is for and the figures it was registered with."""

    folder: Path
    algorithm: str
    sha256: str
    registration: dict[str, Any]


def weights_sha256(folder: Path) -> str:
    """SHA-256 of a saved model's weights file: what makes two packages the same model."""
    return hashlib.sha256((folder / WEIGHTS_FILE).read_bytes()).hexdigest()


def read_package(folder: Path) -> Package:
    """The package in `folder`, or a RegistryError that names the missing or broken file."""
    files = [folder / name for name in (WEIGHTS_FILE, INFO_FILE, REGISTRATION_FILE)]
    missing = [path.name for path in files if not path.is_file()]
    if missing:
        raise RegistryError(f"{folder} is not a model package: {', '.join(missing)} missing (`yiwang ml package`)")
    try:
        registration = json.loads(files[2].read_text(encoding="utf-8"))
        algorithm = str(json.loads(files[1].read_text(encoding="utf-8"))["algorithm"])
    except (ValueError, KeyError) as error:
        raise RegistryError(
            f"{folder}: unreadable package ({error}); write it again with `yiwang ml package`"
        ) from None
    return Package(folder, algorithm, weights_sha256(folder), registration)


def find_packages(root: Path) -> list[Package]:
    """Every package directly under `root` (one folder per algorithm), in name order."""
    if not root.is_dir():
        raise RegistryError(f"{root} is not a folder of model packages")
    return [read_package(folder) for folder in sorted(root.iterdir()) if (folder / REGISTRATION_FILE).is_file()]


def write_package(registry: ModelRegistry, algorithm: str, out_dir: Path, version: int | None = None) -> Package:
    """Write `version` of `algorithm` (default: production) to `out_dir/<algorithm>/` as a package."""
    info = registry.version(algorithm, version) if version is not None else registry.production(algorithm)
    if info is None:
        raise RegistryError(f"{algorithm} has no production version: name one with --version")
    target = out_dir / algorithm
    with registry.weights_of(info) as folder:
        losses = json.loads((folder / INFO_FILE).read_text(encoding="utf-8")).get("extra", {}).get("losses", [])
        scratch = out_dir / f".{algorithm}.tmp"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        for name in (WEIGHTS_FILE, INFO_FILE):
            shutil.copyfile(folder / name, scratch / name)
    registration = _registration(info, losses)
    (scratch / REGISTRATION_FILE).write_text(
        json.dumps(registration, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    shutil.rmtree(target, ignore_errors=True)
    scratch.replace(target)
    return read_package(target)


def _registration(info: ModelVersionInfo, losses: list[float]) -> dict[str, Any]:
    metrics = {
        key: value
        for key, value in (
            ("map_50", info.map_50),
            ("map_50_shifted", info.map_50_shifted),
            ("training_seconds", info.training_seconds),
        )
        if value is not None
    }
    params: dict[str, Any] = {"epochs": info.epochs, "packaged_from_version": info.version}
    for key in (TAG_HELDOUT_FINGERPRINT, TAG_SHIFTED_FINGERPRINT):
        if info.tags.get(key):
            params[key] = info.tags[key]
    return {
        "algorithm": info.algorithm,
        "metrics": metrics,
        "params": params,
        "data_fingerprint": info.data_fingerprint,
        "per_class": info.ap_per_class,
        "losses": losses,
        "trained_at": info.created_at.isoformat(timespec="seconds"),
    }


def imported_version(registry: ModelRegistry, package: Package) -> ModelVersionInfo | None:
    """The version already registered from this package, if any."""
    found = [info for info in registry.versions(package.algorithm) if info.tags.get(TAG_PACKAGE) == package.sha256]
    return found[0] if found else None


def import_package(registry: ModelRegistry, package: Package) -> tuple[ModelVersionInfo, bool]:
    """Register a package as a new version (once); returns (the version, whether it was registered now)."""
    existing = imported_version(registry, package)
    if existing is not None:
        return existing, False
    reg = package.registration
    params = {**reg.get("params", {}), "data": "package", "package": str(package.folder.name)}
    info = registry.register(
        package.algorithm,
        package.folder,
        metrics=reg.get("metrics", {}),
        params=params,
        data_fingerprint=str(reg.get("data_fingerprint", "")),
        losses=reg.get("losses", []),
        per_class=reg.get("per_class") or None,
        tags={TAG_PACKAGE: package.sha256, "trained_at": str(reg.get("trained_at", ""))},
    )
    return info, True
