"""Benchmark: the whole `yiwang run` against a bare load of the same landing zone (issue 16).

In one process, alternated and repeated on the same demo landing zone (generated once per scale):

- **bare load**, the floor: every data file of every complete batch read with pyarrow (CSV in its declared
  encoding, Parquet, JSON lines) and one `write_deltalake` per contract (its batches concatenated);
- **full run**: the platform job as `yiwang run --full` executes it, into a fresh warehouse and DuckDB file;
- **nothing new**: `yiwang run` again on that warehouse (the incremental planner finds nothing to do);

per stage, from Dagster's step events: bronze (landing, with the quality pass inside), quality (the Great
Expectations pass alone, from the bronze assets' metadata), silver, dbt (both invocations), gold (Python gold
assets and the mart exports), cross-check, other (ops, sharing, video); and the peak resident memory of the
process in each stage, sampled every 0.1 s.

Scales: the demo generator's `--scale` (1.0 = 20,000 residents): 10 (200,000) and 50 (1 M). Targets on 2 cores:
full run within 6 x the bare load at scale 10; bronze + silver within 2.5 x; nothing new under 10 s; at 1 M
residents the full run under 5 minutes with peak memory under 4 GB.

Run: `python -m bench.pipeline [--scales 10 50] [--repeat 2]` (make bench runs `--scales 10 50 --repeat 2`);
figures in bench/out/pipeline.json; copy them into bench/RESULTS.md. `--alone` runs only the full run, each scale
in a fresh process with nothing before it, for the platform's own peak memory as residents grow (make bench runs
`--scales 10 50 100 --alone`; bench/out/pipeline_alone.json). `--dagster-home` runs the alternated rounds on a Dagster
instance kept in SQLite files, as `make run` does (DAGSTER_HOME set), instead of the ephemeral instance `yiwang run`
uses without it: Dagster stores each event in SQLite on disk (make bench runs `--scales 10 --repeat 1 --dagster-home`;
bench/out/pipeline_dagster_home.json).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from datetime import date
from pathlib import Path
from typing import Any
from unittest.mock import patch

import psutil
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq
from deltalake import write_deltalake

from demo_data.world import RESIDENTS_PER_SCALE

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "pipeline.json"
ALONE_OUT = ROOT / "bench" / "out" / "pipeline_alone.json"
DISK_OUT = ROOT / "bench" / "out" / "pipeline_dagster_home.json"
WORK = Path(os.environ.get("YIWANG_BENCH_DIR", "/tmp/yiwang-bench-pipeline"))
STAGES = ("bronze", "quality", "silver", "dbt", "gold", "crosscheck", "other")


class MemorySampler:
    """The process's resident memory every `interval` seconds, in a thread, with the time of each sample."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._process = psutil.Process()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), self._process.memory_info().rss))
            self._stop.wait(self.interval)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self, start: float | None = None, end: float | None = None) -> int:
        values = [rss for at, rss in self.samples if (start is None or at >= start) and (end is None or at <= end)]
        return max(values, default=0)


def generate(scale: float) -> tuple[Path, str]:
    """The demo landing zone of a scale (made once, kept under WORK) and its as-of date."""
    from demo_data import generate_landing_zone

    landing = WORK / f"scale{scale:g}" / "landing"
    marker = landing.parent / "as_of.txt"
    if not marker.is_file():
        shutil.rmtree(landing, ignore_errors=True)
        summary = generate_landing_zone(landing, scale=scale)
        marker.write_text(str(summary.as_of), encoding="utf-8")
    return landing, marker.read_text(encoding="utf-8").strip()


def _read_part(path: Path, fmt: str, encoding: str) -> pa.Table:
    if fmt == "parquet":
        return pq.read_table(path)
    if fmt == "jsonl":
        return pajson.read_json(path)
    return pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(encoding=encoding),
        convert_options=pacsv.ConvertOptions(strings_can_be_null=True),
    )


