"""Reading one batch's parts into a frame of values as delivered.

CSV and JSONL values stay strings here (typing is validation's job, so that a bad value can be shown
as it was sent); Parquet columns keep their types. Lines that cannot be parsed at all are returned as
malformed records instead of stopping the batch; bytes that cannot be decoded reject the batch.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ingestion import gb18030
from ingestion.contract import Contract
from ingestion.landing import Batch, BatchRejected, PartFile

ROW_NUMBER = "_row_number"
SOURCE_FILE = "_source_file"


@dataclass
class Malformed:
    """A record that could not be split into the contract's fields."""

    source_file: str
    row_number: int | None
    text: str
    detail: str


@dataclass
class ReadResult:
    frame: pl.DataFrame  # contract columns + _row_number + _source_file
    malformed: list[Malformed]

    @property
    def records(self) -> int:
        return self.frame.height + len(self.malformed)


def _decode(part: PartFile, encoding: str) -> str:
    data = part.path.read_bytes()
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise BatchRejected(
            "encoding",
            f"{part.name}: bytes at offset {error.start} (line {line}) are not valid {encoding}; "
            f"re-export the file in {encoding} as the manifest says",
        ) from None
    return text.removeprefix("\ufeff")


def _header(line: str) -> list[str] | None:
    """The column names of a header line, or None when it cannot be split (a lone carriage return in it)."""
    try:
        return [name.strip() for row in csv.reader([line]) for name in row]
    except csv.Error:
        return None


def _check_columns(contract: Contract, delivered: list[str], part: str) -> None:
    expected = set(contract.column_names)
    unexpected = [c for c in delivered if c not in expected]
    missing = [c.name for c in contract.columns if c.required and c.name not in delivered]
    duplicated = sorted({c for c in delivered if delivered.count(c) > 1})
    problems = []
    if missing:
        problems.append(f"required columns missing: {missing}")
    if unexpected:
        problems.append(f"columns not in contract {contract.id} v{contract.version}: {unexpected}")
    if duplicated:
        problems.append(f"columns given twice: {duplicated}")
    if problems:
        raise BatchRejected("columns", f"{part}: " + "; ".join(problems) + ". Deliver exactly the contract's columns")


def _complete(frame: pl.DataFrame, contract: Contract) -> pl.DataFrame:
    """Add optional columns the delivery left out (as nulls) and put columns in contract order."""
    missing = [pl.lit(None, dtype=pl.String).alias(c) for c in contract.column_names if c not in frame.columns]
    if missing:
        frame = frame.with_columns(missing)
    return frame.select([*contract.column_names, ROW_NUMBER, SOURCE_FILE])


# Encodings whose multi-byte sequences never contain the bytes of `,`, `"`, CR or LF (GB 18030 trail bytes
# are 0x30-0xFE): a CSV in them splits into fields byte for byte as its decoded text would.
_FIELD_SAFE_ENCODINGS = {"gb18030", "gbk", "gb2312"}


@dataclass(frozen=True)
class _FastCsv:
    """How Arrow reads a CSV part on the fast path: where its header ends, its columns, and its options."""

    codec: str
    start: int  # the length of the byte order mark
    header: list[str]
    read_options: pacsv.ReadOptions
    parse_options: pacsv.ParseOptions
    convert_options: pacsv.ConvertOptions

    @property
    def options(self) -> dict[str, Any]:
        """The keyword arguments of `pacsv.read_csv` and `pacsv.open_csv`."""
        return {
            "read_options": self.read_options,
            "parse_options": self.parse_options,
            "convert_options": self.convert_options,
        }


def _fast_csv(part: PartFile, contract: Contract, encoding: str) -> _FastCsv | None:
    """The fast path's plan for a part, or None where the exact path must read it (see `_read_csv_fast`)."""
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        return None
    if codec != "utf-8" and codec not in _FIELD_SAFE_ENCODINGS:
        return None
    scan = _scan(part, codec)
    if scan is None:
        return None
    start, header_line, quoted = scan
    header = _header(header_line)
    if not header or header == [""] or sorted(header) != sorted(set(header)):
        return None
    names = set(contract.column_names)
    if any(h not in names for h in header) or any(c.required and c.name not in header for c in contract.columns):
        return None
    column_type = pa.string() if codec == "utf-8" else pa.binary()
    return _FastCsv(
        codec,
        start,
        header,
        pacsv.ReadOptions(use_threads=True, column_names=header, skip_rows=1, block_size=_BLOCK_SIZE),
        # No invalid-row handler: a malformed line raises, and the exact path numbers it and keeps its text
        # (Arrow could only hand the handler the text decoded as UTF-8). Without a quote in the file no value
        # can hold a line break, and Arrow splits rows faster when told so.
        pacsv.ParseOptions(newlines_in_values=quoted),
        # No null detection: an empty field is null, and `_string_view_column` marks those from the value
        # lengths for less than Arrow's check of every field costs.
        pacsv.ConvertOptions(
            column_types=dict.fromkeys(header, column_type), null_values=[], strings_can_be_null=False
        ),
    )


