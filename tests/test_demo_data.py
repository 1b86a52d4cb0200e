"""The demo landing-zone generator: contract conformance, planted defects, labels and the cross-check key.

One small landing zone (scale 0.05, 1,000 residents) is generated per test session and read back the
way a consumer would: manifests, files, encodings. The label files are checked against the data in
both directions (every violation is labelled, every label is a violation), and a plain reference
implementation of the assistance cross-check (R01-R09) must reproduce `crosscheck_cases.csv` exactly,
with no flag on any ordinary case.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import time
from collections import Counter, defaultdict
from datetime import date
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from stdnum.cn import ric, uscc

from demo_data import DemoSummary, generate_landing_zone
from ingestion.contract import Contract, batch_contracts

SCALE = 0.05
SEED = 7
FULL_WIDTH = str.maketrans("０１２３４５６７８９ｘＸ", "0123456789xX")
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+08:00$")
MONTHS = [f"2026-{m:02d}" for m in range(5, 11)]


@pytest.fixture(scope="session")
def zone(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoSummary, float]:
    out = tmp_path_factory.mktemp("landing")
    started = time.perf_counter()
    summary = generate_landing_zone(out, scale=SCALE, seed=SEED, progress=False)
    return out, summary, time.perf_counter() - started


@pytest.fixture(scope="session")
def labels(zone: tuple[Path, DemoSummary, float]) -> dict[str, list[dict[str, str]]]:
    folder = zone[0] / "_labels"
    out = {}
    for name in ("defects", "bad_batches", "crosscheck_cases", "hotline_event_codes"):
        with open(folder / f"{name}.csv", encoding="utf-8") as f:
            out[name] = list(csv.DictReader(f))
    return out


def normalise_id(value: str | None) -> str | None:
    """The platform's documented normalisation: trim, fold full-width, upper-case, 15 -> 18 digits."""
    if value is None:
        return None
    value = value.strip().translate(FULL_WIDTH).upper()
    if re.fullmatch(r"\d{15}", value):
        body = value[:6] + "19" + value[6:]
        value = body + ric.calc_check_digit(body + "0")
    return value


def batch_dirs(root: Path, contract: Contract) -> list[Path]:
    return sorted((root / contract.source_level / contract.department / contract.dataset).iterdir())


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def read_batch(directory: Path, contract: Contract) -> pl.DataFrame:
    """Every column as delivered text (null = empty), read the way a consumer would."""
    manifest = json.loads((directory / "_manifest.json").read_text(encoding="utf-8"))
    schema = dict.fromkeys(contract.column_names, pl.String)
    frames = []
    for entry in manifest["files"]:
        path = directory / entry["name"]
        if contract.file_format == "csv":
            rows = list(csv.DictReader(io.StringIO(path.read_bytes().decode(manifest["encoding"]))))
            frames.append(pl.DataFrame({c: [r[c] or None for r in rows] for c in schema}, schema=schema))
        elif contract.file_format == "jsonl":
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
            frames.append(pl.DataFrame({c: [_text(r[c]) for r in rows] for c in schema}, schema=schema))
        else:
            frames.append(pl.read_parquet(path).cast(pl.String).select(list(schema)))
    return pl.concat(frames)


def record_key(frame: pl.DataFrame, contract: Contract) -> pl.Series:
    return frame.select(
        pl.concat_str([pl.col(k).fill_null("") for k in contract.primary_key], separator="|")
    ).to_series()


def test_generation_is_fast_and_summarised(zone: tuple[Path, DemoSummary, float]) -> None:
    root, summary, seconds = zone
    assert seconds < 15
    assert summary.residents == 1000
    assert summary.as_of == date(2026, 11, 15)
    assert set(summary.contracts) == set(batch_contracts())
    assert summary.batches == sum(len(batch_dirs(root, c)) for c in batch_contracts().values())
    assert summary.rows > 10_000
    assert summary.defects > 0 and summary.normalisable > 0


