"""`generate_landing_zone`: the demo landing zone, every batch contract, with its answer key.

The world is built once (`world.build_world`); then each contract's batches are made, given their
planted defects, written and dropped one at a time, so memory holds one batch, not the whole zone
(scale 250 = five million residents fits in a few GB).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from tqdm import tqdm

from demo_data import business_tables, people_tables, place_tables
from demo_data.common import Batch
from demo_data.defects import apply_defects
from demo_data.frames import VIDEO_FRAMES, write_frame_batch
from demo_data.labels import write_labels
from demo_data.timeline import AS_OF
from demo_data.world import World, build_world
from demo_data.writer import record_keys, write_batch
from ingestion.contract import batch_contracts

BUILDERS: dict[str, Callable[[World], Iterator[Batch]]] = {
    "gongan.household_registration": people_tables.household_registration,
    "gongan.vehicle_registration": people_tables.vehicle_registration,
    "minzheng.assistance_cases": people_tables.assistance_cases,
    "minzheng.assistance_members": people_tables.assistance_members,
    "minzheng.cremation_records": people_tables.cremation_records,
    "weijian.death_certificates": people_tables.death_certificates,
    "ziranziyuan.real_estate": people_tables.real_estate,
    "renshe.social_insurance": people_tables.social_insurance,
    "gongjijin.provident_fund": people_tables.provident_fund,
    "zuzhibu.party_organizations": people_tables.party_organizations,
    "zuzhibu.party_members": people_tables.party_members,
    "zuzhibu.household_links": people_tables.household_links,
    "shichang.enterprise_registration": business_tables.enterprise_registration,
    "shichang.shareholders": business_tables.shareholders,
    "shuiwu.enterprise_tax": business_tables.enterprise_tax,
    "shengtai.environment_penalties": business_tables.environment_penalties,
    "xiaofang.fire_inspections": business_tables.fire_inspections,
    "fagai.investment_projects": business_tables.investment_projects,
    "zhengshu.enterprise_appeals": business_tables.enterprise_appeals,
    "zhengshu.grid_registry": place_tables.grid_registry,
    "zhengshu.video_cameras": place_tables.video_cameras,
    "yingji.sensor_devices": place_tables.sensor_devices,
    "yingji.emergency_resources": place_tables.emergency_resources,
    "chengguan.grid_reports": place_tables.grid_reports,
    "zhengshu.hotline_appeals": place_tables.hotline_appeals,
    "zhihui.ticket_outcomes": place_tables.ticket_outcomes,
    "qixiang.rainfall_forecast": place_tables.rainfall_forecast,
}


@dataclass
class DemoSummary:
    """What `generate_landing_zone` wrote."""

    out: Path
    seed: int
    scale: float
    residents: int
    enterprises: int
    batches: int
    rows: int
    contracts: list[str]
    as_of: date
    defects: int  # planted row defects in batches that should load
    normalisable: int  # messy-but-valid IDs
    bad_batches: list[str] = field(default_factory=list)  # "<contract_id>/<batch_id>"
    crosscheck_cases: int = 0
    seconds: float = 0.0
    event_multiplier: float = 1.0
    grid_reports: int = 0  # generated before defects and batching
    hotline_appeals: int = 0
    enterprise_appeals: int = 0
    ticket_outcome_events: int = 0
    video_frames: int = 0  # frames of the demo frame batch (zhengshu.video_frames, not counted in `batches`)
    video_frames_corrupt: int = 0


def generate_landing_zone(
    out: Path,
    scale: float = 1.0,
    seed: int = 0,
    defect_rate: float = 0.02,
    progress: bool = True,
    event_multiplier: float = 1.0,
) -> DemoSummary:
    """Write a landing zone with every batch contract under `out`, plus `out/_labels/`.

    `residents = round(20_000 * scale)`; the same seed and scale give byte-identical files. A share
    `defect_rate` of rows carries planted defects (see `defects`), and five whole batches are bad.
    `event_multiplier` scales the daily rates of grid reports, hotline appeals and enterprise appeals
    (and so the tickets and their outcomes) without growing the population: the demo makes about 0.15
    reports and appeals per resident, a benchmark of the dispatch table wants more. 1 changes nothing.
    """
    started = time.perf_counter()
    out = Path(out)
    contracts = batch_contracts()
    missing = set(contracts) - set(BUILDERS)
    if missing:
        raise RuntimeError(f"no demo builder for contracts {sorted(missing)}")
    bar = tqdm(total=len(BUILDERS) + 3, desc="demo landing zone", unit="step", disable=not progress)
    bar.set_postfix_str("building the district")
    world = build_world(seed, scale, event_multiplier)
    bar.update(1)
    defects: list[tuple[str, str, str, str, str]] = []
    bad: list[tuple[str, str, str, str]] = []
    n_batches = rows = n_defects = n_messy = 0
    for contract_id in sorted(BUILDERS):
        bar.set_postfix_str(contract_id)
        for index, batch in enumerate(BUILDERS[contract_id](world)):
            fault = apply_defects(batch, seed, defect_rate, index)
            written = write_batch(out, batch)
            n_batches += 1
            rows += written.rows
            if fault is not None:
                bad.append((contract_id, batch.batch_id, fault.expected_status, fault.reason_kind))
                continue
            labels = sorted(batch.labels, key=lambda lb: lb.row)
            keys = record_keys(batch, [lb.row for lb in labels])
            for label, key in zip(labels, keys, strict=True):
                defects.append((contract_id, batch.batch_id, key, label.rule, label.note))
                if label.rule == "normalisable":
                    n_messy += 1
                else:
                    n_defects += 1
        bar.update(1)
    bar.set_postfix_str(VIDEO_FRAMES)
    flawed_cameras = {
        key for cid, _, key, rule, _ in defects if cid == "zhengshu.video_cameras" and rule != "normalisable"
    }
    frames = write_frame_batch(out, world, flawed_cameras)
    bar.update(1)
    bar.set_postfix_str("labels")
    write_labels(out, defects, bad, world.planted, world.cases.case_id.tolist(), world.hotline)
    bar.update(1)
    bar.close()
    return DemoSummary(
        out=out,
        seed=seed,
        scale=scale,
        residents=world.residents,
        enterprises=world.ent.size,
        batches=n_batches,
        rows=rows,
        contracts=sorted(BUILDERS),
        as_of=AS_OF,
        defects=n_defects,
        normalisable=n_messy,
        bad_batches=[f"{c}/{b}" for c, b, _, _ in bad],
        crosscheck_cases=len(world.planted),
        seconds=round(time.perf_counter() - started, 2),
        event_multiplier=event_multiplier,
        grid_reports=len(world.reports.minute),
        hotline_appeals=len(world.hotline.minute),
        enterprise_appeals=len(world.appeals.minute),
        ticket_outcome_events=len(world.tickets.ticket_id),
        video_frames=frames.frames,
        video_frames_corrupt=frames.corrupt,
    )
