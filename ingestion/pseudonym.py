"""Keyed pseudonyms for sensitive identifiers (HMAC-SHA256).

The same ID number gets the same pseudonym in every dataset, so silver and gold join on
`<column>_key` and never see the number itself. The key comes from configuration and is never
committed; without the key a pseudonym cannot be reversed or recomputed from a guessed number.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

import polars as pl

KEY_ENV = "YIWANG_PSEUDONYM_KEY"
KEY_FILE_ENV = "YIWANG_PSEUDONYM_KEY_FILE"
MIN_KEY_BYTES = 16


class Pseudonymiser:
    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"the pseudonym key must have at least {MIN_KEY_BYTES} bytes")
        self._key = key

    def pseudonym(self, value: str) -> str:
        return hmac.digest(self._key, value.encode("utf-8"), hashlib.sha256).hex()[:32]

    def pseudonymise(self, values: pl.Series) -> pl.Series:
        """Pseudonyms of a column; nulls stay null. Repeated values are hashed once."""
        unique = values.drop_nulls().unique()
        mapping = {v: self.pseudonym(str(v)) for v in unique.to_list()}
        return values.cast(pl.String).replace_strict(mapping, default=None, return_dtype=pl.String)

    @classmethod
    def from_environment(cls, default_key_file: Path | None = None) -> Pseudonymiser:
        """The key from YIWANG_PSEUDONYM_KEY (hex), else from a key file.

        For the embedded default a key file is generated once, locally, with owner-only permissions.
        """
        if os.environ.get(KEY_ENV):
            return cls(bytes.fromhex(os.environ[KEY_ENV]))
        path = Path(os.environ.get(KEY_FILE_ENV) or default_key_file or "")
        if not str(path) or str(path) == ".":
            raise RuntimeError(f"no pseudonym key: set {KEY_ENV} (hex) or {KEY_FILE_ENV}")
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
        return cls(bytes.fromhex(path.read_text().strip()))
