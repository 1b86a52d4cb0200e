"""The demo world: one district's people, enterprises, holdings and events, made once per seed and scale.

Everything the contract builders need is built here in dependency order: geography, population,
the assistance households (chosen first so that every later generator can keep them clean), the
enterprise register, what people hold, party membership, then the planted cross-check cases, and
finally the field events. Only the seed and the scale decide what comes out (and, for benchmarks, an
events multiplier that scales the grid-report, hotline and enterprise-appeal rates alone).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from demo_data.assistance import (
    Cases,
    assign_case_ids,
    build_background_cases,
    choose_households,
    reserved_persons,
)
from demo_data.crosscheck import PLANTED_HOUSEHOLDS, PlantedCase, Planter, plant, used_persons
from demo_data.enterprises import Enterprises, build_enterprises
from demo_data.events import (
    CatalogueItem,
    EnterpriseAppeals,
    TextEvents,
    TicketEvents,
    build_enterprise_appeals,
    build_grid_reports,
    build_hotline,
    build_ticket_outcomes,
    derived_tickets,
    load_catalogue,
)
from demo_data.geography import Geography, build_geography
from demo_data.holdings import Holdings, build_holdings
from demo_data.party import Party, build_party
from demo_data.population import Population, build_population
from ingestion.contract import Contract, batch_contracts


@dataclass
class World:
    seed: int
    scale: float
    residents: int
    event_multiplier: float
    contracts: dict[str, Contract]
    geo: Geography
    pop: Population
    ent: Enterprises
    cases: Cases
    holdings: Holdings
    party: Party
    reserved: np.ndarray
    planted: list[PlantedCase]
    catalogue: list[CatalogueItem]
    reports: TextEvents
    hotline: TextEvents
    appeals: EnterpriseAppeals
    tickets: TicketEvents


RESIDENTS_PER_SCALE = 20_000
MIN_RESIDENTS = 500  # fewer leave some streets or grids without anyone
MIN_SCALE = MIN_RESIDENTS / RESIDENTS_PER_SCALE


def residents_for(scale: float) -> int:
    return round(RESIDENTS_PER_SCALE * scale)


def build_world(seed: int, scale: float, event_multiplier: float = 1.0) -> World:
    """The district for `seed` and `scale`; `event_multiplier` multiplies the daily rates of grid reports,
    hotline appeals and enterprise appeals (ticket outcomes follow), nothing else: 1 is the ordinary demo.
    """
    residents = residents_for(scale)
    if residents < MIN_RESIDENTS:
        raise ValueError(f"scale too small: the demo needs at least {MIN_RESIDENTS} residents (scale {MIN_SCALE:g})")
    if not event_multiplier > 0:
        raise ValueError(f"event_multiplier must be positive, got {event_multiplier}")
    geo = build_geography(seed, residents, scale)
    pop = build_population(seed, residents, geo)
    background, pool = choose_households(seed, pop, PLANTED_HOUSEHOLDS)
    reserved = reserved_persons(pop, np.r_[background, pool])
    cases = build_background_cases(seed, pop, background)
    ent = build_enterprises(seed, residents, pop, geo, reserved)
    holdings = build_holdings(seed, pop, ent, geo, reserved, background, cases.m_person)
    party = build_party(seed, pop, geo, holdings.insurance, reserved)
    planter = Planter(
        seed=seed,
        pop=pop,
        geo=geo,
        ent=ent,
        holdings=holdings,
        cases=cases,
        pool=pool,
        used_persons=used_persons(pop, ent, holdings, party) | reserved,
    )
    planted = plant(planter)
    for records in (
        holdings.vehicles,
        holdings.estates,
        holdings.insurance,
        holdings.funds,
        holdings.cremations,
        holdings.certificates,
    ):
        records.freeze()
    assign_case_ids(seed, cases)
    catalogue = load_catalogue()
    reports = build_grid_reports(seed, residents, geo, catalogue, event_multiplier)
    hotline = build_hotline(seed, residents, geo, catalogue, event_multiplier)
    tickets = build_ticket_outcomes(seed, *derived_tickets(reports, hotline, geo))
    return World(
        seed=seed,
        scale=scale,
        residents=residents,
        event_multiplier=event_multiplier,
        contracts=batch_contracts(),
        geo=geo,
        pop=pop,
        ent=ent,
        cases=cases,
        holdings=holdings,
        party=party,
        reserved=reserved,
        planted=planted,
        catalogue=catalogue,
        reports=reports,
        hotline=hotline,
        appeals=build_enterprise_appeals(seed, ent, event_multiplier),
        tickets=tickets,
    )
