"""Benchmark: linking 50,000 ID-less death certificates at 5 million residents, by variant class (issue 10).

Takes the 5M-resident landing zone and bronze that `bench.crosscheck` builds and caches (`--scale 250`),
copies the bronze warehouse, and delivers one more `weijian.death_certificates` batch, written the way a
province system that only read the contract would: 50,000 certificates without an ID number, dated
before the as-of date. A share of them are deaths of counted members whose name or birth date another
department wrote differently (one class each: as written, traditional characters, a homophone slip,
both, a full-width space, a swapped birth month and day); some are near misses of members (a namesake
with another birth date, a homophone of the other sex, the same surname with another given name); the
rest are other people, with names drawn from the same surname and given-name distribution as the
population (so namesakes of members occur as they would). Then the whole cross-check runs on DuckDB
as of 2026-11-15 and the linkage on its own, and precision and recall are counted per class from
`gold/social_assistance/linkage_pairs`. Target: the 5M cross-check under 60 s in total.

Run: `python -m bench.linkage` (after `python -m bench.crosscheck --scale 250` has built the inputs).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from bench.crosscheck import AS_OF, KEY, bench_root
from demo_data import vocab
from demo_data.crosscheck import HOMOPHONES, TO_TRADITIONAL, homophone_slip
from ingestion.contract import get_contract
from ingestion.pipeline import ingest_contract
from ingestion.pseudonym import Pseudonymiser
from ingestion.warehouse import Warehouse
from thematic_libs.social_assistance.engine_duckdb import counted_members_sql, load_state
from thematic_libs.social_assistance.gold import LINKAGE_TABLE
from thematic_libs.social_assistance.linkage import link_candidates
from thematic_libs.social_assistance.rules import CASES, CERTIFICATES, MEMBERS, Params, load_config
from thematic_libs.social_assistance.run import plan_inputs, run_crosscheck

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from landing_kit import write_batch

VARIANTS = ("as written", "traditional", "homophone", "traditional + homophone", "full-width space", "month/day swap")
NEAR_MISSES = ("namesake, other birth date", "homophone, other sex", "same surname, other given name")
BATCH = "20261114T180000"


def counted_members(warehouse: Warehouse) -> pl.DataFrame:
    """member_id, member_name, sex and birth date of the counted members as of the date."""
    import duckdb

    plans = plan_inputs(warehouse, AS_OF, (CASES, MEMBERS))
    params = Params.build(AS_OF, load_config())
    con = duckdb.connect()
    load_state(con, warehouse, plans[CASES], params)
    load_state(con, warehouse, plans[MEMBERS], params)
    con.execute(counted_members_sql(params))
    members = con.sql("SELECT DISTINCT member_id, member_name FROM counted").pl()
    con.close()
    return members.with_columns(
        pl.when(pl.col("member_id").str.slice(16, 1).cast(pl.Int32) % 2 == 1)
        .then(pl.lit("1"))
        .otherwise(pl.lit("2"))
        .alias("gender"),
        pl.col("member_id").str.slice(6, 8).str.strptime(pl.Date, "%Y%m%d", strict=False).alias("birth_date"),
    ).drop_nulls("birth_date")


def random_names(rng: np.random.Generator, n: int, gender: np.ndarray) -> list[str]:
    weights = np.array(vocab.SURNAME_WEIGHTS, dtype=float)
    surnames = np.array(vocab.SURNAMES)[rng.choice(len(vocab.SURNAMES), size=n, p=weights / weights.sum())]
    male, female = np.array(vocab.GIVEN_MALE), np.array(vocab.GIVEN_FEMALE)
    first = np.where(gender == "1", male[rng.integers(len(male), size=n)], female[rng.integers(len(female), size=n)])
    second = np.where(gender == "1", male[rng.integers(len(male), size=n)], female[rng.integers(len(female), size=n)])
    given = np.where(rng.random(n) < 0.72, np.char.add(first, second), first)
    return np.char.add(surnames, given).tolist()


def certificates(members: pl.DataFrame, total: int, per_class: int, seed: int) -> tuple[list[dict], pl.DataFrame]:
    """The delivered rows and the truth: certificate_no, class, member_id (None: nobody counted)."""
    rng = np.random.default_rng(seed)
    pool = members.sample(fraction=1.0, shuffle=True, seed=seed)
    rows, truth = [], []
    used = 0

    def take(predicate) -> dict:
        nonlocal used
        while True:
            row = pool.row(used, named=True)
            used += 1
            if predicate(row):
                return row

    def add(kind: str, name: str, gender: str, birth: date, member: str | None) -> None:
        number = f"SW99{len(rows):08d}"
        rows.append(
            {
                "certificate_no": number,
                "id_number": None,
                "name": name,
                "gender": gender,
                "birth_date": birth.isoformat(),
                "death_date": (date(2026, 10, 1) + timedelta(days=int(rng.integers(0, 40)))).isoformat(),
                "hospital": "某某市第一人民医院",
            }
        )
        truth.append({"certificate_no": number, "kind": kind, "member_id": member})

    for kind in VARIANTS:
        for _ in range(per_class):
            if kind in ("homophone", "traditional + homophone"):
                m = take(lambda r: homophone_slip(r["member_name"]) is not None)
            elif kind == "month/day swap":
                m = take(lambda r: r["birth_date"].day <= 12 and r["birth_date"].day != r["birth_date"].month)
            else:
                m = take(lambda r: True)
            name, birth = m["member_name"], m["birth_date"]
            if kind == "traditional":
                name = TO_TRADITIONAL.convert(name)
            elif kind == "homophone":
                name = homophone_slip(name)
            elif kind == "traditional + homophone":
                name = TO_TRADITIONAL.convert(homophone_slip(name))
            elif kind == "full-width space":
                name = f"{name[0]}\u3000{name[1:]}"
            elif kind == "month/day swap":
                birth = birth.replace(month=birth.day, day=birth.month)
            add(kind, name, m["gender"], birth, m["member_id"])
    for kind in NEAR_MISSES:
        for _ in range(per_class):
            if kind == "homophone, other sex":
                m = take(lambda r: homophone_slip(r["member_name"]) is not None)
                add(kind, homophone_slip(m["member_name"]), "2" if m["gender"] == "1" else "1", m["birth_date"], None)
            elif kind == "namesake, other birth date":
                m = take(lambda r: True)
                add(
                    kind,
                    m["member_name"],
                    m["gender"],
                    m["birth_date"] - timedelta(days=int(rng.integers(400, 9000))),
                    None,
                )
            else:
                m = take(lambda r: len(r["member_name"]) >= 2)
                name = m["member_name"]
                other = next(c for c in HOMOPHONES if c != name[-1] and HOMOPHONES[c] != name[-1])
                add(kind, name[:-1] + other, m["gender"], m["birth_date"], None)
    rest = total - len(rows)
    gender = np.where(rng.random(rest) < 0.5, "1", "2")
    births = [date(1930, 1, 1) + timedelta(days=int(d)) for d in rng.integers(0, 70 * 365, rest)]
    for name, g, birth in zip(random_names(rng, rest, gender), gender.tolist(), births, strict=True):
        add("other people", name, g, birth, None)
    return rows, pl.DataFrame(truth, schema={"certificate_no": pl.String, "kind": pl.String, "member_id": pl.String})


def per_class(truth: pl.DataFrame, linked: pl.DataFrame, members: pl.DataFrame) -> pl.DataFrame:
    """Per class: certificates, linked, right, wrong, precision, recall (recall only where a member exists)."""
    pseudonymiser = Pseudonymiser(KEY)
    keys = {m: pseudonymiser.pseudonym(m) for m in truth["member_id"].drop_nulls().to_list()}
    truth = truth.with_columns(pl.col("member_id").replace_strict(keys, default=None).alias("true_key"))
    joined = truth.join(linked.rename({"record_ref": "certificate_no"}), on="certificate_no", how="left")
    return (
        joined.group_by("kind")
        .agg(
            pl.col("certificate_no").n_unique().alias("certificates"),
            pl.col("member_key").is_not_null().sum().alias("links"),
            (pl.col("member_key") == pl.col("true_key")).sum().alias("right"),
        )
        .with_columns(
            (pl.col("links") - pl.col("right")).alias("wrong"),
            (pl.col("right") / pl.col("links")).round(4).alias("precision"),
            (pl.col("right") / pl.col("certificates")).round(4).alias("recall"),
        )
        .sort("kind")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=250.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--certificates", type=int, default=50_000)
    parser.add_argument("--per-class", type=int, default=500)
    args = parser.parse_args()
    root = bench_root(args.scale, args.seed)
    if not (root / ".ingested").exists():
        raise SystemExit(f"no cached inputs in {root}: run `python -m bench.crosscheck --scale {args.scale:g}` first")
    with tempfile.TemporaryDirectory(dir=root) as scratch:
        started = time.perf_counter()
        warehouse_dir = Path(scratch) / "warehouse"
        shutil.copytree(root / "warehouse", warehouse_dir)
        warehouse = Warehouse.at(warehouse_dir)
        members = counted_members(warehouse)
        rows, truth = certificates(members, args.certificates, args.per_class, args.seed)
        landing = Path(scratch) / "landing"
        write_batch(landing, CERTIFICATES, BATCH, rows, mode="incremental", extracted_at="2026-11-14T18:00:00+08:00")
        ingest_contract(get_contract(CERTIFICATES), landing, warehouse)
        prepared = time.perf_counter() - started
        print(f"prepared in {prepared:.0f} s: {members.height:,} counted members, {len(rows):,} ID-less certificates")

        certs = pa.table(
            {
                "certificate_no": [r["certificate_no"] for r in rows],
                "name": [r["name"] for r in rows],
                "gender": [r["gender"] for r in rows],
                "birth_date": pa.array([date.fromisoformat(r["birth_date"]) for r in rows], pa.date32()),
            }
        )
        started = time.perf_counter()
        pairs = link_candidates(certs, members.select("member_id", "member_name").to_arrow(), load_config()["linkage"])
        linkage_seconds = time.perf_counter() - started
        print(f"linkage alone: {linkage_seconds:.1f} s, {pairs.num_rows:,} pairs at or above the review threshold")

        started = time.perf_counter()
        result = run_crosscheck(warehouse, AS_OF, engine="duckdb", key=KEY)
        total = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"whole cross-check on DuckDB: {total:.1f} s (target < 60 s), {result.flagged_cases:,} flagged cases, "
            f"{result.linked_pairs:,} linked pairs, {result.pairs_to_review:,} to review; peak RSS {peak:,.0f} MB; "
            f"load {os.getloadavg()[0]:.1f}"
        )
        pairs_table = pl.from_arrow(warehouse.table(LINKAGE_TABLE).to_pyarrow_table()).filter(
            pl.col("rule_code") == "R01"
        )
        linked = pairs_table.filter(pl.col("decision") == "linked").select("record_ref", "member_key")
        pl.Config.set_tbl_rows(20)
        print(per_class(truth, linked, members))


if __name__ == "__main__":
    main()
