"""Benchmark: what the byte-level readers in ingestion/ save in the whole run's bronze stage (issue 16).

The run's bronze stage (every bronze asset of the platform job, as `yiwang run` executes them, validation and the
quality pass included) on the scale-10 demo landing zone of bench/pipeline.py, once per variant, each into a
fresh warehouse:

- **as shipped**: the CSV fast path (`ingestion/readers.py: _read_csv_fast`: Arrow's multithreaded CSV parser
  on the file's bytes, string_view columns, GB 18030 columns transcoded by `ingestion/gb18030.py`);
- **plain reader**: every CSV decoded whole by Python's codec first (`_read_csv_exact`, which also names the
  offset of bad bytes and the line of a malformed record);
- **plain validation**: `tests/validation_reference.py: reference_validate` (one polars expression per rule) instead
  of `ingestion.validation.validate` with its byte-level checks over Arrow string views (`ingestion/columnar.py`,
  `ingestion/identifiers.py`).

(Another variant, glibc's iconv through ctypes for GB 18030, measured the same as the shipped path in the whole
run and was removed: bench/RESULTS.md, issue 16.)

The plain variants switch a fast path off in this process; tests/test_readers_fast_path.py and
tests/test_validation_fast.py hold each pair to the same results. Run: `python -m bench.fast_paths [--scale 10]
[--repeat 2]`; figures in bench/out/fast_paths.json and bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any
from unittest.mock import patch

from bench.pipeline import OUT, WORK, generate

FAST_PATHS_OUT = OUT.with_name("fast_paths.json")
VARIANTS = ("as shipped", "plain reader", "plain validation")


@contextmanager
def variant(name: str) -> Iterator[None]:
    """The readers as `name` says (see the module docstring), restored afterwards."""
    from ingestion import readers

    saved: list[tuple[Any, str, Callable[..., Any]]] = []

    def switch_off(module: Any, function: str) -> None:
        saved.append((module, function, getattr(module, function)))
        setattr(module, function, lambda *args, **kwargs: None)

    if name == "plain reader":
        switch_off(readers, "_read_csv_fast")
    if name == "plain validation":
        # one polars expression per rule, no byte-level code: the specification tests/test_validation_fast.py
        # holds `ingestion.validation.validate` to, value for value
        from ingestion import bronze
        from tests.validation_reference import reference_validate

        saved.append((bronze, "validate", bronze.validate))
        bronze.validate = reference_validate
    try:
        yield
    finally:
        for module, function, original in saved:
            setattr(module, function, original)


def bronze_stage(landing: Path, home: Path, as_of: str) -> dict[str, Any]:
    """Every bronze asset of the platform job, in process; seconds per step summed, and the wall time."""
    from dagster import DagsterInstance

    from ingestion.settings import Settings
    from orchestration.definitions import PLATFORM_JOB, build_definitions

    with patch.dict(os.environ, {"YIWANG_HOME": str(home)}):
        settings = Settings.from_env().with_overrides(landing=landing, as_of=date.fromisoformat(as_of))
        defs = build_definitions(settings)
        keys = [key for key in defs.resolve_asset_graph().get_all_asset_keys() if key.path[0] == "bronze"]
        instance = DagsterInstance.ephemeral()
        started = time.perf_counter()
        result = defs.resolve_job_def(PLATFORM_JOB).execute_in_process(
            instance=instance,
            raise_on_error=False,
            asset_selection=keys,
            run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
        )
        wall = time.perf_counter() - started
    starts: dict[str, float] = {}
    steps = 0.0
    for record in instance.all_logs(result.run_id):
        event = record.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type_value == "STEP_START":
            starts[event.step_key] = record.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            steps += record.timestamp - starts[event.step_key]
    return {"success": result.success, "wall_seconds": round(wall, 2), "bronze_seconds": round(steps, 2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)
    landing, as_of = generate(args.scale)
    results: dict[str, list[dict[str, Any]]] = {}
    for _ in range(args.repeat):
        for name in VARIANTS:
            home = WORK / f"scale{args.scale:g}" / "fast_paths"
            shutil.rmtree(home, ignore_errors=True)
            home.mkdir(parents=True)
            with variant(name):
                measured = bronze_stage(landing, home, as_of)
            results.setdefault(name, []).append(measured)
            print(json.dumps({"variant": name, **measured}), flush=True)
            shutil.rmtree(home, ignore_errors=True)
    FAST_PATHS_OUT.parent.mkdir(parents=True, exist_ok=True)
    FAST_PATHS_OUT.write_text(json.dumps({"scale": args.scale, "variants": results}, indent=2), encoding="utf-8")
    shipped = min(r["bronze_seconds"] for r in results["as shipped"])
    for name, runs in results.items():
        best = min(r["bronze_seconds"] for r in runs)
        print(f"{name}: bronze stage {best} s ({best / shipped:.2f} x as shipped)")


if __name__ == "__main__":
    main()
