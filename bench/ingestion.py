"""Benchmark: validated ingestion of one large contract against a bare `write_deltalake`.

For CSV (gongan.household_registration, GB18030) and Parquet (renshe.social_insurance), N rows
each: the bare write is `write_deltalake` of the already-typed Arrow table of the contract's columns
(no lineage columns, no partitioning: the limit); validated ingestion is `ingest_batch` from the files
(manifest + sha256, decoding, parsing, ID normalisation and check characters, every contract rule,
duplicate keys, then the bronze commit with its seven lineage columns partitioned by `_batch_id`, the
quarantine commit and the ledger commit). The Great Expectations suite, which production runs through
`ingest_batch(on_validated=quality_hook(...))`, is NOT included. Target: validated >= 0.5 x bare rows/s.
Each side is the best of `--repeat` runs (default 5) into fresh tables, and the load average is recorded:
the 2 cores are shared, so a single run says more about the neighbours than about the code.

Run: `make bench` (or `python -m bench.ingestion --rows 1000000`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
from deltalake import write_deltalake

from ingestion.bronze import ingest_batch
from ingestion.contract import get_contract
from ingestion.identifiers import _char_matrix, _ric_expected
from ingestion.landing import find_batches
from ingestion.warehouse import Warehouse

RESULTS = Path(__file__).parent / "RESULTS.md"


def _pick(values: list, n: int, rng: np.random.Generator) -> pl.Series:
    return pl.Series(values).gather(rng.integers(0, len(values), n))


def resident_ids(n: int, rng: np.random.Generator) -> pl.Series:
    births = pl.Series(np.datetime64("1930-01-01") + rng.integers(0, 365 * 90, n).astype("timedelta64[D]")).dt.strftime(
        "%Y%m%d"
    )
    seq = pl.Series(np.arange(n) % 1000).cast(pl.String).str.zfill(3)
    # Unique bodies: the sequence rolls over every 1000 rows, so fold the row number into the area code.
    bodies = pl.Series((np.arange(n) // 1000 % 900 + 100).astype(str)).str.zfill(3).str.slice(0, 3)
    bodies = "440" + bodies + births + seq
    checks = _ric_expected(_char_matrix(bodies, 17)).tobytes().decode()
    return bodies + pl.Series(list(checks))


_SURNAMES = list("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈")
_SURNAMES += ["欧阳", "司马", "诸葛", "上官"]
_GIVEN = list("伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红建国志文斌宇浩凯鹏飞鑫波辉俊峰琳晶燕")
_GIVEN += list("子涵梓轩欣怡一诺雨桐思远家豪嘉怡佳琪晓东海燕春梅秋菊冬雪振华卫东建军小龙德明永康")
_STREETS = ["桂城街道南海大道", "大沥镇广佛路", "里水镇和顺大道", "狮山镇罗村大道", "九江镇沙口路", "西樵镇樵金路"]
_COMPANY_WORDS = list("华南佛山南海广东联合金源恒信宏达永盛盈科美的德润汇通新兴明珠")


def _names(n: int, rng: np.random.Generator) -> pl.Series:
    """Realistic repetition: about half of a million names are distinct, as in a real district."""
    given = _pick(_GIVEN, n, rng) + pl.Series(np.where(rng.random(n) < 0.7, "", None)).fill_null(_pick(_GIVEN, n, rng))
    return _pick(_SURNAMES, n, rng) + given


def _addresses(households: np.ndarray, rng: np.random.Generator) -> pl.Series:
    """One address per household (a third of the rows distinct), one in ten left empty."""
    street = pl.Series(_STREETS).gather(households % len(_STREETS))
    number = pl.Series(households // len(_STREETS) % 997 + 1).cast(pl.String)
    room = pl.Series(households // 5982 % 40 * 100 + households % 7 + 101).cast(pl.String)
    address = street + number + "号" + room + "室"
    return address.scatter(np.flatnonzero(rng.random(len(households)) < 0.1), None)


def _employers(n: int, rng: np.random.Generator) -> pl.Series:
    """About 5,000 employers; a fifth of the rows have none (self-employed, unemployed)."""
    first, second = (pl.Series(_COMPANY_WORDS).gather(rng.integers(0, len(_COMPANY_WORDS), n)) for _ in range(2))
    branch = pl.Series(rng.integers(1, 12, n)).cast(pl.String)
    names = "佛山市南海区" + first + second + branch + "号有限公司"
    return names.scatter(np.flatnonzero(rng.random(n) < 0.2), None)


def household_frame(n: int, rng: np.random.Generator) -> pl.DataFrame:
    ids = resident_ids(n, rng)
    households = np.arange(n) // 3
    return pl.DataFrame(
        {
            "id_number": ids,
            "name": _names(n, rng),
            "gender": _pick(["1", "2"], n, rng),
            "birth_date": ids.str.slice(6, 8).str.strptime(pl.Date, "%Y%m%d"),
            "household_id": pl.Series(households).cast(pl.String).str.zfill(9),
            "relation_to_head": _pick(["head", "spouse", "child"], n, rng),
            "address": _addresses(households, rng),
            "division_code": pl.Series(440605001001 + rng.integers(0, 50, n)).cast(pl.String),
            "status": _pick(["normal", "normal", "normal", "moved_out"], n, rng),
        }
    ).with_columns(
        pl.lit(None, dtype=pl.Date).alias("status_date"),
        pl.lit("2026-11-01T02:00:00+08:00").str.to_datetime("%+", time_zone="UTC", time_unit="us").alias("updated_at"),
    )


def insurance_frame(n: int, rng: np.random.Generator) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "id_number": resident_ids(n, rng),
            "name": _names(n, rng),
            "employer_uscc": pl.Series([None] * n, dtype=pl.String),
            "employer_name": _employers(n, rng),
            "period": pl.Series(["2026-10"] * n),
            "insurance_type": pl.Series(["pension"] * n),
            "contribution_base_cny": pl.Series(rng.uniform(2000, 20000, n)).round(2),
            "is_civil_servant": pl.Series(rng.random(n) < 0.02),
        }
    )


def _manifest(directory: Path, contract_id: str, batch_id: str, part: Path, rows: int, encoding: str) -> None:
    digest = hashlib.sha256(part.read_bytes()).hexdigest()
    (directory / "_manifest.json").write_text(
        json.dumps(
            {
                "contract_id": contract_id,
                "contract_version": "1.0.0",
                "batch_id": batch_id,
                "mode": "snapshot",
                "extracted_at": "2026-11-01T02:00:00+08:00",
                "encoding": encoding,
                "files": [{"name": part.name, "rows": rows, "sha256": digest}],
            }
        )
    )


def write_landing(root: Path, contract_id: str, frame: pl.DataFrame) -> Path:
    contract = get_contract(contract_id)
    directory = root / contract.source_level / contract.department / contract.dataset / "20261101T020000"
    directory.mkdir(parents=True)
    if contract.file_format == "csv":
        part = directory / "part-00000.csv"
        text = frame.with_columns(
            pl.col("updated_at").dt.convert_time_zone("Asia/Shanghai").dt.strftime("%Y-%m-%dT%H:%M:%S+08:00")
        ).write_csv()
        part.write_bytes(text.encode(contract.encoding))
        encoding = contract.encoding
    else:
        part = directory / "part-00000.parquet"
        pq.write_table(frame.to_arrow(), part)
        encoding = "utf-8"
    _manifest(directory, contract_id, "20261101T020000", part, frame.height, encoding)
    return directory


def measure(contract_id: str, frame: pl.DataFrame, work: Path, repeat: int) -> dict:
    """Best of `repeat` runs of each side, every run into a fresh table: the machine is shared and noisy."""
    contract = get_contract(contract_id)
    landing = work / "landing"
    write_landing(landing, contract_id, frame)
    typed = frame.to_arrow().cast(contract.arrow_schema())
    (batch,) = find_batches(landing)
    bare = validated = float("inf")
    for run in range(repeat):
        start = time.perf_counter()
        write_deltalake(str(work / f"bare-{run}"), typed, mode="overwrite")
        bare = min(bare, time.perf_counter() - start)

        warehouse = Warehouse.at(work / f"warehouse-{run}")
        start = time.perf_counter()
        outcome = ingest_batch(batch, warehouse)
        validated = min(validated, time.perf_counter() - start)
        # Random birth dates make a handful of generated ID numbers collide: those are quarantined as duplicates.
        assert outcome.status == "loaded" and outcome.rows_loaded >= 0.999 * frame.height, outcome
        shutil.rmtree(work / f"bare-{run}")
        shutil.rmtree(work / f"warehouse-{run}")
    return {
        "contract": contract_id,
        "format": contract.file_format,
        "rows": frame.height,
        "bare_s": bare,
        "validated_s": validated,
        "bare_rows_s": frame.height / bare,
        "validated_rows_s": frame.height / validated,
        "ratio": bare / validated,
        "load": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5, help="best of this many runs of each side")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    results = []
    for contract_id, build in (
        ("gongan.household_registration", household_frame),
        ("renshe.social_insurance", insurance_frame),
    ):
        frame = build(args.rows, rng)
        work = Path(tempfile.mkdtemp(prefix="yiwang-bench-"))
        try:
            results.append(measure(contract_id, frame, work, args.repeat))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    lines = [
        f"| {date.today()} | {r['contract']} ({r['format']}) | {r['rows']:,} | {r['bare_rows_s']:,.0f} "
        f"({r['bare_s']:.2f} s) | {r['validated_rows_s']:,.0f} ({r['validated_s']:.2f} s) | {r['ratio']:.2f} | "
        f"{'met' if r['ratio'] >= 0.5 else 'NOT met'} | {' / '.join(f'{x:.1f}' for x in r['load'])} |"
        for r in results
    ]
    print("\n".join(lines))
    if not args.no_record:
        _record(lines)


def _record(lines: list[str]) -> None:
    header = "## Validated ingestion vs bare write_deltalake (issue 2)\n"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    if header not in text:
        text += (
            f"\n{header}\nBaseline: bare `write_deltalake` of the same typed Arrow table (the limit). "
            "Target: validated ingestion at >= 0.5 x the bare rows/s. 2 cores.\n\n"
            "| date | contract | rows | bare rows/s | validated rows/s | ratio | target | load 1/5/15 min |\n"
            "|---|---|---|---|---|---|---|---|\n"
        )
    start = text.index(header)
    end = text.find("\n## ", start + len(header))
    section = text[start:] if end < 0 else text[start:end]
    # New rows go right under the last row of the section's first table, above the notes that follow it.
    rows = section.split("\n")
    last = next(i for i, line in enumerate(rows) if line.startswith("|"))
    while last + 1 < len(rows) and rows[last + 1].startswith("|"):
        last += 1
    updated = "\n".join(rows[: last + 1] + lines + rows[last + 1 :])
    RESULTS.write_text(text.replace(section, updated))


if __name__ == "__main__":
    main()
