"""Data-share orders (共享订单): a state machine whose every change is a durable audit row.

    requested ──approve──> approved ──deliver──> active ──revoke──> revoked
        │                     │                    └──(until passed)──> expired
        └──reject──> rejected └──revoke──> revoked

`ops/share_audit` is the only record: one row per change (order, sequence number, event, the state
after it, who, when, why, and the whole order as JSON). The current state of an order is its row with
the highest sequence number. Each change is committed with a Delta application transaction
`share-order:<order_id>` whose version is the new sequence number, on the snapshot the change was
decided on: two approvals racing on one order, or an approval racing a revoke, cannot both land (the
second commit fails, is re-read and re-decided against the state the first one left). Works the same on
a local folder and on an object store, without a lock server.

Who may do what: the owning department approves and rejects; the owner, the ordering department or
the data officer (`data_officer`) revoke. An unconditional dataset approves itself unless the order asks
for a sensitive column; `none` cannot be ordered; a sensitive column must be named in the order and is
delivered as its keyed pseudonym (`<column>_key`) unless the order records a legal basis.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime

import polars as pl
import pyarrow as pa
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError

from ingestion.delta_append import append_transactions
from ingestion.keys import CST
from ingestion.warehouse import Warehouse
from thematic_libs.sharing.datasets import Dataset, DatasetError, get_dataset
from thematic_libs.sharing.filters import FilterError, parse_filter

AUDIT = "ops/share_audit"
DATA_OFFICER = "data_officer"
SYSTEM = "system"
STATES = ("requested", "approved", "rejected", "active", "revoked", "expired")
OPEN_STATES = ("requested", "approved", "active")
DEPARTMENT_PATTERN = re.compile(r"^[a-z][a-z0-9_]{1,39}$")
ORDER_ID_PATTERN = re.compile(r"^SO-\d{8}-[0-9a-f]{8}$")
MAX_TEXT = 500
_RETRIES = 8

AUDIT_SCHEMA = pa.schema(
    [
        pa.field("order_id", pa.string(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("event", pa.string(), nullable=False),
        pa.field("state", pa.string(), nullable=False),
        pa.field("actor", pa.string(), nullable=False),
        pa.field("at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("dataset_id", pa.string(), nullable=False),
        pa.field("department", pa.string(), nullable=False),
        pa.field("owner_department", pa.string(), nullable=False),
        pa.field("order_json", pa.string(), nullable=False),
    ]
)

# (event, states it may leave, state it enters)
TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "approve": (("requested",), "approved"),
    "reject": (("requested",), "rejected"),
    "activate": (("approved", "active"), "active"),
    "revoke": (OPEN_STATES, "revoked"),
    "expire": (OPEN_STATES, "expired"),
}


class OrderError(ValueError):
    """An order or a change that the rules refuse; the message says which rule and what to do."""


@dataclass(frozen=True)
class Order:
    order_id: str
    dataset_id: str
    department: str
    owner_department: str
    columns: tuple[str, ...]
    purpose: str
    row_filter: str | None = None
    until: date | None = None
    legal_basis: str | None = None
    requested_at: datetime | None = None
    requested_by: str = ""
    # the current state, from the latest audit row
    state: str = "requested"
    seq: int = 0
    updated_at: datetime | None = None
    updated_by: str = ""
    reason: str = ""
    delivery_version: int | None = None
    sensitive_columns: tuple[str, ...] = field(default_factory=tuple)

    @property
    def raw_columns(self) -> tuple[str, ...]:
        """Sensitive columns delivered as they are (only with a legal basis)."""
        return self.sensitive_columns if self.legal_basis else ()

    def is_expired(self, today: date | None = None) -> bool:
        return self.until is not None and self.until < (today or datetime.now(CST).date())

    def effective_state(self, today: date | None = None) -> str:
        """The state a reader must act on: an open order past its `until` is expired at once."""
        return "expired" if self.state in OPEN_STATES and self.is_expired(today) else self.state

    def to_json(self) -> str:
        body = asdict(self)
        for name in ("state", "seq", "updated_at", "updated_by", "reason"):
            body.pop(name)
        body["until"] = self.until.isoformat() if self.until else None
        body["requested_at"] = self.requested_at.isoformat() if self.requested_at else None
        return json.dumps(body, ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_audit_row(cls, row: dict) -> Order:
        body = json.loads(row["order_json"])
        return cls(
            order_id=body["order_id"],
            dataset_id=body["dataset_id"],
            department=body["department"],
            owner_department=body["owner_department"],
            columns=tuple(body["columns"]),
            purpose=body["purpose"],
            row_filter=body.get("row_filter"),
            until=date.fromisoformat(body["until"]) if body.get("until") else None,
            legal_basis=body.get("legal_basis"),
            requested_at=datetime.fromisoformat(body["requested_at"]) if body.get("requested_at") else None,
            requested_by=body.get("requested_by", ""),
            delivery_version=body.get("delivery_version"),
            sensitive_columns=tuple(body.get("sensitive_columns") or ()),
            state=row["state"],
            seq=row["seq"],
            updated_at=row["at"],
            updated_by=row["actor"],
            reason=row["reason"],
        )


# --- reading ------------------------------------------------------------------------------------


def read_audit(warehouse: Warehouse, table: DeltaTable | None = None) -> pl.DataFrame:
    """Every audit row (empty frame with the schema when no order exists yet)."""
    if table is None:
        if not warehouse.exists(AUDIT):
            return pl.from_arrow(AUDIT_SCHEMA.empty_table())  # type: ignore[return-value]
        table = warehouse.table(AUDIT)
    return pl.from_arrow(table.to_pyarrow_table())  # type: ignore[return-value]


def current_orders(audit: pl.DataFrame) -> dict[str, Order]:
    """The latest state of every order, by id."""
    if audit.is_empty():
        return {}
    latest = audit.sort("seq").group_by("order_id", maintain_order=True).last()
    return {row["order_id"]: Order.from_audit_row(row) for row in latest.iter_rows(named=True)}


def list_orders(warehouse: Warehouse) -> list[Order]:
    return sorted(current_orders(read_audit(warehouse)).values(), key=lambda o: o.requested_at or datetime.min)


def get_order(warehouse: Warehouse, order_id: str) -> Order:
    check_order_id(order_id)
    order = current_orders(read_audit(warehouse)).get(order_id)
    if order is None:
        raise OrderError(f"no share order {order_id}: `yiwang share list` shows the orders")
    return order


def check_order_id(order_id: str) -> None:
    if not ORDER_ID_PATTERN.match(order_id or ""):
        raise OrderError(f"{order_id!r} is not a share order id (SO-YYYYMMDD-xxxxxxxx)")


def check_department(department: str, what: str = "department") -> str:
    if not DEPARTMENT_PATTERN.match(department or ""):
        raise OrderError(
            f"{what} {department!r} is not a department code (lower-case letters, digits and _, e.g. minzheng)"
        )
    return department


# --- writing ------------------------------------------------------------------------------------


def _audit_row(order: Order, event: str, actor: str, reason: str, at: datetime) -> dict:
    return {
        "order_id": order.order_id,
        "seq": order.seq,
        "event": event,
        "state": order.state,
        "actor": actor,
        "at": at,
        "reason": reason,
        "dataset_id": order.dataset_id,
        "department": order.department,
        "owner_department": order.owner_department,
        "order_json": order.to_json(),
    }


def _commit(warehouse: Warehouse, rows: list[dict], table: DeltaTable | None, transactions: dict[str, int]) -> None:
    append_transactions(
        warehouse.uri(AUDIT),
        pa.Table.from_pylist(rows, schema=AUDIT_SCHEMA),
        AUDIT_SCHEMA,
        transactions=transactions,
        table=table,
        storage_options=warehouse.options(),
    )


def _text(value: str | None, what: str, required: bool) -> str | None:
    value = (value or "").strip()
    if required and not value:
        raise OrderError(f"{what} is required: say it in a sentence (it is kept in the audit)")
    if len(value) > MAX_TEXT:
        raise OrderError(f"{what} is longer than {MAX_TEXT} characters")
    return value or None


def _granted_columns(dataset: Dataset, columns: Sequence[str]) -> tuple[str, ...]:
    if not dataset.columns:
        raise OrderError(f"{dataset.dataset_id} has not been built yet ({dataset.table}): run `yiwang run` first")
    wanted = [c.strip() for c in columns if c.strip()]
    if wanted == ["all"]:
        return tuple(c.name for c in dataset.columns if not c.is_sensitive)
    if not wanted:
        raise OrderError("--columns is required: name the columns (comma-separated) or `all` (no sensitive ones)")
    try:
        granted = tuple(dict.fromkeys(dataset.column(name).name for name in wanted))
    except DatasetError as error:
        raise OrderError(str(error)) from None
    return granted


def _check_filter(dataset: Dataset, text: str | None) -> str | None:
    if text is None or not text.strip():
        return None
    filterable = [c for c in dataset.columns if not c.is_sensitive and c.arrow_type is not None]
    try:
        parsed = parse_filter(text, [c.name for c in filterable])
        # Typed against an empty frame: a value that does not fit its column is refused now, not at delivery.
        schema = pa.schema([pa.field(c.name, c.arrow_type) for c in filterable if c.name in parsed.columns])
        pl.DataFrame(pl.from_arrow(schema.empty_table())).filter(parsed.expression)
    except FilterError as error:
        raise OrderError(str(error)) from None
    except (pl.exceptions.PolarsError, ValueError, TypeError) as error:
        raise OrderError(f"filter: a value does not fit its column's type ({str(error).splitlines()[0]})") from None
    return parsed.text


def request_order(
    warehouse: Warehouse,
    *,
    dataset_id: str,
    department: str,
    columns: Sequence[str],
    purpose: str,
    row_filter: str | None = None,
    until: date | None = None,
    legal_basis: str | None = None,
    requested_by: str | None = None,
    now: datetime | None = None,
) -> Order:
    """Record a new order (and approve it at once where the dataset is unconditional and nothing sensitive
    is asked for). Returns the order in its state after that."""
    now = now or datetime.now(UTC)
    check_department(department)
    try:
        dataset = get_dataset(dataset_id, warehouse)
    except DatasetError as error:
        raise OrderError(str(error)) from None
    if dataset.sharing_type == "none" or dataset.restricted:
        raise OrderError(
            f"{dataset_id} cannot be ordered: its sharing type is `none`"
            + (" (a restricted area: only its aggregates are shared)" if dataset.restricted else "")
        )
    granted = _granted_columns(dataset, columns)
    sensitive = tuple(c for c in granted if dataset.column(c).is_sensitive)
    if until is not None and until < now.astimezone(CST).date():
        raise OrderError(f"--until {until.isoformat()} is in the past: give a date from today on")
    legal = _text(legal_basis, "--legal-basis", required=False)
    if legal and not sensitive:
        raise OrderError("--legal-basis is only for raw values of sensitive columns; this order asks for none")
    order = Order(
        order_id=f"SO-{now.astimezone(CST):%Y%m%d}-{secrets.token_hex(4)}",
        dataset_id=dataset.dataset_id,
        department=department,
        owner_department=dataset.owner_department,
        columns=granted,
        purpose=_text(purpose, "--purpose", required=True) or "",
        row_filter=_check_filter(dataset, row_filter),
        until=until,
        legal_basis=legal,
        requested_at=now,
        requested_by=requested_by or department,
        sensitive_columns=sensitive,
    )
    for _ in range(_RETRIES):
        table = warehouse.table(AUDIT) if warehouse.exists(AUDIT) else None
        audit = read_audit(warehouse, table)
        same = [
            o
            for o in current_orders(audit).values()
            if o.department == department and o.dataset_id == dataset.dataset_id and o.effective_state() in OPEN_STATES
        ]
        if same:
            raise OrderError(
                f"{department} already has order {same[0].order_id} ({same[0].state}) for {dataset.dataset_id}: "
                "revoke it first or wait for its decision"
            )
        # One app id per (department, dataset): two racing requests for the same pair cannot both land.
        pair = f"share-request:{department}:{dataset.dataset_id}"
        count = audit.filter((pl.col("department") == department) & (pl.col("dataset_id") == dataset.dataset_id))
        rows = [_audit_row(order, "request", order.requested_by, order.purpose, now)]
        automatic = dataset.sharing_type == "unconditional" and not sensitive
        if automatic:
            order = replace(order, state="approved", seq=1)
            rows.append(_audit_row(order, "approve", SYSTEM, "unconditional dataset: approved on request", now))
        try:
            _commit(
                warehouse,
                rows,
                table,
                {f"share-order:{order.order_id}": order.seq, pair: count["order_id"].n_unique() + 1},
            )
        except CommitFailedError:
            order = replace(order, state="requested", seq=0)
            continue
        return replace(order, updated_at=now, updated_by=rows[-1]["actor"], reason=rows[-1]["reason"])
    raise OrderError("the audit table is too busy: try again")


def _may(event: str, order: Order, actor: str) -> None:
    if actor == SYSTEM and event in ("activate", "expire"):
        return
    if event in ("approve", "reject") and actor != order.owner_department:
        raise OrderError(
            f"only the owning department ({order.owner_department}) may {event} {order.order_id}; {actor} may not"
        )
    if event == "revoke" and actor not in (order.owner_department, order.department, DATA_OFFICER):
        raise OrderError(
            f"{order.order_id} may be revoked by {order.owner_department}, {order.department} or {DATA_OFFICER}, "
            f"not by {actor}"
        )
    if event in ("activate", "expire") and actor != SYSTEM:
        raise OrderError(f"`{event}` is done by the platform, not by {actor}")


def change_order(
    warehouse: Warehouse,
    order_id: str,
    event: str,
    actor: str,
    reason: str = "",
    *,
    delivery_version: int | None = None,
    now: datetime | None = None,
) -> Order:
    """Apply one event (approve, reject, activate, revoke, expire) to an order, exactly once.

    Decided on a snapshot and committed with the order's application transaction; a concurrent change
    makes the commit fail, and the event is decided again on the new state (where it usually no longer
    applies, and the caller is told what happened first).
    """
    if event not in TRANSITIONS:
        raise OrderError(f"unknown event {event!r}: one of {', '.join(TRANSITIONS)}")
    check_order_id(order_id)
    if actor != SYSTEM:
        check_department(actor, "--by")
    needs_reason = event in ("reject", "revoke")
    why = _text(reason, "--reason", required=needs_reason) or ""
    for _ in range(_RETRIES):
        moment = now or datetime.now(UTC)
        if not warehouse.exists(AUDIT):
            raise OrderError(f"no share order {order_id}: no order has been requested yet")
        table = warehouse.table(AUDIT)
        order = current_orders(read_audit(warehouse, table)).get(order_id)
        if order is None:
            raise OrderError(f"no share order {order_id}: `yiwang share list` shows the orders")
        _may(event, order, actor)
        leaves, enters = TRANSITIONS[event]
        if event == "approve" and order.effective_state() == "expired":
            raise OrderError(f"{order_id} expired on {order.until}: it cannot be approved; request a new one")
        if order.state not in leaves:
            raise OrderError(
                f"{order_id} is {order.state} (since {_cst(order.updated_at)}, by {order.updated_by}): "
                f"it cannot be {_past(event)}"
            )
        changed = replace(
            order,
            state=enters,
            seq=order.seq + 1,
            delivery_version=delivery_version if delivery_version is not None else order.delivery_version,
        )
        row = _audit_row(changed, event, actor, why or _default_reason(event), moment)
        try:
            _commit(warehouse, [row], table, {f"share-order:{order_id}": changed.seq})
        except CommitFailedError:
            continue
        return replace(changed, updated_at=moment, updated_by=actor, reason=row["reason"])
    raise OrderError(f"{order_id} is being changed by others: try again")


def expire_due(warehouse: Warehouse, today: date | None = None) -> list[Order]:
    """Write the `expired` row of every open order whose `until` has passed (the server stops serving them
    at once regardless; this records it)."""
    expired = []
    for order in list_orders(warehouse):
        if order.state in OPEN_STATES and order.is_expired(today):
            try:
                expired.append(change_order(warehouse, order.order_id, "expire", SYSTEM, f"until {order.until}"))
            except OrderError:
                continue  # changed meanwhile (revoked, say): nothing to expire
    return expired


def _default_reason(event: str) -> str:
    return {"approve": "approved", "activate": "delivery built", "expire": "until date passed"}.get(event, event)


def _past(event: str) -> str:
    return {"approve": "approved", "reject": "rejected", "activate": "activated", "revoke": "revoked"}.get(
        event, f"{event}d"
    )


def _cst(moment: datetime | None) -> str:
    return moment.astimezone(CST).strftime("%Y-%m-%d %H:%M:%S+08:00") if moment else "?"