def _fast_frame(table: pa.Table, plan: _FastCsv) -> pl.DataFrame:
    """Parsed fields (bytes in the part's encoding) as a frame of strings, empty fields null."""
    frame = pl.from_arrow(pa.table(_string_view_columns(table, plan.codec), names=plan.header))
    assert isinstance(frame, pl.DataFrame)
    return frame


def _read_csv_fast(part: PartFile, contract: Contract, encoding: str) -> ReadResult | None:
    """The common case without decoding the whole file in Python; None hands the file to `_read_csv`.

    Measured gain (bench/RESULTS.md, issue 16): a 1 M-row GB 18030 batch (80 MB) in 1.0-1.1 s against 1.7-1.8 s
    on the exact path; in the whole run at scale 10 the bronze stage is the same either way (41-42 s, within
    noise: its CSV batches are small); at 1 M residents about 0.7 s per household-registration batch (three in
    the demo; that whole run was not measured without it). It stays for the per-batch ingestion target (issue 2);
    tests/test_readers_fast_path.py holds it to the exact path.

    The file is scanned once in small pieces (`_scan`), then Arrow's multithreaded CSV reader parses its
    bytes as they are. In GB 18030 only the columns that hold non-ASCII bytes are transcoded
    (`_utf8_column`); ASCII columns are already UTF-8. Anything unusual (undecodable bytes, a header that
    does not match, a malformed line, a NUL byte) returns None, and the exact path reports it as before.
    """
    plan = _fast_csv(part, contract, encoding)
    if plan is None:
        return None
    try:
        with pa.OSFile(str(part.path)) as source:
            source.seek(plan.start)  # past the byte order mark
            table = pacsv.read_csv(source, **plan.options)
        frame = _fast_frame(table, plan)
    except (pa.ArrowInvalid, UnicodeDecodeError, _NotTranscodable):
        return None  # a malformed file or undecodable bytes: the exact path says which and where
    return ReadResult(_numbered(frame, part, contract), [])


class NotInRuns(Exception):
    """A part that cannot be read a run of rows at a time as it reads whole (a line the fast CSV reader leaves
    to the exact one, bytes that do not decode, fields outside the contract, a record count that disagrees
    with the manifest): read it whole, which names the problem and decides the batch."""


def read_part_runs(batch: Batch, part: PartFile, max_rows: int, exact: bool = False) -> Iterator[ReadResult]:
    """A CSV or JSON-lines part in runs of at most `max_rows` rows (the exact CSV reader's malformed records come
    beside them), numbered as in the whole part, so that memory holds one run of a part of any size (a Parquet part
    is sliced by its row groups: `parquet_slices`).

    A part of at most `max_rows` records is one run, read as `read_part` reads it. Otherwise the records stream
    from the file: CSV through Arrow's streaming reader with the fast path's options, or with `exact` the exact
    path's (decoded to UTF-8 as it streams, malformed lines kept with their line numbers); JSON lines through an
    incremental decoder. The count is checked against the manifest after the last run. Raises `NotInRuns` where
    only the whole read can say what is wrong (and, without `exact`, where the fast CSV reader stops).
    """
    if part.rows <= max_rows:
        yield read_part(batch, part)
        return
    if part.format == "csv":
        read = _csv_exact_runs if exact else _csv_runs
        runs = read(part, batch.contract, batch.encoding, max_rows)
    elif part.format == "jsonl":
        runs = _jsonl_runs(part, batch.contract, batch.encoding, max_rows)
    else:
        raise ValueError(f"{part.name}: only CSV and JSON-lines parts are read in runs of records")
    records = 0
    for run in runs:
        records += run.records
        yield run
    if records != part.rows:
        raise NotInRuns(f"{part.name}: {records} records against {part.rows} in the manifest")


def _tables_of(reader: pacsv.CSVStreamingReader, max_rows: int) -> Iterator[pa.Table]:
    """The reader's rows in tables of `max_rows` rows, the last one shorter (at least one table)."""
    pending: list[pa.RecordBatch] = []
    held, given = 0, False
    for block in reader:
        pending.append(block)
        held += block.num_rows
        while held >= max_rows:
            table = pa.Table.from_batches(pending, reader.schema)
            yield table.slice(0, max_rows)
            given = True
            rest = table.slice(max_rows)
            pending, held = rest.to_batches(), rest.num_rows
    if held or not given:
        yield pa.Table.from_batches(pending, reader.schema)


