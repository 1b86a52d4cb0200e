"""Benchmark: one very large CSV part, landed whole and in runs of records (issue 16, bounded memory).

A department may deliver its whole table as one part. The demo's first household-registration batch at
`--scale` (300: 6 M residents, one GB 18030 CSV of about 960 MB) is written by the demo generator and its parts
joined into one part; a copy gets one malformed line at its end. Each is landed with the quality recorder into a
fresh warehouse, each in a fresh process (its peak resident memory sampled every 0.02 s), alternated and repeated:

- **whole**: `PART_BY_PART_ROWS` above the part's size, so the part is read at once (as before issue 16 (i));
- **runs**: the default threshold, so the part streams in runs of at most 1,000,000 records
  (`ingestion.readers.read_part_runs`; with the malformed line, the exact reader's runs).

Run: `python -m bench.large_part [--scale 300] [--repeat 1]` (in `make bench`); figures in bench/out/large_part.json;
copy them into bench/RESULTS.md (issue 16 (i)). The landings are kept under $YIWANG_BENCH_DIR (default
/tmp/yiwang-bench-large-part).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "large_part.json"
WORK = Path(os.environ.get("YIWANG_BENCH_DIR", "/tmp/yiwang-bench-large-part"))
CONTRACT = "gongan.household_registration"
AS_OF = "2026-12-01"
MALFORMED_LINE = b"a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p\n"


def landing(scale: float, malformed: bool) -> Path:
    """The landing zone of one batch in one part (generated once per scale and kind)."""
    root = WORK / f"scale{scale:g}" / ("malformed" if malformed else "clean")
    if (root / "done").exists():
        return root / "landing"
    shutil.rmtree(root, ignore_errors=True)
    from demo_data.defects import apply_defects
    from demo_data.generate import BUILDERS
    from demo_data.world import build_world
    from demo_data.writer import write_batch

    batch = next(iter(BUILDERS[CONTRACT](build_world(0, scale))))
    apply_defects(batch, 0, 0.02, 0)
    write_batch(root / "landing", batch)
    (directory,) = (root / "landing").glob(f"*/{CONTRACT.replace('.', '/')}/*")
    _join_parts(directory, MALFORMED_LINE if malformed else b"")
    (root / "done").touch()
    return root / "landing"


def _join_parts(directory: Path, tail: bytes) -> None:
    """The batch's parts as one part (one header), `tail` appended and counted as one more record."""
    manifest = json.loads((directory / "_manifest.json").read_text())
    digest, rows = hashlib.sha256(), 0
    with open(directory / "joined.tmp", "wb") as joined:
        for index, entry in enumerate(manifest["files"]):
            data = (directory / entry["name"]).read_bytes()
            data = data.split(b"\n", 1)[1] if index else data
            joined.write(data)
            digest.update(data)
            rows += entry["rows"]
            (directory / entry["name"]).unlink()
        joined.write(tail)
        digest.update(tail)
    (directory / "joined.tmp").rename(directory / "part-00000.csv")
    rows += 1 if tail else 0
    manifest["files"] = [{"name": "part-00000.csv", "rows": rows, "sha256": digest.hexdigest()}]
    (directory / "_manifest.json").write_text(json.dumps(manifest, ensure_ascii=False))


def child(landing_zone: Path, whole: bool) -> None:
    """Land the batch in this process and print its time and peak memory as JSON."""
    from datetime import date

    import ingestion.bronze as bronze
    from bench.pipeline import MemorySampler
    from ingestion.contract import get_contract
    from ingestion.pipeline import ingest_contract
    from ingestion.warehouse import Warehouse
    from quality.runner import QualityRecorder

    if whole:
        bronze.PART_BY_PART_ROWS = 10**12
    root = landing_zone.parent / "warehouse"
    shutil.rmtree(root, ignore_errors=True)
    warehouse = Warehouse.at(root)
    before = psutil.Process().memory_info().rss
    with MemorySampler(interval=0.02) as sampler:
        started = time.perf_counter()
        contract, as_of = get_contract(CONTRACT), date.fromisoformat(AS_OF)
        outcomes = ingest_contract(
            contract, landing_zone, warehouse, as_of=as_of, on_validated=QualityRecorder(warehouse)
        )
        seconds = time.perf_counter() - started
    shutil.rmtree(root, ignore_errors=True)
    print(
        json.dumps(
            {
                "seconds": round(seconds, 2),
                "rss_before_mb": before >> 20,
                "peak_rss_mb": sampler.peak() >> 20,
                "outcomes": [(o.status, o.rows_loaded, o.rows_quarantined) for o in outcomes],
            }
        )
    )


def measure(landing_zone: Path, whole: bool) -> dict:
    command = [sys.executable, "-m", "bench.large_part", "--child", str(landing_zone)] + (["--whole"] if whole else [])
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=300.0, help="demo scale (1.0 = 20,000 residents)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--whole", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.whole)
        return
    results: dict[str, list[dict]] = {}
    for _ in range(args.repeat):
        for malformed in (False, True):
            zone = landing(args.scale, malformed)
            for whole in (True, False):
                name = f"{'malformed' if malformed else 'clean'}, {'whole' if whole else 'runs'}"
                figure = measure(zone, whole)
                results.setdefault(name, []).append(figure)
                print(f"{name}: {figure['seconds']} s, peak {figure['peak_rss_mb']} MB", flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"scale": args.scale, "results": results}, indent=1))


if __name__ == "__main__":
    main()
