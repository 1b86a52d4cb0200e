"""The analyst notebook `notebooks/thematic_libraries.ipynb` runs headless against a warehouse `yiwang run` built.

One small demo landing zone (1,000 residents) goes through `yiwang run` in a subprocess, exactly what
`make run` does (the session fixture `demo_run` of tests/conftest.py, shared with the Superset tests), so every
gold table the notebook reads is the real one; then the notebook is executed
with nbclient in a fresh kernel, pointed at that warehouse by YIWANG_WAREHOUSE.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

import pytest
from deltalake import DeltaTable

from tests.conftest import DemoRun

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "thematic_libraries.ipynb"
TABLES = (
    "party/grid_coverage",
    "party/member_households",
    "enterprises/portraits",
    "emergency/waterlogging_risk",
    "emergency/rainfall_outlook",
    "urban/events",
    "urban/hotspots",
    "dispatch/tickets",
    "dispatch/kpis_by_area",
    "dispatch/kpis_by_department",
    "dispatch/department_monthly_ranking",
)


@pytest.fixture(scope="module")
def built_warehouse(demo_run: DemoRun) -> Path:
    """The session's demo warehouse (tests/conftest.py: `yiwang run` on 1,000 residents, seed 3)."""
    return demo_run.warehouse


@contextmanager
def environment(**variables: str):
    """The kernel inherits os.environ when it starts: set the notebook's settings for the block only."""
    previous = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def execute(warehouse: Path, workdir: Path):
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    with environment(YIWANG_WAREHOUSE=str(warehouse)):
        NotebookClient(
            notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
        ).execute()
    return notebook


def outputs(notebook) -> list[dict]:
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]


def test_notebook_is_saved_with_its_pictures():
    """A reader sees the charts without running anything (`make notebooks-save` wrote them, on the demo)."""
    import nbformat

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    produced = outputs(notebook)
    assert "error" not in [o["output_type"] for o in produced]
    assert len([o for o in produced if "image/png" in o.get("data", {})]) >= 12
    charts = [cell for cell in notebook.cells if cell.cell_type == "code" and "plt.show()" in cell.source]
    assert charts and all(cell.get("outputs") for cell in charts)
    fonts = [o["text"] for o in produced if o["output_type"] == "stream" and "Chinese font:" in o.get("text", "")]
    assert fonts and "none installed" not in fonts[0]


@pytest.mark.slow
def test_notebook_runs_and_draws_every_section(built_warehouse, tmp_path):
    notebook = execute(built_warehouse, tmp_path)
    produced = outputs(notebook)
    assert "error" not in [o["output_type"] for o in produced]
    images = [o for o in produced if "image/png" in o.get("data", {})]
    # 2 party, 2 enterprise, 2 emergency, 2 urban, 4 dispatch charts
    assert len(images) >= 12, len(images)
    text = "\n".join(
        str(o.get("text", "")) + json.dumps(o.get("data", {}), ensure_ascii=False) for o in produced if "data" in o
    ) + "\n".join(str(o.get("text", "")) for o in produced if o["output_type"] == "stream")
    assert f"warehouse: {built_warehouse}" in text
    assert "Chinese font: " in text and "none installed" not in text  # the charts carry Chinese names
    for table in TABLES:
        assert table in text, table
    assert "members are linked to fewer than 2 households" in text
    assert "attention_score" in text and "on_time_rate" in text and "satisfaction_rate" in text
    assert "2026-10" in text  # a month of the department ranking
    # Enterprises run by one person are named after their owner: only their credit code may show.
    portraits = DeltaTable(str(built_warehouse / "gold" / "enterprises" / "portraits")).to_pyarrow_table()
    personal = {
        name
        for name, kind in zip(
            portraits["enterprise_name"].to_pylist(), portraits["entity_type"].to_pylist(), strict=True
        )
        if kind in ("individual_business", "sole_proprietor")
    }
    assert personal
    assert not [name for name in personal if name in text]


def test_missing_warehouse_is_a_clear_error(tmp_path):
    from nbclient.exceptions import CellExecutionError

    with pytest.raises(CellExecutionError, match=r"gold/party/grid_coverage is not in .*yiwang run"):
        execute(tmp_path / "no-warehouse", tmp_path)