def _csv_runs(part: PartFile, contract: Contract, encoding: str, max_rows: int) -> Iterator[ReadResult]:
    plan = _fast_csv(part, contract, encoding)
    if plan is None:
        raise NotInRuns(f"{part.name}: left to the exact CSV reader")
    first = 1
    try:
        with pa.OSFile(str(part.path)) as source:
            source.seek(plan.start)
            for table in _tables_of(pacsv.open_csv(source, **plan.options), max_rows):
                yield ReadResult(_numbered(_fast_frame(table, plan), part, contract, first), [])
                first += table.num_rows
    except (pa.ArrowInvalid, UnicodeDecodeError, _NotTranscodable) as error:
        raise NotInRuns(f"{part.name}: {error}") from None


def _csv_exact_runs(part: PartFile, contract: Contract, encoding: str, max_rows: int) -> Iterator[ReadResult]:
    """`_read_csv_exact` a run at a time: the same options, the same record numbers and malformed records."""
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        raise NotInRuns(f"{part.name}: unknown encoding {encoding}") from None
    if codec != "utf-8" and codec not in _FIELD_SAFE_ENCODINGS:  # a line break is its byte, so is the header's
        raise NotInRuns(f"{part.name}: {encoding} is read whole")
    header = _first_line_header(part, codec)
    if not header or header == [""]:
        raise NotInRuns(f"{part.name}: no header that can be split")
    try:
        _check_columns(contract, header, part.name)
    except BatchRejected as rejected:
        raise NotInRuns(rejected.message) from None
    bad: list[pacsv.InvalidRow] = []
    numbers = _RecordNumbers()
    try:
        with pa.OSFile(str(part.path)) as file:
            source = file if codec == "utf-8" else pa.transcoding_input_stream(file, codec, "utf-8")
            reader = pacsv.open_csv(
                source,
                # one thread: only then does Arrow tell the line of a malformed record
                read_options=pacsv.ReadOptions(
                    use_threads=False, column_names=header, skip_rows=1, block_size=_BLOCK_SIZE
                ),
                parse_options=_exact_parse_options(bad),
                convert_options=_exact_convert_options(header),
            )
            for table in _tables_of(reader, max_rows):
                reported, bad[:] = list(bad), []
                numbers.skip((row.number or 0) - 1 for row in reported)
                frame = pl.from_arrow(table)
                assert isinstance(frame, pl.DataFrame)
                frame = frame.with_columns(
                    pl.Series(ROW_NUMBER, numbers.take(frame.height), dtype=pl.Int64),
                    pl.lit(part.name).alias(SOURCE_FILE),
                )
                yield ReadResult(_complete(frame, contract), [_malformed(part, row) for row in reported])
            if bad:  # malformed lines after the last row
                yield ReadResult(_empty(contract, part.name), [_malformed(part, row) for row in bad])
    except (pa.ArrowInvalid, UnicodeDecodeError) as error:
        raise NotInRuns(f"{part.name}: {error}") from None


def _first_line_header(part: PartFile, codec: str) -> list[str] | None:
    """The column names on the part's first line, as `_read_csv_exact` reads them (None: not within 1 MiB)."""
    with open(part.path, "rb") as file:
        head = file.read(1 << 20)
    end = head.find(b"\n")
    if end < 0:
        return None
    try:
        line = head[:end].decode(codec).removeprefix("\ufeff").rstrip("\r")
    except UnicodeDecodeError:
        return None
    return _header(line)


class _RecordNumbers:
    """Record numbers for the good rows of a part read in runs, as `_good_row_numbers` gives them for the whole
    part: 1, 2, ... without the numbers of malformed records."""

    def __init__(self) -> None:
        self.next = 1
        self.skipped: list[int] = []  # malformed record numbers not passed yet, ascending

    def skip(self, records: Iterable[int]) -> None:
        self.skipped = sorted({*self.skipped, *(r for r in records if r >= self.next)})

    def take(self, count: int) -> np.ndarray:
        candidates = np.arange(self.next, self.next + count + len(self.skipped), dtype=np.int64)
        taken = candidates[~np.isin(candidates, self.skipped)][:count]
        if count:
            self.next = int(taken[-1]) + 1
            self.skipped = [r for r in self.skipped if r >= self.next]
        return taken


_COLUMN_THREADS = min(4, os.cpu_count() or 1)
# Arrow parses blocks in parallel; 4 MiB blocks parse ~20% faster than its 1 MiB default (fewer chunks to join).
_BLOCK_SIZE = 4 << 20


def _string_view_columns(table: pa.Table, codec: str) -> list[pa.Array]:
    """The table's columns as `_string_view_column` makes them, side by side, the largest first: the GB 18030
    columns take most of the time, and starting them last would leave a core idle at the end. Arrow and numpy
    let the GIL go (Python's codec holds it)."""
    order = sorted(range(table.num_columns), key=lambda i: -table.column(i).nbytes)
    with ThreadPoolExecutor(max_workers=_COLUMN_THREADS) as pool:
        converted = dict(
            zip(order, pool.map(lambda i: _string_view_column(table.column(i), codec), order), strict=True)
        )
    return [converted[i] for i in range(table.num_columns)]