def _concat(tables: list[pa.Table]) -> pa.Table:
    """The batches of a contract as one table; where pyarrow inferred a column differently in two files (a planted
    bad value makes a number column text), that column is text in all of them, as a bare load would keep it."""
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        texts = [t.cast(pa.schema([pa.field(f.name, pa.string()) for f in t.schema])) for t in tables]
        return pa.concat_tables(texts, promote_options="permissive")


def bare_load(landing: Path, warehouse: Path) -> dict[str, Any]:
    """Read every part of every complete batch with pyarrow, one write_deltalake per contract: the floor."""
    from ingestion.landing import find_batches, read_manifest

    started = time.perf_counter()
    by_contract: dict[str, list[pa.Table]] = defaultdict(list)
    rows = 0
    for batch in find_batches(landing):
        if not batch.is_complete:
            continue
        manifest = read_manifest(batch)
        encoding = str(manifest.get("encoding", "utf-8")).lower()
        for part in manifest.get("files", []):
            path = batch.path / str(part["name"])
            fmt = str(part.get("format") or path.suffix.lstrip("."))
            if fmt not in ("csv", "parquet", "jsonl") or not path.is_file():
                continue
            try:
                table = _read_part(path, fmt, encoding)
            except (pa.ArrowInvalid, UnicodeDecodeError):
                continue  # a planted broken file: the platform quarantines or rejects it
            by_contract[batch.contract_id].append(table)
            rows += table.num_rows
    for contract_id, tables in by_contract.items():
        merged = _concat(tables)
        write_deltalake(str(warehouse / "bare" / contract_id.replace(".", "/")), merged, mode="overwrite")
    seconds, contracts = round(time.perf_counter() - started, 2), len(by_contract)
    # The bare load's tables are freed here, but Arrow's allocator (mimalloc) keeps the pages for a while: without
    # this, the run that follows in the same process started with up to 1.5 GB of the bare load's memory and its
    # first step showed as the run's peak at 1 M residents (bench/RESULTS.md, issue 16, d).
    by_contract.clear()
    gc.collect()
    pa.default_memory_pool().release_unused()
    return {"seconds": seconds, "rows": rows, "contracts": contracts}


def _stage(asset_key: list[str]) -> str:
    layer = asset_key[0]
    if layer in ("bronze", "silver"):
        return layer
    if layer in ("staging", "intermediate", "marts", "reference"):
        return "dbt"
    if layer == "gold" and len(asset_key) > 1 and asset_key[1] == "social_assistance":
        return "crosscheck"
    if layer == "gold":
        return "gold"
    return "other"


def platform_run(
    landing: Path, home: Path, as_of: str, sampler: MemorySampler, full: bool, on_disk: bool = False
) -> dict[str, Any]:
    """`yiwang run` (the full job, or what the incremental planner selects) in process, timed per stage.

    `on_disk`: on a Dagster instance kept in SQLite files (in `home`), as `make run` runs it (DAGSTER_HOME set);
    otherwise on an ephemeral instance, as `yiwang run` without DAGSTER_HOME (Dagster writes every event to SQLite
    on disk, 17-21 s more at scale 10: bench/RESULTS.md, issue 16 (j))."""
    from dagster import DagsterInstance

    from ingestion.settings import Settings
    from ingestion.warehouse import Warehouse
    from orchestration.cli import _plan, _run_settings
    from orchestration.definitions import PLATFORM_JOB, build_definitions
    from orchestration.incremental import incremental_keys, record_state

    with patch.dict(os.environ, {"YIWANG_HOME": str(home)}):
        settings = Settings.from_env().with_overrides(landing=landing, as_of=date.fromisoformat(as_of))
        rss_before_mb = round(psutil.Process().memory_info().rss / 2**20)  # what the process held before the run
        started = time.perf_counter()
        plan = _plan(settings, full)
        if plan.kind == "nothing_new":
            return {"kind": plan.kind, "seconds": round(time.perf_counter() - started, 2), "stages": {}}
        defs = build_definitions(settings)
        job = defs.resolve_job_def(PLATFORM_JOB)
        selection = None
        if plan.kind == "incremental":
            selection = incremental_keys(plan, defs)
        if on_disk:
            (home / "dagster").mkdir(parents=True, exist_ok=True)
        instance = DagsterInstance.local_temp(str(home / "dagster")) if on_disk else DagsterInstance.ephemeral()
        result = job.execute_in_process(
            instance=instance,
            raise_on_error=False,
            asset_selection=selection,
            run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
        )
        if result.success:
            record_state(Warehouse.at(settings.warehouse), result.run_id, _run_settings(settings), settings.duckdb_path)
        seconds = time.perf_counter() - started
    records = instance.all_logs(result.run_id)
    return {
        "kind": plan.kind,
        "success": result.success,
        "seconds": round(seconds, 2),
        "rss_before_mb": rss_before_mb,
        **_stages(records, sampler),
    }


