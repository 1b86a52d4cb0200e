"""Execute the analyst notebooks and save them with their outputs, so a reader sees the pictures without running
anything (`make notebooks-save`, after `make run`; `make notebooks` opens them in JupyterLab).

`thematic_libraries.ipynb` reads the warehouse of the settings (YIWANG_HOME / YIWANG_WAREHOUSE), and
`appeal_classifier.ipynb` the promoted classifier of YIWANG_MODELS. `crosscheck_review.ipynb` shows restricted
case evidence (social assistance): it is kept WITHOUT outputs and run by the reviewer on their own machine.
`video_ai_evaluation.ipynb` evaluates the production model of the algorithm warehouse (`make run` imports the
shipped ones, ml/pretrained).

Pictures are PNG at 80 dpi (the notebooks set it); execution timings are dropped so that a re-run changes
only what the data changed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
SAVED_WITH_OUTPUTS = ("thematic_libraries.ipynb", "appeal_classifier.ipynb", "video_ai_evaluation.ipynb")
WITHOUT_OUTPUTS = ("crosscheck_review.ipynb",)


def execute(path: Path, timeout: int = 600):
    """The notebook at `path`, executed in a fresh kernel of this environment (outputs in the cells)."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    return notebook


def tidy(notebook, home: Path | None = None) -> None:
    """Drop what changes on every run without the data changing (execution timings, the kernel's version), and
    write the saving machine's YIWANG_HOME as `.yiwang`, the embedded default a reader has."""
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
        for output in cell.get("outputs", []) if home is not None else []:
            if "text" in output:
                output["text"] = output["text"].replace(str(home), ".yiwang")
            for kind in ("text/plain", "text/html"):
                if kind in output.get("data", {}):
                    output["data"][kind] = output["data"][kind].replace(str(home), ".yiwang")
    notebook.metadata.get("language_info", {}).pop("version", None)


def save(path: Path) -> int:
    """Execute `path` and write it back with its outputs; the number of pictures it holds."""
    import nbformat

    from ingestion.settings import Settings

    notebook = execute(path)
    tidy(notebook, Settings.from_env().home)
    produced = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [o for o in produced if o.output_type == "error"]
    if errors:
        raise RuntimeError(f"{path.name}: {errors[0].get('ename')}: {errors[0].get('evalue')}")
    nbformat.write(notebook, path)
    return sum(1 for o in produced if "image/png" in o.get("data", {}))


def main(names: list[str]) -> int:
    from orchestration.cli_output import fail

    for name in names or SAVED_WITH_OUTPUTS:
        if name in WITHOUT_OUTPUTS:
            print(f"{name}: restricted, kept without outputs")
            continue
        started = time.perf_counter()
        try:
            pictures = save(NOTEBOOKS / name)
        except Exception as error:  # one line: what failed and where
            raise SystemExit(fail(f"{name} did not run: {str(error).splitlines()[0]}", 1).exit_code) from None
        print(f"{name}: saved with {pictures} pictures in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