def _string_view_column(column: pa.ChunkedArray, codec: str, distinct_first: bool = True) -> pa.Array:
    """A parsed column (empty fields as empty values) as one string_view array with empty fields null, which
    polars takes without a copy. One chunk: Arrow joins the ~1 MiB pieces faster than polars does, and a frame
    in one piece is quicker to work with.

    A column whose values repeat (addresses of a household, codes) is transcoded once per distinct value:
    Arrow's hashing costs less than the decoding it saves, and lets the GIL go (`_repeated`). `distinct_first`
    False transcodes every value (for tests)."""
    array = column.combine_chunks()
    if codec == "utf-8" or _is_ascii(array):
        views = _ascii_as_string(array).cast(pa.string_view())
    elif distinct_first and (repeated := _repeated(array)) is not None:
        indices, distinct = repeated
        views = _gathered_views(_utf8_array(distinct, codec).cast(pa.string_view()), indices)
    else:
        views = _utf8_array(array, codec).cast(pa.string_view())
    return _empty_as_null(views)


def _empty_as_null(views: pa.Array) -> pa.Array:
    """A string_view array without nulls, with its empty values made null (the view of an empty value, all
    zero, is also what a null's view is). Its lengths are the first four bytes of each 16-byte view."""
    count = len(views)
    view_buffer = views.buffers()[1].slice(views.offset * 16, count * 16)
    present = np.frombuffer(view_buffer, dtype=np.int32)[::4] != 0
    nulls = count - int(np.count_nonzero(present))
    if nulls == 0:
        return views
    validity = pa.py_buffer(np.packbits(present, bitorder="little"))
    return pa.Array.from_buffers(
        pa.string_view(), count, [validity, view_buffer, *views.buffers()[2:]], null_count=nulls
    )


# A sample of this many values first: a column whose sample is mostly distinct is not hashed whole.
_REPEAT_SAMPLE = 1 << 16
# Transcoding the distinct values and gathering views pays when at most this share of the values is distinct.
_REPEAT_SHARE = 0.5


def _repeated(array: pa.Array) -> tuple[pa.Array, pa.Array] | None:
    """(int32 indices, distinct values) for a column with few distinct values, else None."""
    if len(array) >= 2 * _REPEAT_SAMPLE:
        sample = pc.dictionary_encode(array.slice(0, _REPEAT_SAMPLE)).dictionary
        if len(sample) > _REPEAT_SAMPLE * _REPEAT_SHARE:
            return None
    encoded = pc.dictionary_encode(array)
    if len(encoded.dictionary) > len(array) * _REPEAT_SHARE:
        return None
    return encoded.indices, encoded.dictionary


def _gathered_views(distinct: pa.Array, indices: pa.Array) -> pa.Array:
    """`distinct` (string_view) taken at `indices` (int32, null where the value is null), by copying each
    16-byte view: the values stay in `distinct`'s buffers. (Arrow 26 has no `take` for views.) An index out
    of range (a damaged file) raises ArrowInvalid."""
    views = np.zeros((len(distinct) + 1, 2), dtype=np.uint64)  # the last one, all zero, for the nulls
    if len(distinct):
        views[:-1] = np.frombuffer(distinct.buffers()[1], dtype=np.uint64).reshape(-1, 2)[
            distinct.offset : distinct.offset + len(distinct)
        ]
    nulls = indices.null_count
    if nulls < len(indices):
        bounds = pc.min_max(indices)
        if bounds["min"].as_py() < 0 or bounds["max"].as_py() >= len(distinct):
            raise pa.ArrowInvalid("a dictionary index is out of range")
    validity = None
    if nulls:
        validity = indices.is_valid().buffers()[1]  # a fresh bitmap, from bit 0
        indices = indices.fill_null(len(distinct))
    positions = np.frombuffer(indices.buffers()[1], dtype=np.int32)[indices.offset : indices.offset + len(indices)]
    return pa.Array.from_buffers(
        pa.string_view(),
        len(positions),
        [validity, pa.py_buffer(np.take(views, positions, axis=0)), *distinct.buffers()[2:]],
        null_count=nulls,
    )


_SCAN_PIECE = 4 << 20


