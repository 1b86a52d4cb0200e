"""Bearer tokens of the Delta Sharing server: one or more per department, stored hashed.

A token is `ysh_<token_id>_<secret>`; `ops/share_tokens` keeps the id, the department, the SHA-256 of
the secret, when it was issued, when it expires and when it was revoked. The secret itself exists only
in the profile file handed to the department (32 random bytes: a fast hash is enough, there is nothing
to brute-force). Rotating issues a new token and revokes the department's earlier ones; revoking
stops a token at once (the server re-reads the table whenever its Delta version moves).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
from deltalake import write_deltalake

from ingestion.warehouse import Warehouse
from thematic_libs.sharing.orders import check_department

TOKENS = "ops/share_tokens"
DEFAULT_TOKEN_DAYS = 90
TOKEN_PATTERN = re.compile(r"^ysh_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
TOKEN_SCHEMA = pa.schema(
    [
        pa.field("token_id", pa.string(), nullable=False),
        pa.field("department", pa.string(), nullable=False),
        pa.field("token_sha256", pa.string(), nullable=False),
        pa.field("issued_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("expires_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("revoked_at", pa.timestamp("us", tz="UTC"), nullable=True),
        pa.field("issued_by", pa.string(), nullable=False),
    ]
)


class TokenError(ValueError):
    """A token that is missing, malformed, unknown, expired or revoked (the message says which)."""


@dataclass(frozen=True)
class IssuedToken:
    token_id: str
    department: str
    token: str  # shown once, never stored
    expires_at: datetime


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def read_tokens(warehouse: Warehouse) -> pl.DataFrame:
    if not warehouse.exists(TOKENS):
        return pl.DataFrame(pl.from_arrow(TOKEN_SCHEMA.empty_table()))
    return pl.DataFrame(pl.from_arrow(warehouse.table(TOKENS).to_pyarrow_table()))


def issue_token(
    warehouse: Warehouse,
    department: str,
    *,
    days: int = DEFAULT_TOKEN_DAYS,
    rotate: bool = False,
    issued_by: str = "data_officer",
    now: datetime | None = None,
) -> IssuedToken:
    """A new token for `department`; with `rotate`, every earlier token of the department is revoked in the
    same commit."""
    check_department(department)
    if not 1 <= days <= 3660:
        raise TokenError(f"--days {days} is out of range: give 1 to 3660")
    now = now or datetime.now(UTC)
    token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    issued = IssuedToken(token_id, department, f"ysh_{token_id}_{secret}", now + timedelta(days=days))
    row = {
        "token_id": token_id,
        "department": department,
        "token_sha256": _digest(secret),
        "issued_at": now,
        "expires_at": issued.expires_at,
        "revoked_at": None,
        "issued_by": issued_by,
    }
    tokens = read_tokens(warehouse)
    if rotate:
        tokens = tokens.with_columns(
            pl.when((pl.col("department") == department) & pl.col("revoked_at").is_null())
            .then(pl.lit(now).cast(pl.Datetime("us", "UTC")))
            .otherwise(pl.col("revoked_at"))
            .alias("revoked_at")
        )
    table = pl.concat([tokens, pl.DataFrame(pl.from_arrow(pa.Table.from_pylist([row], schema=TOKEN_SCHEMA)))])
    _write(warehouse, table)
    return issued


def revoke_tokens(
    warehouse: Warehouse, department: str, token_id: str | None = None, now: datetime | None = None
) -> int:
    """Revoke one token of the department, or all of them; returns how many were revoked."""
    check_department(department)
    now = now or datetime.now(UTC)
    tokens = read_tokens(warehouse)
    target = (pl.col("department") == department) & pl.col("revoked_at").is_null()
    if token_id is not None:
        target = target & (pl.col("token_id") == token_id)
    count = tokens.filter(target).height
    if count:
        revoked = pl.when(target).then(pl.lit(now).cast(pl.Datetime("us", "UTC"))).otherwise(pl.col("revoked_at"))
        _write(warehouse, tokens.with_columns(revoked.alias("revoked_at")))
    return count


def _write(warehouse: Warehouse, tokens: pl.DataFrame) -> None:
    write_deltalake(
        warehouse.uri(TOKENS),
        tokens.to_arrow().cast(TOKEN_SCHEMA),
        mode="overwrite",
        storage_options=warehouse.options(),
    )


def parse_token(token: str) -> tuple[str, str]:
    match = TOKEN_PATTERN.match(token or "")
    if match is None:
        raise TokenError("malformed bearer token")
    return match.group(1), match.group(2)


class TokenIndex:
    """The tokens of one `ops/share_tokens` version, checked in constant time."""

    def __init__(self, tokens: pl.DataFrame) -> None:
        self._by_id = {row["token_id"]: row for row in tokens.iter_rows(named=True)}

    def department_of(self, token: str, now: datetime | None = None) -> str:
        """The department a token belongs to, or TokenError saying why it is refused."""
        token_id, secret = parse_token(token)
        row = self._by_id.get(token_id)
        if row is None or not hmac.compare_digest(row["token_sha256"], _digest(secret)):
            raise TokenError("unknown bearer token")
        if row["revoked_at"] is not None:
            raise TokenError(f"bearer token {token_id} was revoked")
        if row["expires_at"] <= (now or datetime.now(UTC)):
            raise TokenError(f"bearer token {token_id} expired")
        return row["department"]


def profile_json(issued: IssuedToken, endpoint: str) -> str:
    """The Delta Sharing profile file a department's client reads (shareCredentialsVersion 1)."""
    profile = {
        "shareCredentialsVersion": 1,
        "endpoint": endpoint.rstrip("/"),
        "bearerToken": issued.token,
        "expirationTime": issued.expires_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
    }
    return json.dumps(profile, indent=2) + "\n"


def write_profile(issued: IssuedToken, endpoint: str, path: Path) -> Path:
    """Write the profile with owner-only permissions (it holds the secret)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(profile_json(issued, endpoint), encoding="utf-8")
    return path
