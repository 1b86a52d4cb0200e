"""The one place that makes ``import torchvision`` work on the CPU-only torch.

The torchvision wheel on PyPI is a CUDA build: its compiled ``_C`` library needs ``libc10_cuda.so``, which the CPU
torch lacks, so ``import torchvision`` dies in ``torchvision/_meta_registrations.py`` with
``operator torchvision::nms does not exist``. There is no CPU wheel to install instead (see shared/STACK.md).

What this module does, once, before torchvision is imported:

1. It tries to load torchvision's own compiled library (``torch.ops.load_library`` on ``torchvision/_C*.so``) without
   importing the ``torchvision`` package. When that works (a CUDA torch with the CUDA torchvision, or any matching
   pair), torchvision is imported as it is and this module changes nothing. Loading the library first is harmless:
   torchvision loads it again, and ``dlopen`` returns the same handle without re-running its registrations.
2. Otherwise it defines the ``torchvision::nms`` and ``torchvision::qnms`` schemas with ``torch.library`` and gives
   them a kernel (a vectorised greedy NMS, see :func:`nms_reference_kernel`), imports torchvision, and then makes
   ``torchvision.extension._has_ops()`` answer True so that ``torchvision.ops.nms`` does not refuse to run.
   ``_has_ops`` is a function in torchvision (``_has_ops()`` is called), so it is replaced by a function, not by
   the literal ``True``. Modules that imported the name ``_has_ops`` at import time (``ops/roi_align.py``) keep the
   original answer (False) and take torchvision's pure-Python fallbacks.

Probing with a plain ``try: import torchvision`` is avoided on purpose: a failed import leaves
``torchvision.extension`` and friends in ``sys.modules`` and half-made ``torch.library`` registrations behind.
If someone did that before us, the leftovers are dropped before our import.

Everything in ``ml/`` imports torchvision as ``from ml.torchvision_shim import torchvision``; whatever loads a saved
model must import this module first (``ml.models`` does).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

__all__ = ["SHIMMED", "nms_reference_kernel", "torchvision"]

# Keeping the Library object alive keeps the registrations alive (they are undone when it is garbage collected).
_LIBRARY: torch.library.Library | None = None

# Above this many boxes the IoU matrix (n*n floats) gets too big: compare one kept box against the rest instead.
_MATRIX_LIMIT = 3000


def _compiled_ops_load() -> bool:
    """Load torchvision's own ``_C`` library if this torch can; True when the real compiled ops are available."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    for location in spec.submodule_search_locations:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            candidate = Path(location) / f"_C{suffix}"
            if candidate.is_file():
                try:
                    torch.ops.load_library(str(candidate))
                except (OSError, RuntimeError):
                    return False
                return True
    return False


def _op_defined(name: str) -> bool:
    """Whether ``torchvision::<name>`` already has a schema (ours from an earlier import, or the compiled one)."""
    try:
        getattr(torch.ops.torchvision, name).default  # noqa: B018 - resolving the overload is the check
    except (AttributeError, RuntimeError):
        return False
    return True


def _greedy_nms(boxes: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS over boxes already sorted by descending score; returns kept positions in that order.

    Same arithmetic as torchvision's C++ kernel (areas without +1, suppress when IoU > threshold), vectorised with
    numpy: one IoU matrix for up to ``_MATRIX_LIMIT`` boxes, then a Python loop that only touches kept boxes.
    """
    n = boxes.shape[0]
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    suppressed = np.zeros(n, dtype=bool)
    keep: list[int] = []
    if n <= _MATRIX_LIMIT:
        width = np.clip(np.minimum(x2[:, None], x2[None, :]) - np.maximum(x1[:, None], x1[None, :]), 0, None)
        height = np.clip(np.minimum(y2[:, None], y2[None, :]) - np.maximum(y1[:, None], y1[None, :]), 0, None)
        inter = width * height
        with np.errstate(divide="ignore", invalid="ignore"):
            over = inter / (areas[:, None] + areas[None, :] - inter) > iou_threshold
        for i in range(n):
            if suppressed[i]:
                continue
            keep.append(i)
            suppressed[i + 1 :] |= over[i, i + 1 :]
        return np.asarray(keep, dtype=np.int64)
    for i in range(n):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = slice(i + 1, n)
        width = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        height = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = width * height
        with np.errstate(divide="ignore", invalid="ignore"):
            suppressed[rest] |= inter / (areas[i] + areas[rest] - inter) > iou_threshold
    return np.asarray(keep, dtype=np.int64)


def nms_reference_kernel(dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Kernel behind ``torchvision::nms``: indices of kept boxes, sorted by decreasing score (torchvision's contract).

    Works for tensors on any device (they are moved to the CPU for the loop), so a CUDA torch with a broken
    torchvision would still run, slowly.
    """
    if dets.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=dets.device)
    order = torch.argsort(scores.detach(), descending=True, stable=True)
    sorted_boxes = dets.detach()[order].to("cpu", torch.float32).numpy()
    kept = torch.from_numpy(_greedy_nms(sorted_boxes, float(iou_threshold))).to(dets.device)
    return order[kept]


def _qnms_kernel(dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """``torchvision::qnms`` receives the integer representations of quantised boxes: NMS on them as floats."""
    return nms_reference_kernel(dets.to(torch.float32), scores.to(torch.float32), iou_threshold)


def _register_nms_ops() -> None:
    """Define the two schemas torchvision's Python code needs at import time and give them kernels."""
    global _LIBRARY
    if _op_defined("nms"):
        return
    library = torch.library.Library("torchvision", "FRAGMENT")
    library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    # CompositeExplicitAutograd: one kernel for every backend (CPU, CUDA, ...); torchvision adds the fake (meta)
    # kernel itself in _meta_registrations.py, which is what torch.compile and export need.
    library.impl("nms", nms_reference_kernel, "CompositeExplicitAutograd")
    library.impl("qnms", _qnms_kernel, "CompositeExplicitAutograd")
    _LIBRARY = library


def _drop_half_imported_torchvision() -> None:
    """Forget submodules left by an earlier failed ``import torchvision`` so that our import starts clean."""
    if "torchvision" in sys.modules:
        return
    for name in [name for name in sys.modules if name.startswith("torchvision.")]:
        del sys.modules[name]


def _has_ops_patched() -> bool:
    """Replacement for ``torchvision.extension._has_ops``: nms and qnms exist now (see the module docstring)."""
    return True


def _import_torchvision() -> tuple[ModuleType, bool]:
    """Import torchvision, shimming it when its compiled library cannot load; returns (module, shimmed)."""
    existing = sys.modules.get("torchvision")
    if existing is not None and hasattr(existing, "ops"):
        return existing, existing.extension._has_ops is _has_ops_patched
    _drop_half_imported_torchvision()
    if _compiled_ops_load():
        import torchvision as real

        return real, False
    _register_nms_ops()
    import torchvision as shimmed

    shimmed.extension._has_ops = _has_ops_patched
    return shimmed, True


torchvision, SHIMMED = _import_torchvision()