def _scan(part: PartFile, codec: str, piece: int = _SCAN_PIECE) -> tuple[int, str, bool] | None:
    """One pass over the file in a reused buffer: (the length of its byte order mark, its header line,
    whether it holds a quote), or None for what the fast path leaves to the exact one: a NUL byte, text that
    is not strictly UTF-8 (Arrow's own check is not Python's), a header not in `codec` or longer than a piece.

    Reading the file into one `bytes` object would cost more than the parse saves: fresh memory is slow.
    """
    utf8 = codecs.getincrementaldecoder("utf-8")() if codec == "utf-8" else None
    buffer = bytearray(piece)
    view = memoryview(buffer)
    head, header_found, quoted = b"", False, False  # head: the bytes before the first line break
    try:
        with open(part.path, "rb", buffering=0) as file:
            while size := file.readinto(view):
                if buffer.find(b"\x00", 0, size) >= 0:
                    return None
                quoted = quoted or buffer.find(b'"', 0, size) >= 0
                if not header_found:
                    end = buffer.find(b"\n", 0, size)
                    header_found = end >= 0
                    head += view[: end if header_found else size]
                    if len(head) > piece:
                        return None
                if utf8 is not None:
                    data = view[:size].tobytes()
                    if not data.isascii() or utf8.getstate()[0]:  # a sequence may continue from the last piece
                        utf8.decode(data)
            if utf8 is not None:
                utf8.decode(b"", final=True)
        bom = "\ufeff".encode(codec) if codec not in ("gbk", "gb2312") else b""
        start = len(bom) if bom and head.startswith(bom) else 0
        header_line = head[start:].decode(codec).rstrip("\r")
    except UnicodeDecodeError:
        return None
    return start, header_line, quoted


def _to_polars(table: pa.Table) -> pl.DataFrame:
    """Arrow to polars; strings go through Arrow's string_view, which polars takes without a copy.

    Arrow's cast to views is about twice as fast as polars' own conversion of a plain string column, and
    from 32-bit offsets (a cheap cast from Arrow's large strings) faster again than from 64-bit ones.
    """
    columns = []
    for column in table.columns:
        if pa.types.is_large_string(column.type):
            with contextlib.suppress(pa.ArrowInvalid):  # over 2 GiB of text in a chunk: keep 64-bit offsets
                column = column.cast(pa.string())
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            column = column.cast(pa.string_view())
        columns.append(column)
    frame = pl.from_arrow(pa.table(columns, names=table.column_names))
    assert isinstance(frame, pl.DataFrame)
    return frame


class _NotTranscodable(Exception):
    """A column the one-call transcoding cannot handle; the exact path reads the file instead."""


def _value_bytes(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The offsets (int32, as stored) and the concatenated value bytes of a binary array, without a copy."""
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int32)[array.offset : array.offset + len(array) + 1]
    data = array.buffers()[2]
    if data is None:
        return offsets, np.empty(0, dtype=np.uint8)
    return offsets, np.frombuffer(data, dtype=np.uint8)[offsets[0] : offsets[-1]]


def _is_ascii(array: pa.Array) -> bool:
    """Whether a binary array's values are all ASCII, hence UTF-8 already."""
    return bool(_value_bytes(array)[1].max(initial=0) < 0x80)


def _ascii_as_string(array: pa.Array) -> pa.Array:
    """A binary array of ASCII values as a string array on the same buffers."""
    return pa.Array.from_buffers(
        pa.string(), len(array), array.buffers(), null_count=array.null_count, offset=array.offset
    )


def _utf8_column(column: pa.ChunkedArray, codec: str) -> pa.Array:
    """A binary column in `codec` as one UTF-8 string array (`_utf8_array`)."""
    return _utf8_array(column.combine_chunks(), codec)


def _utf8_array(array: pa.Array, codec: str) -> pa.Array:
    """A binary array in `codec` as a UTF-8 string array.

    An ASCII array is UTF-8 already and keeps its bytes. An array with other bytes is transcoded in one
    codec call (`gb18030.transcode`), or, when it holds what that does not handle (many four-byte
    sequences), through `_transcoded`.
    """
    if _is_ascii(array):
        return _ascii_as_string(array)
    offsets, values = _value_bytes(array)
    result = gb18030.transcode(values, offsets.astype(np.int64) - offsets[0], codec) if array.offset == 0 else None
    if result is None:
        return _transcoded(array, codec)
    utf8, new_offsets = result
    offset_type, arrow_type = (np.int32, pa.string()) if len(utf8) < 2**31 else (np.int64, pa.large_string())
    return pa.Array.from_buffers(
        arrow_type,
        len(array),
        [array.buffers()[0], pa.py_buffer(new_offsets.astype(offset_type)), pa.py_buffer(utf8)],
        null_count=array.null_count,
    ).cast(pa.string())


def _transcoded(array: pa.Array, codec: str) -> pa.Array:
    """A binary array in `codec` as a UTF-8 string array, decoding only if it has non-ASCII bytes.

    The values are joined with NUL separators (the file has no NUL byte), decoded and encoded in one
    call each, and split again at the NULs: one pass in C instead of a Python call per value.
    """
    if array.offset != 0:
        raise _NotTranscodable
    count = len(array)
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int32)[: count + 1]
    values = np.frombuffer(array.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    if count == 0 or values.tobytes().isascii():  # ASCII is UTF-8 already: reuse the buffers as they are
        return pa.Array.from_buffers(pa.string(), count, array.buffers(), null_count=array.null_count)
    joined = np.insert(values, offsets[1:] - offsets[0], 0)
    utf8 = np.frombuffer(joined.tobytes().decode(codec).encode("utf-8"), dtype=np.uint8)
    ends = np.flatnonzero(utf8 == 0)
    if len(ends) != count:
        raise _NotTranscodable
    new_offsets = np.concatenate([[0], ends - np.arange(count)])
    text = utf8[utf8 != 0]
    offset_type, arrow_type = (np.int32, pa.string()) if len(text) < 2**31 else (np.int64, pa.large_string())
    return pa.Array.from_buffers(
        arrow_type,
        count,
        [array.buffers()[0], pa.py_buffer(new_offsets.astype(offset_type)), pa.py_buffer(text)],
        null_count=array.null_count,
    ).cast(pa.string())


def _read_csv(part: PartFile, contract: Contract, encoding: str) -> ReadResult:
    fast = _read_csv_fast(part, contract, encoding)
    return fast if fast is not None else _read_csv_exact(part, contract, encoding)


def _read_csv_exact(part: PartFile, contract: Contract, encoding: str) -> ReadResult:
    """Decode the whole file in Python first: slower, but it names the offset of bad bytes and the
    line of each malformed record."""
    text = _decode(part, encoding)
    header_line = text.split("\n", 1)[0].rstrip("\r")
    header = _header(header_line)
    if header is None:
        raise BatchRejected(
            "columns", f"{part.name}: the header row cannot be parsed (a line break inside it?); send one header line"
        )
    if not header or header == [""]:
        raise BatchRejected(
            "columns",
            f"{part.name}: the header row is missing"
            + (" (the file is empty)" if text.strip() == "" else "")
            + "; a CSV part starts with the contract's column names, even when it holds no records",
        )
    _check_columns(contract, header, part.name)
    data = text.encode("utf-8") if encoding != "utf-8" else part.path.read_bytes().removeprefix(b"\xef\xbb\xbf")
    bad: list[pacsv.InvalidRow] = []

    def read(threads: bool) -> pa.Table:
        return pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(use_threads=threads, column_names=header, skip_rows=1),
            parse_options=_exact_parse_options(bad),
            convert_options=_exact_convert_options(header),
        )

    try:
        table = read(threads=True)
        if bad:  # read again in one thread: only then does Arrow tell the line numbers
            bad.clear()
            table = read(threads=False)
    except pa.ArrowInvalid as error:
        raise BatchRejected("malformed_file", f"{part.name}: the CSV cannot be parsed ({error})") from None
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    # Physical line numbers of the skipped records (header = line 1) give each good row its record number.
    bad_records = sorted((row.number or 0) - 1 for row in bad)
    numbers = _good_row_numbers(frame.height, bad_records)
    frame = frame.with_columns(pl.Series(ROW_NUMBER, numbers, dtype=pl.Int64), pl.lit(part.name).alias(SOURCE_FILE))
    return ReadResult(_complete(frame, contract), [_malformed(part, row) for row in bad])


