"""Benchmark: build every thematic library, the urban events, the dispatch tickets and their KPIs (issue 3).

The input is a demo landing zone of `--scale` x 20,000 residents whose grid reports, hotline appeals and
enterprise appeals are multiplied by `--event-multiplier` (the demo makes about 0.15 per resident; scale 50
with multiplier 7 gives 1M residents and about 1.07M reports and appeals). It is generated once under
`.yiwang/bench/thematic-<scale>-<multiplier>/` and landed in silver once (timed apart, not part of the
target); both are reused while they exist.

What is timed, in a process of its own so that its peak memory is its own: the Dagster selection of
everything downstream of silver that issue 3 built, executed in process like `yiwang run` does: the dbt
seeds, staging, intermediate models and marts (`dbt build`, tests included, two invocations around the
Python assets), `gold/urban/events`, `gold/dispatch/tickets` with its checks, and the Delta exports of
the marts. Gold tables and the DuckDB file are removed first, so every run is a first build. Target:
under 5 minutes on 2 cores.

Run: `make bench` (or `python -m bench.thematic --scale 50 --event-multiplier 7 --record`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "RESULTS.md"
AS_OF = date(2026, 11, 15)
KEY = b"bench-thematic-key-0123456789abcd"
TARGET_SECONDS = 300.0
DEFAULT_DEFECT_RATE = 0.02
SECTION = "## Thematic libraries and tickets (issue 3)"
# What issue 3 builds downstream of silver: the dbt seeds and models (by their `layer` tag: groups are business
# domains, orchestration/asset_layout.py), the gold exports of the marts, urban events and tickets.
LAYERS = ("reference", "staging", "intermediate", "marts")
PYTHON_GOLD = (("gold", "urban", "events"), ("gold", "dispatch", "tickets"))


def _thematic(graph, key) -> bool:
    node = graph.get(key)
    if node.tags.get("layer") in LAYERS or tuple(key.path) in PYTHON_GOLD:
        return True
    return key.path[0] == "gold" and any(parent.path[0] == "marts" for parent in node.parent_keys)


COUNTED = {
    "grid_reports": "silver/chengguan/grid_reports",
    "hotline_appeals": "silver/zhengshu/hotline_appeals",
    "enterprise_appeals": "silver/zhengshu/enterprise_appeals",
    "ticket_outcomes": "silver/zhihui/ticket_outcomes",
    "urban_events": "gold/urban/events",
    "tickets": "gold/dispatch/tickets",
}


def bench_root(scale: float, multiplier: float, defect_rate: float) -> Path:
    suffix = "" if defect_rate == DEFAULT_DEFECT_RATE else f"-defects{defect_rate:g}"
    return REPO / ".yiwang" / "bench" / f"thematic-{scale:g}-{multiplier:g}{suffix}"


def generate(root: Path, scale: float, multiplier: float, seed: int, defect_rate: float) -> dict:
    """The landing zone, generated once; its summary (sizes, seconds) is kept beside it."""
    from demo_data import generate_landing_zone

    summary_file = root / "generated.json"
    if (root / "landing" / "_labels").exists() and summary_file.exists():
        return json.loads(summary_file.read_text(encoding="utf-8"))
    shutil.rmtree(root / "landing", ignore_errors=True)
    summary = generate_landing_zone(
        root / "landing", scale=scale, seed=seed, defect_rate=defect_rate, progress=False, event_multiplier=multiplier
    )
    facts = {
        "scale": scale,
        "event_multiplier": multiplier,
        "seed": seed,
        "defect_rate": defect_rate,
        "residents": summary.residents,
        "enterprises": summary.enterprises,
        "rows": summary.rows,
        "grid_reports": summary.grid_reports,
        "hotline_appeals": summary.hotline_appeals,
        "enterprise_appeals": summary.enterprise_appeals,
        "seconds": summary.seconds,
    }
    summary_file.write_text(json.dumps(facts, indent=1), encoding="utf-8")
    return facts


def land(root: Path) -> dict:
    """Every batch contract into bronze and silver, once (`ingested.json` marks it done)."""
    from ingestion.contract import batch_contracts
    from ingestion.pipeline import ingest_contract
    from ingestion.pseudonym import Pseudonymiser
    from ingestion.silver import apply_silver
    from ingestion.warehouse import Warehouse

    marker = root / "ingested.json"
    if marker.exists():
        return json.loads(marker.read_text(encoding="utf-8"))
    shutil.rmtree(root / "warehouse", ignore_errors=True)
    warehouse = Warehouse.at(root / "warehouse")
    pseudonymiser = Pseudonymiser(KEY)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    for contract_id, contract in sorted(batch_contracts().items()):
        clock = time.perf_counter()
        ingest_contract(contract, root / "landing", warehouse, as_of=AS_OF)
        apply_silver(contract, warehouse, pseudonymiser, as_of=AS_OF)
        seconds[contract_id] = round(time.perf_counter() - clock, 1)
        print(f"  landed {contract_id} in {seconds[contract_id]:.1f} s", flush=True)
    facts = {"seconds": round(time.perf_counter() - started, 1), "by_contract": seconds}
    marker.write_text(json.dumps(facts, indent=1), encoding="utf-8")
    return facts


def _dbt_node_seconds(run_id: str) -> list[tuple[str, float]]:
    """Per-node seconds from the run_results.json of this run's dbt invocations (dagster-dbt's target dirs)."""
    nodes: list[tuple[str, float]] = []
    for results in (REPO / "dbt_project" / "target").glob(f"*-{run_id[:7]}-*/run_results.json"):
        for node in json.loads(results.read_text(encoding="utf-8")).get("results", []):
            nodes.append((node["unique_id"], float(node.get("execution_time") or 0.0)))
    return sorted(nodes, key=lambda item: -item[1])


def build(root: Path) -> dict:
    """Child process: the timed Dagster selection, its per-step seconds and this process's peak RSS."""
    from dagster import DagsterInstance

    from ingestion.settings import Settings
    from ingestion.warehouse import Warehouse
    from orchestration.definitions import PLATFORM_JOB, build_definitions

    settings = Settings.from_env().with_overrides(
        home=root,
        landing=root / "landing",
        warehouse=str(root / "warehouse"),
        duckdb_path=root / "yiwang.duckdb",
        reports_dir=root / "reports",
        key_file=root / "secrets" / "pseudonym.key",
        as_of=AS_OF,
    )
    shutil.rmtree(root / "warehouse" / "gold", ignore_errors=True)
    for leftover in (root / "yiwang.duckdb", root / "yiwang.duckdb.wal"):
        leftover.unlink(missing_ok=True)
    clock = time.perf_counter()
    defs = build_definitions(settings)  # parses the dbt project when its manifest is for another warehouse
    load_seconds = time.perf_counter() - clock
    graph = defs.resolve_asset_graph()
    keys = sorted(
        (key for key in graph.get_all_asset_keys() if _thematic(graph, key)),
        key=lambda key: key.to_user_string(),
    )
    job = defs.resolve_job_def(PLATFORM_JOB)
    instance = DagsterInstance.ephemeral()
    clock = time.perf_counter()
    result = job.execute_in_process(
        instance=instance,
        asset_selection=keys,
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
    )
    seconds = time.perf_counter() - clock
    failures = [
        f"{event.step_key}: {event.event_specific_data.error.message.strip()[:300]}"
        for event in result.all_events
        if event.is_step_failure
    ]
    steps = sorted(
        (
            (s.step_key, round((s.end_time or s.start_time) - s.start_time, 1), str(s.status))
            for s in instance.get_run_step_stats(result.run_id)
            if s.start_time
        ),
        key=lambda step: -step[1],
    )
    warehouse = Warehouse.at(root / "warehouse")
    sizes = {
        name: warehouse.table(path).to_pyarrow_dataset().count_rows() if warehouse.exists(path) else None
        for name, path in COUNTED.items()
    }
    return {
        "success": result.success,
        "failures": failures,
        "seconds": seconds,
        "definitions_seconds": load_seconds,
        "assets": len(keys),
        "steps": steps,
        "dbt_nodes": _dbt_node_seconds(result.run_id)[:10],
        "sizes": sizes,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_children_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def measure(root: Path) -> dict:
    """Run `build` in a fresh process (its own peak RSS, no state left from generation or landing)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("DAGSTER_HOME", None)
    done = subprocess.run(
        [sys.executable, "-m", "bench.thematic", "--build", str(root)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"the build process failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def _cores() -> str:
    load = os.getloadavg()[0]
    return f"{os.cpu_count()} cores, load average {load:.1f} at the end"


def record(generated: dict, landed: dict, run: dict, note: str) -> None:
    """Append one row (and the step breakdown of this run) to the section of bench/RESULTS.md."""
    sizes = run["sizes"]
    events = generated["grid_reports"] + generated["hotline_appeals"] + generated["enterprise_appeals"]
    met = run["success"] and run["seconds"] < TARGET_SECONDS
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    header = "| date | residents | reports + appeals generated (grid / hotline / enterprise) | urban events | tickets | build s | peak MB (Dagster / dbt) | target |\n|---|---|---|---|---|---|---|---|\n"  # noqa: E501
    if SECTION not in text:
        text = (
            text.rstrip("\n")
            + f"\n\n\n{SECTION}\n\nBuild of everything downstream of silver that issue 3 added, as one in-process "
            "Dagster run (like `yiwang run`): dbt seeds, staging, intermediate models and marts with their tests, "
            "`gold/urban/events`, `gold/dispatch/tickets` with its checks, and the Delta exports of the marts; gold "
            "and the DuckDB file removed first. Input: the demo at 1M residents with the events multiplied "
            "(`yiwang demo-data --scale 50 --event-multiplier 7`), landed in silver beforehand. Peak = max RSS of "
            "the build process / of its largest child (dbt). Target: < 5 min on 2 cores.\n\n" + header
        )
    row = (
        f"| {date.today()} | {generated['residents']:,} | {events:,} ({generated['grid_reports']:,} / "
        f"{generated['hotline_appeals']:,} / {generated['enterprise_appeals']:,}) | {sizes['urban_events'] or 0:,} "
        f"| {sizes['tickets'] or 0:,} | {run['seconds']:.0f} | {run['peak_mb']:.0f} / {run['peak_children_mb']:.0f} "
        f"| {'met' if met else 'NOT met' if run['success'] else 'incomplete: the build failed'} |\n"
    )
    head, tail = text[: text.index(SECTION)], text[text.index(SECTION) :]
    marker = "|---|---|---|---|---|---|---|---|\n"
    at = tail.index(marker) + len(marker)
    while at < len(tail) and tail[at] == "|":
        at = tail.index("\n", at) + 1
    tail = tail[:at] + row + tail[at:]
    steps = ", ".join(f"{key} {seconds:.0f} s" for key, seconds, _ in run["steps"][:8])
    dbt = ", ".join(f"{uid.split('.')[-1]} {seconds:.0f} s" for uid, seconds in run["dbt_nodes"][:5])
    detail = (
        f"\n\nRun of {date.today()} ({_cores()}): generation {generated['seconds']:.0f} s "
        f"({generated['rows']:,} rows), landing in bronze + silver {landed['seconds']:.0f} s (not in the target), "
        f"loading the definitions {run['definitions_seconds']:.0f} s (not in the target), build "
        f"{run['seconds']:.0f} s over {run['assets']} assets. Slowest steps: {steps}. Slowest dbt nodes: {dbt}."
    )
    if run["failures"]:
        detail += " Failed steps: " + "; ".join(run["failures"]) + "."
    if note:
        detail += f" {note}"
    tail = tail.rstrip("\n") + detail + "\n"
    RESULTS.write_text(head + tail, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=50.0, help="x 20,000 residents (50 = one million)")
    parser.add_argument("--event-multiplier", type=float, default=7.0, help="reports and appeals per resident x k")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--defect-rate", type=float, default=DEFAULT_DEFECT_RATE, help="share of rows with planted defects"
    )
    parser.add_argument("--root", type=Path, default=None, help="default .yiwang/bench/thematic-<scale>-<k>")
    parser.add_argument("--record", action="store_true", help="add the numbers to bench/RESULTS.md")
    parser.add_argument("--note", default="", help="a sentence added to the recorded run")
    parser.add_argument("--build", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        print(json.dumps(build(args.build.resolve())))
        return
    root = (args.root or bench_root(args.scale, args.event_multiplier, args.defect_rate)).resolve()
    root.mkdir(parents=True, exist_ok=True)
    generated = generate(root, args.scale, args.event_multiplier, args.seed, args.defect_rate)
    print(
        f"landing zone {root / 'landing'}: {generated['residents']:,} residents, {generated['grid_reports']:,} "
        f"grid reports, {generated['hotline_appeals']:,} hotline appeals, {generated['enterprise_appeals']:,} "
        f"enterprise appeals (generated in {generated['seconds']:.0f} s)",
        flush=True,
    )
    landed = land(root)
    print(f"bronze + silver: {landed['seconds']:.0f} s", flush=True)
    run = measure(root)
    print(
        f"build: {run['seconds']:.1f} s ({'ok' if run['success'] else 'FAILED'}), definitions "
        f"{run['definitions_seconds']:.1f} s, peak {run['peak_mb']:.0f} MB (dbt {run['peak_children_mb']:.0f} MB)"
    )
    print("sizes:", json.dumps(run["sizes"]))
    for key, seconds, status in run["steps"][:15]:
        print(f"  {seconds:7.1f} s  {key} ({status})")
    for uid, seconds in run["dbt_nodes"][:10]:
        print(f"  {seconds:7.1f} s  dbt {uid}")
    for failure in run["failures"]:
        print(f"  FAILED {failure}")
    if args.record:
        record(generated, landed, run, args.note)
    if not run["success"]:
        raise SystemExit("the build failed: the time above is not a full build (see the failed steps)")


if __name__ == "__main__":
    main()
