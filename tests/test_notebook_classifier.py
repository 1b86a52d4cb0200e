"""The classifier notebook `notebooks/appeal_classifier.ipynb` runs headless and draws every section."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "appeal_classifier.ipynb"


def test_notebook_is_saved_with_its_pictures() -> None:
    """A reader sees the charts without running anything (`make notebooks-save` wrote them)."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    produced = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert "error" not in [o["output_type"] for o in produced]
    assert len([o for o in produced if "image/png" in o.get("data", {})]) >= 5


def test_notebook_draws_the_held_out_evaluation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The kernel inherits os.environ: the notebook trains its model into this test's own store.
    monkeypatch.setenv("YIWANG_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("YIWANG_MODELS", raising=False)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    produced = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert "error" not in [o["output_type"] for o in produced]
    images = [o for o in produced if "image/png" in o.get("data", {})]
    assert len(images) >= 5, len(images)  # headline, per class, major confusion, abstention, styles
    text = "\n".join(str(o.get("text", "")) for o in produced if o["output_type"] == "stream")
    assert "classifier version: ac-" in text and "held-out appeals: 800" in text
    assert (tmp_path / "home" / "models" / "appeal_classifier" / "promoted.json").is_file()