def _exact_parse_options(bad: list[pacsv.InvalidRow]) -> pacsv.ParseOptions:
    """How the exact path splits lines: a value may hold a line break; a line of another field count than the
    header's is skipped and kept in `bad`, to be reported as a malformed record."""

    def keep_invalid(row: pacsv.InvalidRow) -> str:
        bad.append(row)
        return "skip"

    return pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=keep_invalid)


def _exact_convert_options(header: list[str]) -> pacsv.ConvertOptions:
    """How the exact path types fields: every value a string, only an empty field null."""
    return pacsv.ConvertOptions(
        column_types=dict.fromkeys(header, pa.string()),
        null_values=[""],  # only an empty field is null: "NA" or "N/A" are values as delivered
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
    )


def _malformed(part: PartFile, row: pacsv.InvalidRow) -> Malformed:
    """A line Arrow could not split into the header's fields; numbered by its physical line (header = line 1)."""
    detail = f"line {row.number}: expected {row.expected_columns} fields, found {row.actual_columns}"
    return Malformed(part.name, (row.number or 0) - 1 or None, row.text, detail)


def _good_row_numbers(good: int, bad_records: list[int]) -> pl.Series:
    if not bad_records:
        return pl.int_range(1, good + 1, eager=True)
    total = good + len(bad_records)
    taken = set(bad_records)
    return pl.Series([n for n in range(1, total + 1) if n not in taken][:good])


def _read_jsonl(part: PartFile, contract: Contract, encoding: str) -> ReadResult:
    records = _JsonRecords(part, contract)
    for line in _decode(part, encoding).splitlines():
        records.add(line)
    return records.result()