def _stages(records: list[Any], sampler: MemorySampler) -> dict[str, Any]:
    """Seconds and peak memory per stage, from the steps' start and end events (the run's event log entries)."""
    starts: dict[str, float] = {}
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    stage_of: dict[str, str] = {}
    step_spans: dict[str, tuple[float, float]] = {}
    quality = 0.0
    for record in records:
        event = record.dagster_event
        if event is None or event.step_key is None:
            continue
        step, at = event.step_key, record.timestamp
        if event.event_type_value == "STEP_START":
            starts[step] = at
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE") and step in starts:
            stage = stage_of.get(step, "dbt" if "dbt" in step else "other")
            spans[stage].append((starts[step], at))
            step_spans[step] = (starts[step], at)
        elif event.is_step_materialization:
            materialization = event.event_specific_data.materialization
            if materialization.partition is not None:
                continue  # a batch's partition of ops/batch, recorded by a bronze step, as the run report skips it
            stage_of.setdefault(step, _stage(list(materialization.asset_key.path)))
            value = materialization.metadata.get("quality_seconds")
            if value is not None:
                quality += float(value.value)
    stages = {
        stage: {
            "seconds": round(sum(end - start for start, end in spans.get(stage, [])), 2),
            "peak_rss_mb": round(max((sampler.peak(s, e) for s, e in spans.get(stage, [])), default=0) / 2**20),
        }
        for stage in STAGES
        if stage != "quality"
    }
    stages["quality"] = {"seconds": round(quality, 2), "peak_rss_mb": None}
    return {
        "stages": stages,
        "peak_rss_mb": round(sampler.peak(min(starts.values(), default=None)) / 2**20),
        "slowest_steps": _steps(step_spans, sampler, key=lambda step: step[1]),
        "largest_steps": _steps(step_spans, sampler, key=lambda step: step[2]),
    }


def _steps(spans: dict[str, tuple[float, float]], sampler: MemorySampler, key: Any, top: int = 8) -> list[Any]:
    """`[step, seconds, peak MB]` of the `top` steps by `key` (the process's peak while the step ran)."""
    steps = [
        (step, round(end - start, 2), round(sampler.peak(start, end) / 2**20)) for step, (start, end) in spans.items()
    ]
    return [list(step) for step in sorted(steps, key=key, reverse=True)[:top]]


