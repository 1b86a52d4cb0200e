"""Benchmark: the social-assistance cross-check (issue 4) on DuckDB, on Spark (Sail) and in plain pandas.

Builds (or reuses) a demo landing zone of `--scale` x 20,000 residents (250 = 5 million), lands the 11
input contracts into bronze, then runs the full cross-check as of 2026-11-15 once per engine, each in
its own process so that its peak memory (max RSS) is its own: as-of plan from the ledger, state of every
input from bronze, the nine rules, the Splink linkage, the gold rows (flags, case review, summary).
The three results must be identical. Targets: DuckDB under 60 s and at least 5x faster than pandas.

Run: `make bench` (or `python -m bench.crosscheck --scale 25 --record`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

RESULTS = Path(__file__).parent / "RESULTS.md"
AS_OF = date(2026, 11, 15)
KEY = b"bench-crosscheck-key-0123456789ab"
SECTION = "## Social-assistance cross-check (issue 4)"


def prepare(root: Path, scale: float, seed: int) -> tuple[Path, Path, float, float]:
    """The landing zone and the bronze warehouse, built once per scale and reused."""
    from ingestion.contract import get_contract
    from ingestion.demo import generate_landing_zone
    from ingestion.pipeline import ingest_contract
    from ingestion.warehouse import Warehouse
    from thematic_libs.social_assistance.rules import INPUT_CONTRACTS

    landing, warehouse = root / "landing", root / "warehouse"
    generated = ingested = 0.0
    if not (landing / "_labels").exists():
        started = time.perf_counter()
        generate_landing_zone(landing, scale=scale, seed=seed, progress=False)
        generated = time.perf_counter() - started
    if not (root / ".ingested").exists():
        started = time.perf_counter()
        for contract_id in INPUT_CONTRACTS:
            ingest_contract(get_contract(contract_id), landing, Warehouse.at(warehouse))
        ingested = time.perf_counter() - started
        (root / ".ingested").write_text("ok")
    return landing, warehouse, generated, ingested


def one(engine: str, warehouse: str, out: str) -> None:
    """Child process: one full cross-check computation, its time and this process's peak RSS."""
    from ingestion.pseudonym import Pseudonymiser
    from ingestion.warehouse import Warehouse
    from thematic_libs.social_assistance.asof import plan_inputs
    from thematic_libs.social_assistance.gold import build_flags, build_review, build_summary
    from thematic_libs.social_assistance.linkage import link_certificates
    from thematic_libs.social_assistance.rules import INPUT_CONTRACTS, Params, load_config
    from thematic_libs.social_assistance.run import evaluate

    wh = Warehouse.at(warehouse)
    config = load_config()
    started = time.perf_counter()
    if engine == "pandas":
        from thematic_libs.social_assistance.baseline_pandas import run_pandas

        plans = plan_inputs(wh, AS_OF, INPUT_CONTRACTS)
        raw = run_pandas(
            wh, plans, Params.build(AS_OF, config), lambda c, m: link_certificates(c, m, config["linkage"])
        )
    else:
        raw, _, _ = evaluate(wh, AS_OF, engine, config)
    flags = build_flags(raw, Pseudonymiser(KEY), AS_OF, "bench")
    build_review(flags, raw, config, AS_OF, "bench")
    build_summary(flags, AS_OF, "bench")
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    flags.to_pandas().to_parquet(out)
    print(json.dumps({"engine": engine, "seconds": seconds, "peak_mb": peak_mb, "flags": flags.num_rows}))


def measure(engine: str, warehouse: Path, scratch: Path) -> dict:
    out = scratch / f"flags-{engine}.parquet"
    done = subprocess.run(
        [sys.executable, "-m", "bench.crosscheck", "--one", engine, "--warehouse", str(warehouse), "--out", str(out)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    line = [x for x in done.stdout.splitlines() if x.startswith("{")][-1]
    return {**json.loads(line), "out": out}


def record(scale: float, residents: int, rows: dict, generated: float, ingested: float, note: str) -> None:
    duck, pandas = rows["duckdb"], rows.get("pandas")
    speedup = pandas["seconds"] / duck["seconds"] if pandas else float("nan")
    met = duck["seconds"] < 60 and speedup >= 5
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    if SECTION not in text:
        text += (
            f"\n\n{SECTION}\n\nFull cross-check as of 2026-11-15 (as-of plan, state of 11 inputs from bronze, nine "
            "rules, Splink linkage, gold rows), each engine in its own process; peak = max RSS of that process "
            "(Sail runs in process). Baseline: straightforward pandas. Targets: DuckDB < 60 s and >= 5x faster "
            "than pandas. 2 cores shared with other workers.\n\n"
            "| date | residents | engine | wall s | peak MB | flags | vs pandas | target |\n"
            "|---|---|---|---|---|---|---|---|\n"
        )
    lines = []
    for engine in ("duckdb", "spark", "pandas"):
        if engine not in rows:
            continue
        r = rows[engine]
        ratio = pandas["seconds"] / r["seconds"] if pandas else float("nan")
        target = ("met" if met else "NOT met") if engine == "duckdb" else ""
        lines.append(
            f"| {date.today()} | {residents:,} | {engine} | {r['seconds']:.1f} | {r['peak_mb']:.0f} | {r['flags']} "
            f"| {ratio:.1f}x | {target} |"
        )
    table_end = text.index(SECTION)
    head, tail = text[:table_end], text[table_end:]
    marker = "|---|---|---|---|---|---|---|---|\n"
    at = tail.index(marker) + len(marker)
    while at < len(tail) and tail[at] == "|":
        at = tail.index("\n", at) + 1
    tail = tail[:at] + "\n".join(lines) + "\n" + tail[at:]
    if note:
        tail = (
            tail.rstrip("\n")
            + f"\n\nNote (scale {scale:g}, generation {generated:.0f} s, "
            + f"ingestion of the 11 inputs {ingested:.0f} s): {note}\n"
        )
    RESULTS.write_text(head + tail, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=250.0, help="x 20,000 residents (250 = 5 million)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--root", type=Path, default=None, help="where the landing zone and warehouse live")
    parser.add_argument("--engines", default="duckdb,spark,pandas")
    parser.add_argument("--record", action="store_true", help="append the numbers to bench/RESULTS.md")
    parser.add_argument("--note", default="")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--warehouse", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args.one, args.warehouse, args.out)
        return
    import pyarrow.parquet as pq

    root = args.root or Path(os.environ.get("TMPDIR", "/tmp")) / f"yiwang-bench-crosscheck-{args.scale:g}"
    root.mkdir(parents=True, exist_ok=True)
    _, warehouse, generated, ingested = prepare(root, args.scale, args.seed)
    rows = {}
    for engine in args.engines.split(","):
        rows[engine] = measure(engine, warehouse, root)
        print(
            f"{engine}: {rows[engine]['seconds']:.1f} s, peak {rows[engine]['peak_mb']:.0f} MB, "
            f"{rows[engine]['flags']} flags"
        )
    tables = {e: pq.read_table(r["out"]).drop(["run_id"]) for e, r in rows.items()}
    first = next(iter(tables.values()))
    for engine, table in tables.items():
        if not table.equals(first):
            raise SystemExit(f"{engine} does not give the same flags as {next(iter(tables))}")
    print("all engines gave identical flags")
    if args.record:
        record(args.scale, int(args.scale * 20_000), rows, generated, ingested, args.note)


if __name__ == "__main__":
    main()