class _JsonRecords:
    """JSON lines, one record per non-blank line, collected as columns of text; record numbers continue from
    one `result` to the next (a part read in runs)."""

    def __init__(self, part: PartFile, contract: Contract) -> None:
        self.part, self.contract = part, contract
        self.allowed = set(contract.column_names)
        self.record = 0
        self._start()

    def _start(self) -> None:
        self.columns: dict[str, list[str | None]] = {n: [] for n in self.contract.column_names}
        self.numbers: list[int] = []
        self.malformed: list[Malformed] = []
        self.unexpected: set[str] = set()

    @property
    def held(self) -> int:
        return len(self.numbers) + len(self.malformed)

    def add(self, line: str) -> None:
        if not line.strip():
            return
        self.record += 1
        record, name = self.record, self.part.name
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as error:
            self.malformed.append(Malformed(name, record, line, f"line {record}: not valid JSON ({error.msg})"))
            return
        if not isinstance(obj, dict):
            self.malformed.append(Malformed(name, record, line, f"line {record}: not a JSON object"))
            return
        self.unexpected.update(k for k in obj if k not in self.allowed)
        self.numbers.append(record)
        for column, values in self.columns.items():
            values.append(_json_value(obj.get(column)))

    def result(self) -> ReadResult:
        """The records since the last result."""
        names, contract = self.contract.column_names, self.contract
        if self.unexpected:
            raise BatchRejected(
                "columns",
                f"{self.part.name}: fields not in contract {contract.id} v{contract.version}: "
                f"{sorted(self.unexpected)}. Deliver exactly the contract's fields",
            )
        frame = pl.DataFrame(
            {**self.columns, ROW_NUMBER: self.numbers, SOURCE_FILE: [self.part.name] * len(self.numbers)},
            schema={**dict.fromkeys(names, pl.String), ROW_NUMBER: pl.Int64, SOURCE_FILE: pl.String},
        )
        result = ReadResult(frame, self.malformed)
        self._start()
        return result


_TEXT_PIECE = 4 << 20  # bytes decoded at a time when a JSON-lines part is read in runs


def _jsonl_runs(part: PartFile, contract: Contract, encoding: str, max_rows: int) -> Iterator[ReadResult]:
    records = _JsonRecords(part, contract)
    try:
        for line in _lines(part, encoding):
            records.add(line)
            if records.held == max_rows:
                yield records.result()
        if records.held or records.record == 0:
            yield records.result()
    except (UnicodeDecodeError, LookupError, BatchRejected) as error:
        raise NotInRuns(f"{part.name}: {error}") from None


def _lines(part: PartFile, encoding: str) -> Iterable[str]:
    """The lines of `_decode(part, encoding).splitlines()`, decoded a piece at a time. A line break split
    between two pieces (CR, then LF) gives one more blank line, which holds no record."""
    decoder = codecs.getincrementaldecoder(encoding)()
    carried, first = "", True
    with open(part.path, "rb") as file:
        while True:
            data = file.read(_TEXT_PIECE)
            text = carried + decoder.decode(data, final=not data)
            if first and text:  # the first whole character: a byte order mark is not a record's
                text, first = text.removeprefix("\ufeff"), False
            lines = text.splitlines(keepends=True)
            carried = lines.pop() if data and lines and len(lines[-1].splitlines()[0]) == len(lines[-1]) else ""
            yield from (line.splitlines()[0] for line in lines)
            if not data:
                return