def test_every_batch_contract_is_delivered_with_well_formed_manifests(
    zone: tuple[Path, DemoSummary, float], labels: dict[str, list[dict[str, str]]]
) -> None:
    root = zone[0]
    waiting = {(b["contract_id"], b["batch_id"]) for b in labels["bad_batches"] if b["expected_status"] == "waiting"}
    for cid, contract in batch_contracts().items():
        dirs = batch_dirs(root, contract)
        assert len(dirs) >= 3, cid
        assert [d.name for d in dirs] == sorted(d.name for d in dirs)
        for d in dirs:
            assert re.fullmatch(r"\d{8}T\d{6}(-\d+)?", d.name), d
            if (cid, d.name) in waiting:
                assert not (d / "_manifest.json").exists()
                continue
            manifest = json.loads((d / "_manifest.json").read_text(encoding="utf-8"))
            assert manifest["contract_id"] == cid and manifest["batch_id"] == d.name
            assert manifest["mode"] == contract.default_mode
            assert TIMESTAMP.match(manifest["extracted_at"])
            assert manifest["extracted_at"][:10].replace("-", "") == d.name[:8]
            expected_encoding = contract.encoding if contract.file_format != "parquet" else "utf-8"
            assert manifest["encoding"] == expected_encoding
            names = {e["name"] for e in manifest["files"]}
            assert names == {p.name for p in d.iterdir() if p.name != "_manifest.json"}
            assert all(n.endswith("." + contract.file_format) for n in names)


def _data_rows(path: Path, fmt: str, encoding: str) -> int:
    if fmt == "csv":
        return len(list(csv.reader(io.StringIO(path.read_bytes().decode(encoding))))) - 1
    if fmt == "jsonl":
        return sum(1 for line in path.read_bytes().split(b"\n") if line)
    return pq.ParquetFile(path).metadata.num_rows


def test_manifests_match_files_except_the_planted_bad_batches(
    zone: tuple[Path, DemoSummary, float], labels: dict[str, list[dict[str, str]]]
) -> None:
    root = zone[0]
    bad = {(b["contract_id"], b["batch_id"]): b["reason_kind"] for b in labels["bad_batches"]}
    assert sorted(bad.values()) == sorted(
        ["row_count", "sha256", "unknown_version", "too_many_bad_rows", "no_manifest"]
    )
    seen = Counter()
    for cid, contract in batch_contracts().items():
        for d in batch_dirs(root, contract):
            kind = bad.get((cid, d.name))
            if kind == "no_manifest":
                continue
            manifest = json.loads((d / "_manifest.json").read_text(encoding="utf-8"))
            for entry in manifest["files"]:
                path = d / entry["name"]
                sha_ok = hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
                rows_ok = _data_rows(path, contract.file_format, manifest["encoding"]) == entry["rows"]
                assert sha_ok == (kind != "sha256"), (cid, d.name)
                assert rows_ok == (kind != "row_count"), (cid, d.name)
            assert (manifest["contract_version"] == "9.9.9") == (kind == "unknown_version")
            if manifest["contract_version"] != "9.9.9":
                assert manifest["contract_version"] == contract.version
            seen[kind] += 1
    assert seen["sha256"] == seen["row_count"] == seen["unknown_version"] == 1


def test_gb18030_files_are_gb18030_not_utf8(zone: tuple[Path, DemoSummary, float]) -> None:
    root = zone[0]
    checked = 0
    for contract in batch_contracts().values():
        if contract.encoding != "gb18030":
            continue
        for d in batch_dirs(root, contract):
            for path in d.glob("part-*.csv"):
                data = path.read_bytes()
                text = data.decode("gb18030")
                if re.search(r"[\u4e00-\u9fff]", text):
                    with pytest.raises(UnicodeDecodeError):
                        data.decode("utf-8")
                    checked += 1
    assert checked >= 6


