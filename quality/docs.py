"""Static Data Docs for data officers: an index of contracts and one page per contract.

Built from `ops/quality_results` and `ops/batch_ledger`, not from GX's own Data Docs: GX renders
only full validation-result objects kept in its own stores, and its pages load Bootstrap and jQuery
from public CDNs, which a government intranet cannot reach. These pages are self-contained HTML
(inline CSS, no scripts), so they open from a file share or a browser with no network.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from html import escape
from pathlib import Path

import polars as pl

from ingestion.contract import Contract, batch_contracts, load_contracts
from ingestion.ledger import read_ledger
from ingestion.warehouse import Warehouse
from quality.results import COMPLETENESS, latest_batches, read_results

HISTORY = 20  # batches shown per contract page
CST = timezone(timedelta(hours=8))  # times a person reads are China Standard Time

_CSS = """
body{font-family:"Noto Sans CJK SC","Microsoft YaHei",system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}
th,td{border:1px solid #ccc;padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:#f0f3f7}
.ok{color:#17692b;font-weight:600}.warn{color:#9a6700;font-weight:600}.fail{color:#b3261e;font-weight:600}
.muted{color:#777}code{font-size:.85rem;word-break:break-all}
"""


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="zh-CN"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def _table(headers: list[str], rows: list[list[str]]) -> str:
    """Cells are HTML already (escaped by the caller)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _status(ok: bool | None, text: str) -> str:
    css = "muted" if ok is None else ("ok" if ok else "fail")
    return f'<span class="{css}">{escape(text)}</span>'


def page_name(contract_id: str) -> str:
    return f"{contract_id}.html"


def _summary(results: pl.DataFrame, ledger: pl.DataFrame) -> pl.DataFrame:
    """Per contract: latest validated batch, expectations evaluated and failed, ledger status of it."""
    latest = results.join(latest_batches(results), on=["contract_id", "batch_id"], how="semi")
    summary = latest.group_by("contract_id", "batch_id").agg(
        pl.len().alias("evaluated"), (~pl.col("success")).sum().alias("failed"), pl.col("run_at").max()
    )
    status = ledger.select("contract_id", "batch_id", "status", "reason")
    return summary.join(status, on=["contract_id", "batch_id"], how="left")


def _index(contracts: list[Contract], summary: pl.DataFrame, built: str) -> str:
    by_id = {r["contract_id"]: r for r in summary.iter_rows(named=True)}
    rows = []
    for c in contracts:
        s = by_id.get(c.id)
        link = f'<a href="{escape(page_name(c.id))}">{escape(c.id)}</a>'
        if s is None:
            rows.append([link, escape(c.department_label), escape(c.name), "", _status(None, "no results"), ""])
            continue
        passed = s["failed"] == 0
        verdict = f"{s['evaluated'] - s['failed']}/{s['evaluated']} passed"
        rows.append(
            [
                link,
                escape(c.department_label),
                escape(c.name),
                escape(s["batch_id"]),
                _status(passed, verdict),
                escape(s["status"] or ""),
            ]
        )
    headers = ["Contract", "Department", "Dataset", "Latest batch", "Expectations", "Ledger status"]
    body = (
        "<h1>Data quality · 数据质量</h1>"
        f'<p class="muted">Built {escape(built)} from ops/quality_results and ops/batch_ledger.</p>'
        + _table(headers, rows)
    )
    return _page("Data quality", body)


def _observed_cell(observed: str) -> str:
    try:
        data = json.loads(observed)
    except ValueError:
        return f"<code>{escape(observed)}</code>"
    sample = data.get("partial_unexpected_list")
    counted = data.get("unexpected_counts")
    parts = []
    if isinstance(counted, list) and counted:
        parts.append(_counted(counted, "rows"))
    elif isinstance(sample, list) and sample:
        parts.append(_counted(_sample_counts(sample), f"of the first {len(sample)} unexpected rows"))
    elif isinstance(sample, str):
        parts.append(escape(sample))
    if data.get("exception"):
        parts.append("error: " + escape(str(data["exception"])))
    return "<br>".join(parts)


def _value(value: object) -> str:
    return escape(json.dumps(value, ensure_ascii=False, default=str))


def _counted(counts: list[dict], unit: str) -> str:
    """Distinct unexpected values with how many rows hold each: `"N/A" ×12, "一百二" ×3`."""
    shown = ", ".join(f"{_value(c.get('value'))} ×{c.get('count')}" for c in counts[:10])
    more = f" (+{len(counts) - 10} more)" if len(counts) > 10 else ""
    return f'<span title="distinct values, with the number of {escape(unit)} holding each">{shown}{more}</span>'


def _sample_counts(sample: list) -> list[dict]:
    """Results stored before value counts were kept: the sample's distinct values, counted within the sample."""
    counts: dict[str, dict] = {}
    for value in sample:
        key = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
        counts.setdefault(key, {"value": value, "count": 0})["count"] += 1
    return sorted(counts.values(), key=lambda c: -c["count"])


def _result_rows(batch: pl.DataFrame) -> list[list[str]]:
    rows = []
    for r in batch.iter_rows(named=True):
        informational = r["rule"] == COMPLETENESS
        label = "info" if informational else ("passed" if r["success"] else "FAILED")
        count = "" if r["unexpected_count"] is None else f"{r['unexpected_count']} / {r['element_count']}"
        rows.append(
            [
                escape(r["column"] or ""),
                escape(r["rule"]),
                f"<code>{escape(r['expectation'])}</code>",
                _status(None if informational else r["success"], label),
                escape(count),
                _observed_cell(r["observed"]),
                f"<code>{escape(r['contract_rule'] or '')}</code>",
            ]
        )
    return rows


def _history(results: pl.DataFrame, ledger: pl.DataFrame) -> str:
    batches = (
        results.group_by("batch_id")
        .agg(pl.col("batch_ordinal").max(), pl.len().alias("n"), (~pl.col("success")).sum().alias("failed"))
        .join(
            ledger.select("batch_id", "status", "rows_delivered", "rows_quarantined"),
            on="batch_id",
            how="left",
        )
        .sort("batch_ordinal", descending=True)
        .head(HISTORY)
    )
    rows = [
        [
            escape(r["batch_id"]),
            _status(r["failed"] == 0, f"{r['n'] - r['failed']}/{r['n']} passed"),
            escape(r["status"] or ""),
            escape(str(r["rows_delivered"] or "")),
            escape(str(r["rows_quarantined"] or "")),
        ]
        for r in batches.iter_rows(named=True)
    ]
    return _table(["Batch", "Expectations", "Ledger status", "Rows delivered", "Rows quarantined"], rows)


def _contract_page(contract: Contract, results: pl.DataFrame, ledger: pl.DataFrame) -> str:
    header = (
        f'<p><a href="index.html">← all contracts</a></p><h1>{escape(contract.id)}</h1>'
        f"<p>{escape(contract.name)} · {escape(contract.department_label)}"
        f" · version {escape(contract.version)} · cadence: {escape(contract.cadence)}</p>"
        f"<p>{escape(contract.purpose)}</p>"
    )
    if results.height == 0:
        return _page(contract.id, header + "<p class='muted'>No batch of this contract was validated yet.</p>")
    latest_id = latest_batches(results)["batch_id"][0]
    latest = results.filter(pl.col("batch_id") == latest_id)
    ledger_row = ledger.filter(pl.col("batch_id") == latest_id)
    reason = ledger_row["reason"][0] if ledger_row.height and ledger_row["reason"][0] else ""
    headers = [
        "Column",
        "Rule",
        "Expectation",
        "Result",
        "Unexpected / rows",
        "Unexpected values (distinct × rows)",
        "Contract rule",
    ]
    body = (
        header
        + f"<h2>Latest batch {escape(latest_id)}</h2>"
        + (f"<p class='warn'>{escape(reason)}</p>" if reason else "")
        + _table(headers, _result_rows(latest))
        + "<h2>Recent batches</h2>"
        + _history(results, ledger)
    )
    return _page(contract.id, body)


def build_data_docs(warehouse: Warehouse, out_dir: str | Path) -> Path:
    """Write index.html plus one page per batch contract (and any other contract with results)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = read_results(warehouse)
    ledger = read_ledger(warehouse)
    known = load_contracts()
    ids = sorted(set(batch_contracts()) | (set(results["contract_id"].unique()) & set(known)))
    contracts = [known[i] for i in ids]
    for contract in contracts:
        mine = results.filter(pl.col("contract_id") == contract.id)
        theirs = ledger.filter(pl.col("contract_id") == contract.id)
        (out / page_name(contract.id)).write_text(_contract_page(contract, mine, theirs), encoding="utf-8")
    built = datetime.now(UTC).astimezone(CST).strftime("%Y-%m-%d %H:%M CST")
    index = out / "index.html"
    index.write_text(_index(contracts, _summary(results, ledger), built), encoding="utf-8")
    return index
