"""What the sharing server (protocol endpoints and catalog web page) knows between requests.

Orders and tokens are re-read whenever their Delta table's version moves (a check that costs well under
a millisecond on a local folder), so a revoked order or token stops working at the next request, even
in the middle of a client's session, whichever process revoked it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

from deltalake import DeltaTable

from ingestion.keys import CST
from ingestion.pseudonym import Pseudonymiser, create_key_file, read_key_file
from ingestion.warehouse import Warehouse
from thematic_libs.sharing.access_log import AccessLog
from thematic_libs.sharing.orders import AUDIT, Order, current_orders, read_audit
from thematic_libs.sharing.tokens import TOKENS, TokenIndex, read_tokens

SIGNING_KEY_ENV = "YIWANG_SHARE_SIGNING_KEY"
SIGNING_KEY_FILE_ENV = "YIWANG_SHARE_SIGNING_KEY_FILE"


def signing_key(default_key_file: Path) -> bytes:
    """The key that signs file URLs and web sessions: YIWANG_SHARE_SIGNING_KEY (hex), else a key file
    generated once, locally (never committed)."""
    if os.environ.get(SIGNING_KEY_ENV):
        return bytes.fromhex(os.environ[SIGNING_KEY_ENV])
    path = Path(os.environ.get(SIGNING_KEY_FILE_ENV) or default_key_file)
    if not path.exists():
        create_key_file(path)
    return read_key_file(path)


class _Versioned:
    """A value derived from one Delta table, rebuilt when the table's version moves."""

    def __init__(self, warehouse: Warehouse, table: str, build) -> None:
        self.warehouse, self.table, self.build = warehouse, table, build
        self._delta: DeltaTable | None = None
        self._version: int | None = None
        self._value = None
        self._lock = threading.Lock()

    def get(self):
        with self._lock:
            if self._value is not None and self._unchanged():
                return self._value
            if self._delta is None and self.warehouse.exists(self.table):
                self._delta = self.warehouse.table(self.table)
            if self._delta is not None:
                self._delta.update_incremental()
                version = self._delta.version()
            else:
                version = -1
            if version != self._version or self._value is None:
                self._value = self.build(self._delta)
                self._version = version
            return self._value

    def _unchanged(self) -> bool:
        """On a local folder, a table whose next commit file does not exist has not moved: one stat() instead
        of `update_incremental` (about half a millisecond, twice per request of the sharing server)."""
        if not self.warehouse.is_local or self._version is None:
            return False
        return not os.path.exists(f"{self.warehouse.uri(self.table)}/_delta_log/{self._version + 1:020d}.json")


@dataclass
class ShareState:
    warehouse: Warehouse
    pseudonymiser: Pseudonymiser
    signing_key: bytes
    access_log: AccessLog
    # How long a signed file URL stays valid.
    url_seconds: int = 900
    started_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        self._orders = _Versioned(
            self.warehouse, AUDIT, lambda table: current_orders(read_audit(self.warehouse, table))
        )
        self._tokens = _Versioned(self.warehouse, TOKENS, lambda _table: TokenIndex(read_tokens(self.warehouse)))

    def department_of(self, token: str) -> str:
        """The department of a bearer token, or TokenError (malformed, unknown, revoked, expired)."""
        return self._tokens.get().department_of(token)

    def orders(self) -> dict[str, Order]:
        return self._orders.get()

    def active_orders(self, department: str, today: date | None = None) -> list[Order]:
        """The department's orders it may read now: active and not past their `until`."""
        today = today or datetime.now(CST).date()
        return [
            o for o in self.orders().values() if o.department == department and o.effective_state(today) == "active"
        ]

    def sign(self, message: str) -> str:
        return hmac.new(self.signing_key, message.encode("utf-8"), hashlib.sha256).hexdigest()

    def verify(self, message: str, signature: str) -> bool:
        return hmac.compare_digest(self.sign(message), signature or "")