def test_generation_is_deterministic(zone: tuple[Path, DemoSummary, float], tmp_path: Path) -> None:
    root = zone[0]
    generate_landing_zone(tmp_path, scale=SCALE, seed=SEED, progress=False)

    def digests(base: Path) -> dict[str, str]:
        return {
            str(p.relative_to(base)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(base.rglob("*"))
            if p.is_file()
        }

    assert digests(root) == digests(tmp_path)


def _violations(value: str | None, contract: Contract, column: str) -> str | None:
    """The rule a delivered cell breaks, after ID normalisation; None when it is fine."""
    col = contract.column(column)
    if value is None:
        return "required" if col.required else None
    if col.identifier_kind == "resident_id":
        value = normalise_id(value)
    kind = col.logical_type
    parsed: float | None = None
    try:
        if kind in ("number", "integer"):
            parsed = float(value) if kind == "number" else int(value)
        elif kind == "date":
            date.fromisoformat(value) if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value) else int("x")
        elif kind == "timestamp":
            date.fromisoformat(value[:10]) if TIMESTAMP.match(value) and value[11:13] < "24" else int("x")
        elif kind == "boolean" and value not in ("true", "false"):
            return "type"
    except ValueError:
        return "type"
    if col.pattern and not re.match(col.pattern, value):
        return "pattern"
    if col.allowed_values and value not in col.allowed_values:
        return "allowed_values"
    if parsed is not None and (
        (col.minimum is not None and parsed < col.minimum) or (col.maximum is not None and parsed > col.maximum)
    ):
        return "range"
    if col.identifier_kind == "resident_id" and ric.calc_check_digit(value) != value[-1]:
        return "check_character"
    if col.identifier_kind == "credit_code" and not uscc.is_valid(value):
        return "check_character"
    return None