def _json_value(value: object) -> str | None:
    """JSON values as the text a CSV would have carried: the validator types them all the same way."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, ensure_ascii=False)


def _read_parquet(
    part: PartFile, contract: Contract, columns: Sequence[str] | None = None, row_groups: range | None = None
) -> ReadResult:
    """Arrow's reader. (polars' own reader is about three times faster, but a damaged page can make it abort
    the whole process, and it reads some files Arrow rejects as damaged.) `columns`: read only those.
    `row_groups`: read only those, numbered as in the whole file."""
    try:
        file = pq.ParquetFile(part.path, read_dictionary=_dictionary_only_strings(part.path))
        delivered = file.schema_arrow.names
        wanted = None if columns is None else [c for c in delivered if c in columns]
        if row_groups is None:
            table, first = file.read(columns=wanted), 1
        else:
            table = file.read_row_groups(list(row_groups), columns=wanted)
            first = 1 + sum(file.metadata.row_group(g).num_rows for g in range(row_groups.start))
        table = _views_of_dictionaries(table)
    except (pa.ArrowInvalid, OSError) as error:
        raise BatchRejected("malformed_file", f"{part.name}: not a readable Parquet file ({error})") from None
    _check_columns(contract, delivered, part.name)
    return ReadResult(_numbered(_to_polars(table), part, contract, first), [])


def parquet_slices(part: PartFile, max_rows: int) -> list[range] | None:
    """The part's row groups in runs of consecutive groups of at most `max_rows` rows together (a larger group is a
    run alone), for reading a large Parquet part a slice at a time; None when it is read whole: not Parquet, one
    run, or a footer that is unreadable or disagrees with the manifest (the whole read reports that)."""
    if part.format != "parquet":
        return None
    try:
        metadata = pq.read_metadata(part.path)
    except (pa.ArrowInvalid, OSError):
        return None
    if metadata.num_rows != part.rows:
        return None
    slices: list[range] = []
    start = rows = 0
    for group in range(metadata.num_row_groups):
        size = metadata.row_group(group).num_rows
        if group > start and rows + size > max_rows:
            slices.append(range(start, group))
            start, rows = group, 0
        rows += size
    slices.append(range(start, metadata.num_row_groups))
    return slices if len(slices) > 1 else None


# Dictionary indices take at most two bytes a value; plain strings at least four (their length).
_DICTIONARY_BYTES_PER_VALUE = 2


def _dictionary_only_strings(path) -> list[str]:
    """The string columns whose every column chunk is (nearly) all dictionary-encoded: Arrow reads them as
    indices and a small dictionary instead of one value per row. (Asked for a column that fell back to plain
    pages, Arrow would hash every value, which costs more than it saves.)"""
    metadata = pq.read_metadata(path)
    schema = metadata.schema.to_arrow_schema()
    names = []
    for index, field in enumerate(schema):
        if not (pa.types.is_string(field.type) or pa.types.is_large_string(field.type)):
            continue
        chunks = [metadata.row_group(g).column(index) for g in range(metadata.num_row_groups)]
        if chunks and all(
            c.path_in_schema == field.name
            and c.has_dictionary_page
            and c.total_uncompressed_size <= _DICTIONARY_BYTES_PER_VALUE * max(c.num_values, 1)
            for c in chunks
        ):
            names.append(field.name)
    return names


def _views_of_dictionaries(table: pa.Table) -> pa.Table:
    """Dictionary-encoded string columns as string_view columns of one chunk, by copying views."""
    columns = []
    for column in table.columns:
        if pa.types.is_dictionary(column.type):
            pieces = [
                _gathered_views(chunk.dictionary.cast(pa.string()).cast(pa.string_view()), chunk.indices)
                for chunk in column.chunks
            ]
            column = pa.concat_arrays(pieces) if len(pieces) != 1 else pieces[0]
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def _numbered(frame: pl.DataFrame, part: PartFile, contract: Contract, first: int = 1) -> pl.DataFrame:
    """Row numbers from `first` in file order and the part's name, columns in contract order."""
    frame = frame.with_columns(
        pl.int_range(first, first + frame.height, dtype=pl.Int64).alias(ROW_NUMBER),
        pl.lit(part.name).alias(SOURCE_FILE),
    )
    return _complete(frame, contract)


def _empty(contract: Contract, part: str) -> pl.DataFrame:
    schema = {**dict.fromkeys(contract.column_names, pl.String), ROW_NUMBER: pl.Int64, SOURCE_FILE: pl.String}
    return pl.DataFrame(schema=schema)


def unterminated_quote_line(part: PartFile) -> int | None:
    """The line of a CSV part on which a quoted field opens and never closes, or None. In RFC 4180 a quote
    inside a quoted field is doubled, so quotes pair up; an odd count means one was left open."""
    data = part.path.read_bytes()
    if data.count(b'"') % 2 == 0:
        return None
    is_open, opened = False, 0
    for position in (i for i, byte in enumerate(data) if byte == 0x22):
        if not is_open:
            opened = position
        is_open = not is_open
    return data.count(b"\n", 0, opened) + 1


def read_part(
    batch: Batch, part: PartFile, columns: Sequence[str] | None = None, row_groups: range | None = None
) -> ReadResult:
    """One part of a batch, with its row count checked against the manifest. `columns`: the caller needs only
    these; a Parquet part is read for them alone (the other columns are null), other formats read every column.
    `row_groups`: one slice of a Parquet part (`parquet_slices`, which checked the footer's count against the
    manifest), its rows numbered as in the whole part."""
    if part.format == "csv":
        result = _read_csv(part, batch.contract, batch.encoding)
    elif part.format == "jsonl":
        result = _read_jsonl(part, batch.contract, batch.encoding)
    else:
        result = _read_parquet(part, batch.contract, columns, row_groups)
    if row_groups is not None:
        return result
    if result.records != part.rows and part.format == "csv" and (line := unterminated_quote_line(part)):
        raise BatchRejected(
            "malformed_file",
            f"{part.name}: a quote opened on line {line} is never closed, so every line after it reads as "
            "part of one field; fix the quoting at the source (a quote inside a field is written twice) and "
            "resend the batch",
        )
    if result.records != part.rows:
        raise BatchRejected(
            "row_count",
            f"{part.name} holds {result.records} records but the manifest says {part.rows}: "
            "the file is incomplete or the manifest is wrong; resend the batch",
        )
    return result


def read_batch(batch: Batch) -> ReadResult:
    """All parts of a batch, concatenated, with the row counts checked against the manifest."""
    results = [read_part(batch, part) for part in batch.parts]
    frames = [r.frame for r in results]
    frame = pl.concat(frames, how="vertical_relaxed") if len(frames) > 1 else frames[0]
    return ReadResult(frame, [m for r in results for m in r.malformed])
