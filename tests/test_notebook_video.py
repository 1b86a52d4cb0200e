"""The video-AI notebook `notebooks/video_ai_evaluation.ipynb` runs headless and draws every section."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "video_ai_evaluation.ipynb"


def test_notebook_is_saved_with_the_shipped_models_pictures() -> None:
    """A reader sees the shipped helmet model's evaluation without running anything (`make notebooks-save`)."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    produced = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert "error" not in [o["output_type"] for o in produced]
    assert len([o for o in produced if "image/png" in o.get("data", {})]) >= 4
    text = "".join(o.get("text", "") for o in produced)
    assert "(production)" in text and "/tmp/" not in text  # the registered model, no machine's paths


def test_notebook_draws_the_evaluation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An empty registry of its own: the notebook trains its quick stand-in and still draws every picture.
    monkeypatch.setenv("YIWANG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("YIWANG_WAREHOUSE", str(tmp_path / "home" / "warehouse"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    produced = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert "error" not in [o["output_type"] for o in produced]
    images = [o for o in produced if "image/png" in o.get("data", {})]
    assert len(images) >= 4, len(images)  # AP bars, precision-recall, confusion, example frames
    text = "\n".join(str(o.get("text", "")) for o in produced if o["output_type"] == "stream")
    assert "mAP@0.5" in text and "quick stand-in" in text