def test_every_contract_violation_is_labelled_and_every_label_is_real(
    zone: tuple[Path, DemoSummary, float], labels: dict[str, list[dict[str, str]]]
) -> None:
    """Unlabelled rows are clean (IDs and credit codes included); labelled ones break what they say."""
    root = zone[0]
    skip = {(b["contract_id"], b["batch_id"]) for b in labels["bad_batches"]}
    planted: dict[tuple[str, str], dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for d in labels["defects"]:
        planted[(d["contract_id"], d["batch_id"])][d["rule"]].add(d["record_key"])
    rules_seen: Counter[str] = Counter()
    for cid, contract in batch_contracts().items():
        for d in batch_dirs(root, contract):
            if (cid, d.name) in skip:
                continue
            frame = read_batch(d, contract)
            keys = record_key(frame, contract).to_list()
            expected = planted.get((cid, d.name), {})
            found: dict[str, set[str]] = defaultdict(set)
            for column in contract.column_names:
                for key, value in zip(keys, frame[column].to_list(), strict=True):
                    rule = _violations(value, contract, column)
                    if rule:
                        found[rule].add(key)
            dup = {k for k, n in Counter(keys).items() if n > 1}
            if dup:
                found["duplicate_key"] = dup
            for rule in set(found) | set(expected):
                if rule == "normalisable":
                    continue
                assert found.get(rule, set()) == expected.get(rule, set()), (cid, d.name, rule)
                rules_seen[rule] += len(expected.get(rule, set()))
            bad_rows = sum(1 for k in keys if any(k in found[r] for r in found))
            assert bad_rows / max(len(keys), 1) <= 0.05, (cid, d.name)
            for key in expected.get("normalisable", set()):
                assert key in keys or not contract.primary_key, (cid, d.name, key)
    assert set(rules_seen) == {
        "required",
        "type",
        "pattern",
        "allowed_values",
        "range",
        "check_character",
        "duplicate_key",
    }


def test_messy_ids_use_every_documented_form(labels: dict[str, list[dict[str, str]]]) -> None:
    forms = Counter(
        re.search(r"form=(\w+)", d["note"]).group(1) for d in labels["defects"] if d["rule"] == "normalisable"
    )
    assert set(forms) == {"spaces", "fullwidth", "lowercase_x", "15_digit"}


def _latest(root: Path, cid: str, skip: set[tuple[str, str]], drop: dict[tuple[str, str], set[str]]) -> pl.DataFrame:
    """A consumer's view of a contract: quarantine labelled rows, later batches win, IDs normalised."""
    contract = batch_contracts()[cid]
    parts = []
    for d in batch_dirs(root, contract):
        if (cid, d.name) in skip:
            continue
        frame = read_batch(d, contract)
        frame = frame.filter(~record_key(frame, contract).is_in(list(drop.get((cid, d.name), set())))).with_columns(
            pl.lit(d.name).alias("_batch")
        )
        parts.append(frame)
    frame = pl.concat(parts)
    for col in contract.columns:
        if col.identifier_kind == "resident_id":
            frame = frame.with_columns(pl.col(col.name).map_elements(normalise_id, return_dtype=pl.String))
    if contract.default_mode == "snapshot":
        return frame.filter(pl.col("_batch") == frame["_batch"].max())
    return frame.unique(subset=list(contract.primary_key), keep="last", maintain_order=True)


@pytest.fixture(scope="session")
def tables(zone: tuple[Path, DemoSummary, float], labels: dict[str, list[dict[str, str]]]) -> dict[str, pl.DataFrame]:
    skip = {(b["contract_id"], b["batch_id"]) for b in labels["bad_batches"]}
    drop: dict[tuple[str, str], set[str]] = defaultdict(set)
    for d in labels["defects"]:
        if d["rule"] != "normalisable":
            drop[(d["contract_id"], d["batch_id"])].add(d["record_key"])
    return {cid: _latest(zone[0], cid, skip, drop) for cid in batch_contracts()}


def _reference_crosscheck(t: dict[str, pl.DataFrame], as_of: str) -> set[tuple[str, str]]:
    """R01-R09 by exact (normalised) ID links, plus name/sex/birth links for ID-less death certificates."""
    cases = t["minzheng.assistance_cases"]
    active = set(cases.filter(pl.col("status") == "active")["case_id"].to_list())
    counted = t["minzheng.assistance_members"].filter(pl.col("case_id").is_in(list(active)))
    cases_of: dict[str, set[str]] = defaultdict(set)
    for case, pid in zip(counted["case_id"], counted["member_id_number"], strict=True):
        cases_of[pid].add(case)
    flags: set[tuple[str, str]] = set()

    def flag(ids: set[str], rule: str) -> None:
        flags.update((case, rule) for pid in ids for case in cases_of.get(pid, ()))

    cremated = t["minzheng.cremation_records"].filter(pl.col("death_date") <= as_of)
    certified = t["weijian.death_certificates"].filter(pl.col("death_date") <= as_of)
    flag(set(cremated["id_number"]) | set(certified["id_number"].drop_nulls()), "R01")
    # ID-less certificates: same sex, birth date equal or with month and day swapped, and the name equal
    # after normalisation or in pinyin with tones (the variant classes the generator plants).
    from thematic_libs.names import name_keys

    anonymous = certified.filter(pl.col("id_number").is_null())
    people = set()
    for name, gender, birth in zip(anonymous["name"], anonymous["gender"], anonymous["birth_date"], strict=True):
        keys = name_keys(name)
        swapped = f"{birth[:4]}-{birth[8:10]}-{birth[5:7]}" if birth else None
        for day in {birth, swapped} - {None}:
            people.update({(keys.normalised, gender, day), (keys.pinyin_tones, gender, day)})
    for case, pid, name in zip(counted["case_id"], counted["member_id_number"], counted["member_name"], strict=True):
        keys = name_keys(name)
        sex, born = "1" if int(pid[16]) % 2 else "2", f"{pid[6:10]}-{pid[10:12]}-{pid[12:14]}"
        if (keys.normalised, sex, born) in people or (keys.pinyin_tones, sex, born) in people:
            flags.add((case, "R01"))
    cars = t["gongan.vehicle_registration"].filter(
        (pl.col("status") == "normal")
        & (pl.col("use_nature") == "private")
        & pl.col("vehicle_type").is_in(["small_car", "large_car", "truck"])
    )
    flag(set(cars["owner_id_number"].drop_nulls()), "R02")
    firms = t["shichang.enterprise_registration"].filter(
        (pl.col("status") == "active")
        & (
            pl.col("entity_type").is_in(["company", "partnership"])
            | (pl.col("registered_capital_wan_cny").cast(pl.Float64) >= 10)
        )
    )
    holders = t["shichang.shareholders"].filter(pl.col("uscc").is_in(firms["uscc"].to_list()))
    flag(set(firms["legal_rep_id_number"].drop_nulls()) | set(holders["shareholder_id_number"].drop_nulls()), "R03")
    rights = t["ziranziyuan.real_estate"].filter(pl.col("status") != "cancelled")
    for case in active:
        ids = counted.filter(pl.col("case_id") == case)["member_id_number"].to_list()
        owned = rights.filter(pl.col("owner_id_number").is_in(ids))
        homes = owned.filter(pl.col("property_use") == "residential")["certificate_no"].n_unique()
        business = owned.filter(pl.col("property_use").is_in(["commercial", "office", "industrial"])).height
        if homes > 1 or business > 0:
            flags.add((case, "R04"))
    insured = t["renshe.social_insurance"].filter(pl.col("period").is_in(MONTHS))
    high = insured.filter(
        (pl.col("insurance_type") == "pension") & (pl.col("contribution_base_cny").cast(pl.Float64) >= 3000)
    )
    months = high.group_by("id_number").agg(pl.col("period").n_unique().alias("n")).filter(pl.col("n") >= 3)
    flag(set(months["id_number"]), "R05")
    flag(set(insured.filter(pl.col("is_civil_servant") == "true")["id_number"]), "R06")
    funds = t["gongjijin.provident_fund"].filter(
        pl.col("period").is_in(MONTHS)
        & (pl.col("status") == "normal")
        & (
            (pl.col("balance_cny").cast(pl.Float64) >= 50_000)
            | (pl.col("monthly_deposit_cny").cast(pl.Float64) >= 1_000)
        )
    )
    flag(set(funds["id_number"]), "R07")
    registry = t["gongan.household_registration"]
    registered = set(registry.filter(~pl.col("status").is_in(["moved_out", "cancelled"]))["id_number"])
    flag({p for p in cases_of if p not in registered}, "R08")
    for ids in cases_of.values():
        if len(ids) > 1:
            flags.update((case, "R09") for case in ids)
    return flags


def test_crosscheck_labels_match_a_reference_implementation(
    zone: tuple[Path, DemoSummary, float], labels: dict[str, list[dict[str, str]]], tables: dict[str, pl.DataFrame]
) -> None:
    cases = labels["crosscheck_cases"]
    by_rule = Counter(c["rule_code"] for c in cases if c["expected"] == "flag")
    assert all(by_rule[f"R0{i}"] >= 3 for i in range(1, 10)), by_rule
    assert sum(c["expected"] == "no_flag" for c in cases) >= 11
    assert any("WITHOUT ID" in c["description"] for c in cases)
    expected = {(c["case_id"], c["rule_code"]) for c in cases if c["expected"] == "flag"}
    near_misses = {(c["case_id"], c["rule_code"]) for c in cases if c["expected"] == "no_flag"}
    flags = _reference_crosscheck(tables, zone[1].as_of.isoformat())
    assert flags == expected
    assert not flags & near_misses


def test_people_and_enterprises_are_consistent_across_departments(
    zone: tuple[Path, DemoSummary, float], tables: dict[str, pl.DataFrame], labels: dict[str, list[dict[str, str]]]
) -> None:
    registry = set(tables["gongan.household_registration"]["id_number"])
    members = tables["minzheng.assistance_members"]
    r08 = {c["case_id"] for c in labels["crosscheck_cases"] if c["rule_code"] == "R08"}
    missing = members.filter(~pl.col("member_id_number").is_in(list(registry)))
    assert missing.height >= 1
    assert set(missing["case_id"]) <= r08
    # Party members are residents; only those whose registry row was quarantined can be missing.
    latest = tables["gongan.household_registration"]["_batch"][0]
    quarantined = sum(
        d["contract_id"] == "gongan.household_registration" and d["batch_id"] == latest and d["rule"] != "normalisable"
        for d in labels["defects"]
    )
    party = set(tables["zuzhibu.party_members"]["id_number"])
    assert len(party - registry) <= quarantined < len(party)
    reps = tables["shichang.enterprise_registration"]["legal_rep_id_number"].drop_nulls().to_list()
    assert sum(r in registry for r in reps) > len(reps) / 2  # most are residents, the rest live elsewhere
    register = batch_contracts()["shichang.enterprise_registration"]
    firms = {code for d in batch_dirs(zone[0], register) for code in read_batch(d, register)["uscc"]}
    # A registration row whose own credit code was corrupted still names its enterprise in the first
    # 17 characters (wrong check character); one with a mangled pattern cannot be traced back.
    mangled = sum(
        d["contract_id"] == register.id and d["rule"] == "pattern" and d["note"].startswith("column=uscc;")
        for d in labels["defects"]
    )
    prefixes = {code[:17] for code in firms}
    for cid in ("shichang.shareholders", "shuiwu.enterprise_tax", "fagai.investment_projects"):
        unknown = {code for code in tables[cid]["uscc"] if code[:17] not in prefixes}
        assert len(unknown) <= mangled, cid
    employers = set(tables["renshe.social_insurance"]["employer_uscc"].drop_nulls())
    assert len(employers & firms) >= 10
    assert all(uscc.is_valid(code) for code in employers)


def test_events_sit_in_real_grids(tables: dict[str, pl.DataFrame]) -> None:
    grids = tables["zhengshu.grid_registry"]
    bounds = {}
    for code, wkt in zip(grids["grid_code"], grids["polygon_wkt"], strict=True):
        xs, ys = zip(*(map(float, p.split()) for p in wkt[9:-2].split(", ")), strict=True)
        bounds[code] = (min(xs), max(xs), min(ys), max(ys))
    for cid in ("chengguan.grid_reports", "zhengshu.video_cameras", "yingji.sensor_devices"):
        frame = tables[cid].drop_nulls(["lon", "lat"])
        for code, lon, lat in zip(frame["grid_code"], frame["lon"], frame["lat"], strict=True):
            if code not in bounds:  # a planted pattern defect would have been quarantined already
                continue
            x0, x1, y0, y1 = bounds[code]
            assert x0 <= float(lon) <= x1 and y0 <= float(lat) <= y1, (cid, code)
    appeals = tables["zhengshu.hotline_appeals"].drop_nulls(["lon", "lat"])
    assert appeals.height > 0 and set(appeals["district_code"]) == {"440605"}
    for lon, lat in zip(appeals["lon"].cast(pl.Float64), appeals["lat"].cast(pl.Float64), strict=True):
        assert any(x0 <= lon <= x1 and y0 <= lat <= y1 for x0, x1, y0, y1 in bounds.values())
    assert min(b[0] for b in bounds.values()) >= 113.0 and max(b[1] for b in bounds.values()) <= 113.2


def test_hotline_labels_and_event_catalogue(
    tables: dict[str, pl.DataFrame], labels: dict[str, list[dict[str, str]]]
) -> None:
    from thematic_libs.reference import EVENT_CATALOGUE

    with open(EVENT_CATALOGUE, encoding="utf-8") as f:
        catalogue = list(csv.DictReader(f))
    assert 30 <= sum(row["major_code"] <= "06" for row in catalogue) <= 50
    codes = {row["event_code"]: row for row in catalogue}
    assert {"010101", "050102", "040201"} <= set(codes)
    truth = {row["appeal_id"]: row["event_code"] for row in labels["hotline_event_codes"]}
    appeals = tables["zhengshu.hotline_appeals"]
    assert set(appeals["appeal_id"]) <= set(truth)
    assert set(truth.values()) <= set(codes) | {""}  # "": a question or thanks, no catalogue problem
    # Hotline texts are the labelled corpus's training split, never its held-out split.
    from thematic_libs.urban.corpus import corpus_split

    training = corpus_split("train")
    train_texts = set(zip(training["event_code"], training["text"], strict=True))
    held_out = set(corpus_split("test")["text"])
    pairs = list(zip(appeals["appeal_id"], appeals["content"], strict=True))
    drawn = sum((truth[a], c) in train_texts for a, c in pairs)
    off_catalogue = sum(truth[a] == "" for a, _ in pairs)
    assert 0 < off_catalogue < 0.1 * appeals.height
    assert drawn + off_catalogue >= 0.95 * appeals.height  # the rest carry planted defects
    assert not held_out & set(appeals["content"].drop_nulls())
    assert set(tables["chengguan.grid_reports"]["event_code"]) <= set(codes)