def measure(scale: float, repeat: int, on_disk: bool = False) -> dict[str, Any]:
    landing, as_of = generate(scale)
    rounds = []
    with MemorySampler() as sampler:
        for index in range(repeat):
            work = WORK / f"scale{scale:g}" / f"round{index}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            bare = bare_load(landing, work / "bare_warehouse")
            full = platform_run(landing, work / "home", as_of, sampler, full=True, on_disk=on_disk)
            again = platform_run(landing, work / "home", as_of, sampler, full=False, on_disk=on_disk)
            rounds.append({"bare": bare, "full": full, "nothing_new": again})
            print(json.dumps({"scale": scale, "round": index, **rounds[-1]}, ensure_ascii=False), flush=True)
            shutil.rmtree(work, ignore_errors=True)
    best = min(rounds, key=lambda r: r["full"]["seconds"])
    bare_best = min(r["bare"]["seconds"] for r in rounds)
    bronze_silver = best["full"]["stages"]["bronze"]["seconds"] + best["full"]["stages"]["silver"]["seconds"]
    return {
        "scale": scale,
        "residents": int(scale * RESIDENTS_PER_SCALE),
        "dagster_instance": "sqlite on disk" if on_disk else "ephemeral",
        "rounds": rounds,
        "bare_seconds": bare_best,
        "full_seconds": best["full"]["seconds"],
        "full_over_bare": round(best["full"]["seconds"] / bare_best, 1),
        "bronze_silver_over_bare": round(bronze_silver / bare_best, 1),
        "nothing_new_seconds": min(r["nothing_new"]["seconds"] for r in rounds),
        "peak_rss_mb": best["full"]["peak_rss_mb"],
        "stages": best["full"]["stages"],
        "slowest_steps": best["full"]["slowest_steps"],
        "largest_steps": best["full"]["largest_steps"],
        "load_average": os.getloadavg(),
    }


def alone(scale: float) -> dict[str, Any]:
    """The full run alone in a fresh process, nothing before it: the platform's own peak memory, which in
    `measure` also carries what the bare load before it left allocated."""
    landing, as_of = generate(scale)
    work = WORK / f"scale{scale:g}" / "alone"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    child = subprocess.run(
        [sys.executable, "-m", "bench.pipeline", "--child", str(landing), str(work / "home"), as_of],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    shutil.rmtree(work, ignore_errors=True)
    full = json.loads(child.stdout.strip().splitlines()[-1])
    result = {"scale": scale, "residents": int(scale * RESIDENTS_PER_SCALE), "alone": full}
    print(json.dumps(result, ensure_ascii=False), flush=True)
    return result


def _child(landing: str, home: str, as_of: str) -> None:
    with MemorySampler() as sampler:
        full = platform_run(Path(landing), Path(home), as_of, sampler, full=True)
    print(json.dumps(full, ensure_ascii=False), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[10.0, 50.0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--alone", action="store_true", help="only the full run, each in a fresh process")
    parser.add_argument(
        "--dagster-home",
        action="store_true",
        help="run on a Dagster instance in SQLite files, as `make run` does (default: an ephemeral instance)",
    )
    parser.add_argument("--child", nargs=3, metavar=("LANDING", "HOME", "AS_OF"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child)
        return
    if args.alone and args.dagster_home:
        parser.error("--dagster-home applies to the alternated rounds, not to --alone: give one of the two")
    if args.alone:
        alone_results = [alone(scale) for scale in args.scales]
        OUT.parent.mkdir(parents=True, exist_ok=True)
        ALONE_OUT.write_text(json.dumps(alone_results, ensure_ascii=False, indent=2), encoding="utf-8")
        for r in alone_results:
            run = r["alone"]
            print(
                f"scale {r['scale']:g} ({r['residents']:,} residents), the full run alone: {run['seconds']} s, "
                f"peak {run['peak_rss_mb']} MB (held before {run['rss_before_mb']} MB), largest steps "
                + ", ".join(f"{step} {mb} MB" for step, _, mb in run["largest_steps"][:3])
            )
        return
    results = [measure(scale, args.repeat, on_disk=args.dagster_home) for scale in args.scales]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    (DISK_OUT if args.dagster_home else OUT).write_text(
        json.dumps(results, ensure_ascii=False, indent=2), encoding="utf-8"
    )
    for r in results:
        stages = ", ".join(f"{k} {v['seconds']} s" for k, v in r["stages"].items())
        print(
            f"scale {r['scale']:g} ({r['residents']:,} residents, {r['dagster_instance']} Dagster instance): "
            f"bare {r['bare_seconds']} s, full run "
            f"{r['full_seconds']} s = {r['full_over_bare']} x bare (bronze+silver {r['bronze_silver_over_bare']} x), "
            f"nothing new {r['nothing_new_seconds']} s, peak {r['peak_rss_mb']} MB; {stages}"
        )


if __name__ == "__main__":
    main()
