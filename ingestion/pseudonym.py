"""Keyed pseudonyms for sensitive identifiers (HMAC-SHA256).

The same ID number gets the same pseudonym in every dataset, so silver and gold join on
`<column>_key` and never see the number itself. The key comes from configuration and is never
committed; without the key a pseudonym cannot be reversed or recomputed from a guessed number.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import tempfile
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

    # The pseudonym in DuckDB SQL: HMAC-SHA256 (RFC 2104) composed of DuckDB's sha256 over blobs, which gives
    # `pseudonym` byte for byte (tests/test_pseudonym_key.py holds them together). Used where silver is built in
    # DuckDB: on renshe.social_insurance at 1 M residents (11.7 M rows) Python's HMAC of each chunk took 22 s of
    # the 29 s, DuckDB's the rest in parallel with the query (bench/RESULTS.md, issue 16).
    SQL_PARAMETERS = ("pseudonym_inner_pad", "pseudonym_outer_pad")

    @staticmethod
    def sql(text_sql: str) -> str:
        """The pseudonym of a VARCHAR expression as DuckDB SQL (null for null); run it with `sql_parameters()`."""
        inner, outer = Pseudonymiser.SQL_PARAMETERS
        return f"substr(sha256(${outer} || unhex(sha256(${inner} || encode({text_sql})))), 1, 32)"

    def sql_parameters(self) -> dict[str, bytes]:
        """The key's inner and outer pads, the blobs `sql` refers to (named parameters: never in the SQL text)."""
        block = (hashlib.sha256(self._key).digest() if len(self._key) > 64 else self._key).ljust(64, b"\0")
        inner, outer = self.SQL_PARAMETERS
        return {inner: bytes(b ^ 0x36 for b in block), outer: bytes(b ^ 0x5C for b in block)}

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
            try:
                return cls(bytes.fromhex(os.environ[KEY_ENV]))
            except ValueError as error:
                raise PseudonymKeyError(
                    f"{KEY_ENV} is not a usable key ({error}); set it to at least {MIN_KEY_BYTES} bytes of hex"
                ) from None
        path = Path(os.environ.get(KEY_FILE_ENV) or default_key_file or "")
        if not str(path) or str(path) == ".":
            raise PseudonymKeyError(f"no pseudonym key: set {KEY_ENV} (hex) or {KEY_FILE_ENV}")
        if not path.exists():
            create_key_file(path)
        return cls(read_key_file(path))


class PseudonymKeyError(RuntimeError):
    """A pseudonym key that is missing, unreadable, empty or too short: one line naming where it is."""


def create_key_file(path: Path) -> None:
    """Create a new random key at `path` atomically: written to a temporary file in the same folder, fsynced,
    then linked into place, so that concurrent creators end with one key and no reader sees half of one
    (the loser of the race keeps the winner's key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(handle, 0o600)
        os.write(handle, secrets.token_hex(32).encode())
        os.fsync(handle)
        os.close(handle)
        with contextlib.suppress(FileExistsError):  # another process created the key first: keep theirs
            os.link(temporary, path)
    finally:
        os.unlink(temporary)


def read_key_file(path: Path) -> bytes:
    """The key in `path` (hex), or one clear error naming the file and what to do."""
    what_to_do = (
        f"delete it to have a new key generated (every `_key` column changes: rebuild silver), or restore the "
        f"key it held, or set {KEY_ENV}"
    )
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise PseudonymKeyError(f"pseudonym key file {path} cannot be read ({error}); {what_to_do}") from None
    if not text:
        raise PseudonymKeyError(f"pseudonym key file {path} is empty; {what_to_do}")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise PseudonymKeyError(f"pseudonym key file {path} does not hold a hex key; {what_to_do}") from None
    if len(key) < MIN_KEY_BYTES:
        raise PseudonymKeyError(
            f"pseudonym key file {path} holds {len(key)} bytes, fewer than {MIN_KEY_BYTES}; {what_to_do}"
        )
    return key
