"""A Kafka consumer that writes a topic's messages to bronze exactly once.

Each micro-batch (up to `batch_seconds` of messages, or `max_batch` messages) is:

1. checked against the topic's contract (`messages.check_messages`): refused messages go to
   `quarantine/messages` with their rule, in one commit recording each partition's last offset as an
   application transaction of that table (so a replay never quarantines a message twice);
2. stripped of records already written (`dedupe`: same `device_id, seq` or `appeal_id`);
3. appended to `bronze/stream/<dataset>` in ONE commit that records each partition's last offset
   (`offsets.app_id`). That commit is the commit point: on start, and whenever the group hands a
   partition over, the consumer seeks to what Delta says. A consumer killed at any point therefore
   loses nothing (Kafka still holds what Delta lacks) and doubles nothing (what Delta holds is skipped).
   Two consumers that both believe they own a partition cannot both commit: the second commit on the
   same application transaction fails delta-rs' conflict check and that consumer re-reads Delta;
4. reported in `ops/stream_batches` (counts, offsets, produce-to-commit latency, memory), then handed
   to the topic's `after_commit` (incidents and tickets for IoT, urban events for appeals).

A topic whose messages are not JSON records (video frames: JPEG bytes, fields in the key and headers) brings
its own `check` and bronze schema; one whose rows feed a derived table that must not lose or double a message
(the video detections) writes it in `before_commit`: after the quarantine, before the bronze commit, in a
commit of its own table that records the same partition offsets, so a replay skips what it already holds.

A broker that is down is retried with backoff and a one-line message per attempt; a broker whose log
no longer holds what Delta says was consumed stops the consumer with `BrokerBehind` (see `offsets`).
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError, DeltaError

from ingestion.contract import Contract
from ingestion.delta_append import append_transactions
from ingestion.streaming.dedupe import KeySet, SeqWindows
from ingestion.streaming.messages import (
    QUARANTINE_MESSAGES_SCHEMA,
    CheckedBatch,
    Message,
    MessageRules,
    bronze_stream_schema,
    check_messages,
)
from ingestion.streaming.offsets import app_id, current_epoch, read_offsets
from ingestion.warehouse import Warehouse

log = logging.getLogger("yiwang.stream")

QUARANTINE_MESSAGES = "quarantine/messages"
# How long one connection attempt waits for a broker before the consumer's own backoff takes over.
BOOTSTRAP_TIMEOUT_MS = 3_000
STREAM_BATCHES = "ops/stream_batches"
STREAM_BATCH_SCHEMA = pa.schema(
    [
        pa.field("topic", pa.string(), nullable=False),
        pa.field("consumer_id", pa.string(), nullable=False),
        pa.field("micro_batch", pa.string(), nullable=False),  # `_micro_batch` of the rows it wrote
        pa.field("epoch", pa.int64(), nullable=False),
        pa.field("bronze_version", pa.int64(), nullable=False),
        pa.field("partitions", pa.string(), nullable=False),  # "p:first-last" per partition
        pa.field("messages", pa.int64(), nullable=False),
        pa.field("written", pa.int64(), nullable=False),
        pa.field("duplicates", pa.int64(), nullable=False),
        pa.field("quarantined", pa.int64(), nullable=False),
        pa.field("latency_p50_ms", pa.float64()),  # producer timestamp -> bronze commit, over the rows written
        pa.field("latency_p99_ms", pa.float64()),
        pa.field("latency_max_ms", pa.float64()),
        pa.field("commit_ms", pa.float64(), nullable=False),  # quarantine + bronze commits
        pa.field("after_commit_ms", pa.float64()),  # incidents, events, tickets
        pa.field("rss_mb", pa.float64(), nullable=False),
        pa.field("committed_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)


class BrokerBehind(RuntimeError):
    """The broker's log does not hold what Delta says was consumed: nothing is skipped silently."""


@dataclass
class StreamSpec:
    """What a consumer needs to know about its topic."""

    topic: str
    short_name: str  # iot | hotline | video, as the commands name it
    contract: Contract  # the contract whose fields the message value carries
    bronze_table: str
    group: str
    partitions: int
    dedupe_key: tuple[str, ...]
    rules: Callable[[], MessageRules]  # called per batch: the IoT registry can change while running
    after_commit: Callable[[pl.DataFrame], dict[str, object]] | None = None
    close: Callable[[], None] | None = None  # finishes what after_commit started, when the consumer stops
    # Messages that are not one JSON record each (video frames) bring their own check and bronze schema.
    check: Callable[[Sequence[Message], str, Contract, MessageRules], CheckedBatch] = check_messages
    bronze_schema: pa.Schema | None = None  # default: the contract's columns + the Kafka lineage
    # (new rows, last offset per partition, epoch): writes a derived table, with the same offsets as application
    # transactions, before the bronze commit; a replay must skip the rows that table already holds.
    before_commit: Callable[[pl.DataFrame, dict[int, int], int], None] | None = None


@dataclass
class RunSummary:
    batches: int = 0
    messages: int = 0
    written: int = 0
    duplicates: int = 0
    quarantined: int = 0
    stopped_by: str = "max-seconds"
    post: dict[str, object] = field(default_factory=dict)


def rss_mb() -> float:
    """Resident memory now (Linux /proc), else the peak."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _PartitionState:
    """The dedupe state of one partition, rebuilt from its bronze rows when the partition is assigned."""

    def __init__(self, key: tuple[str, ...]) -> None:
        self.key = key
        self.seq = SeqWindows() if len(key) == 2 else None
        self.ids = KeySet() if len(key) == 1 else None

    def seed(self, rows: pl.DataFrame) -> None:
        if self.seq is not None:
            self.seq.seed(rows[self.key[0]].to_list(), rows[self.key[1]].to_list())
        elif self.ids is not None:
            self.ids.seed(rows[self.key[0]].to_list())

    def admit(self, rows: pl.DataFrame) -> tuple[list[bool], list[int]]:
        if self.seq is not None:
            return self.seq.admit(rows[self.key[0]].to_list(), rows[self.key[1]].to_list())
        assert self.ids is not None
        return self.ids.admit(rows[self.key[0]].to_list()), []


class StreamConsumer:
    """One member of the topic's consumer group; several run side by side, one per partition set."""

    def __init__(
        self,
        spec: StreamSpec,
        warehouse: Warehouse,
        client_options: dict[str, object],
        *,
        batch_seconds: float = 0.5,
        max_batch: int = 5_000,
        consumer_id: str | None = None,
        session_timeout_ms: int = 6_000,
        on_connect: Callable[[], None] | None = None,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        """`on_connect` runs once the broker answers (e.g. creating the topics); a `ConnectionError` or
        `KafkaError` from it counts as the broker being unreachable. `on_retry` hears each retry's message."""
        self.spec = spec
        self.warehouse = warehouse
        self.client_options = client_options
        self.batch_seconds = batch_seconds
        self.max_batch = max_batch
        self.consumer_id = consumer_id or f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.session_timeout_ms = session_timeout_ms
        self.on_connect = on_connect
        self.on_retry = on_retry
        self.schema = spec.bronze_schema or bronze_stream_schema(spec.contract)
        self.epoch = current_epoch(warehouse, spec.topic)
        self._stop = threading.Event()
        self._states: dict[int, _PartitionState] = {}
        self._expected: dict[int, int] = {}  # next offset per assigned partition
        self._unverified: dict = {}  # TopicPartition -> last offset Delta holds, checked after the rebalance
        self._tables: dict[str, DeltaTable] = {}
        self._batches = 0
        self._consumer = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def stop(self, *_: object) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(
        self, max_seconds: float | None = None, on_progress: Callable[[RunSummary], None] | None = None
    ) -> RunSummary:
        """Consume until stopped (SIGTERM, `stop()`) or `max_seconds` have passed."""
        deadline = time.monotonic() + max_seconds if max_seconds else None
        summary = RunSummary()
        consumer = self._connect(deadline)
        if consumer is None:
            summary.stopped_by = "signal" if self._stop.is_set() else "max-seconds (broker unreachable)"
            return summary
        try:
            self._loop(consumer, deadline, summary, on_progress)
        finally:
            consumer.close(autocommit=False)
            if self.spec.close is not None:
                self.spec.close()
        return summary

    def _connect(self, deadline: float | None):
        """A subscribed KafkaConsumer; retried with backoff while the broker is unreachable."""
        from kafka import KafkaConsumer
        from kafka.errors import KafkaError

        delay = 1.0
        attempt = 0
        while not self._stop.is_set() and (deadline is None or time.monotonic() < deadline):
            attempt += 1
            try:
                consumer = KafkaConsumer(
                    group_id=self.spec.group,
                    client_id=self.consumer_id,
                    enable_auto_commit=False,
                    auto_offset_reset="none",
                    session_timeout_ms=self.session_timeout_ms,
                    heartbeat_interval_ms=max(self.session_timeout_ms // 6, 500),
                    max_poll_records=self.max_batch,
                    reconnect_backoff_max_ms=10_000,
                    bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
                    **self.client_options,
                )
            except KafkaError as error:
                self._wait_for_broker(attempt, error, delay)
                delay = min(delay * 2, 30.0)
                continue
            try:
                if self.on_connect is not None:
                    self.on_connect()
            except (KafkaError, ConnectionError) as error:
                consumer.close(autocommit=False)
                self._wait_for_broker(attempt, error, delay)
                delay = min(delay * 2, 30.0)
                continue
            consumer.subscribe([self.spec.topic], listener=_rebalance_listener(self))
            self._consumer = consumer
            return consumer
        return None

    def _wait_for_broker(self, attempt: int, error: Exception, delay: float) -> None:
        servers = ",".join(self.client_options.get("bootstrap_servers") or [])  # type: ignore[call-overload]
        message = f"broker {servers} unreachable (attempt {attempt}: {error}); retrying in {delay:.0f} s"
        log.warning(message)
        if self.on_retry is not None:
            self.on_retry(message)
        self._stop.wait(delay)

    # -- partitions --------------------------------------------------------------------------------

    def _latest(self, table: str) -> DeltaTable | None:
        """`table` at its latest version: one snapshot per table, brought up to date incrementally (opening
        a table replays its log from the last checkpoint: tens of milliseconds a batch, for nothing)."""
        known = self._tables.get(table)
        if known is None:
            if not self.warehouse.exists(table):
                return None
            known = self._tables[table] = self.warehouse.table(table)
        else:
            known.update_incremental()
        return known

    def _bronze(self) -> DeltaTable | None:
        return self._latest(self.spec.bronze_table)

    def assigned(self, consumer, partitions: list) -> None:
        """Seek every newly assigned partition to what Delta holds and rebuild its dedupe state.

        Runs inside kafka-python's rebalance callback, so it makes no network call to the broker: the
        check that the broker still holds those offsets runs in the loop right after (`_verify_log`).
        """
        numbers = [tp.partition for tp in partitions if tp.topic == self.spec.topic]
        if not numbers:
            return
        table = self._bronze()
        offsets = read_offsets(table, self.spec.topic, self.epoch, numbers)
        stored = self._stored_keys(table, numbers)
        for tp in partitions:
            start = offsets.next_offset(tp.partition)
            if start is None:
                consumer.seek_to_beginning(tp)
                self._expected.pop(tp.partition, None)
            else:
                consumer.seek(tp, start)
                self._expected[tp.partition] = start
                self._unverified[tp] = start - 1
            state = _PartitionState(self.spec.dedupe_key)
            state.seed(stored.filter(pl.col("_partition") == tp.partition))
            self._states[tp.partition] = state
        log.info(
            "%s: assigned partitions %s, resuming at %s (epoch %d)",
            self.spec.topic,
            numbers,
            {p: offsets.next_offset(p) or 0 for p in numbers},
            self.epoch,
        )

    def revoked(self, partitions: list) -> None:
        for tp in partitions:
            self._states.pop(tp.partition, None)
            self._expected.pop(tp.partition, None)

    def _stored_keys(self, table: DeltaTable | None, partitions: list[int]) -> pl.DataFrame:
        columns = [*self.spec.dedupe_key, "_partition"]
        if table is None:
            return pl.DataFrame(schema={c: pl.String for c in self.spec.dedupe_key} | {"_partition": pl.Int64})
        rows = table.to_pyarrow_dataset().to_table(
            columns=columns,
            filter=(ds.field("_topic") == self.spec.topic) & ds.field("_partition").isin(partitions),
        )
        frame = pl.from_arrow(rows)
        assert isinstance(frame, pl.DataFrame)
        return frame

    def _verify_log(self, consumer) -> None:
        """Raise `BrokerBehind` when the broker no longer holds the last offset Delta recorded for a newly
        assigned partition."""
        pending = {tp: last for tp, last in self._unverified.items() if tp.partition in self._states}
        self._unverified.clear()
        if not pending:
            return
        behind = {}
        ends = consumer.end_offsets(list(pending))
        for tp, last in pending.items():
            end = ends.get(tp)
            if end is not None and end > last:
                continue
            if self._probe(tp, last):  # end offsets can lag (STACK.md): ask for the record itself
                continue
            behind[tp.partition] = (last, end)
        if behind:
            where = "; ".join(
                f"partition {p}: Delta holds up to offset {last}, the broker's log ends at {end}"
                for p, (last, end) in sorted(behind.items())
            )
            raise BrokerBehind(
                f"{self.spec.topic}: the broker does not hold what was already consumed ({where}). An ephemeral "
                "broker that restarted comes back empty. Nothing was skipped or written. Either point "
                "KAFKA_BOOTSTRAP_SERVERS at the broker that holds the log, or accept the new log with "
                f"`yiwang stream reset {self.spec.short_name} --reason '...'` (consumption restarts at the "
                "broker's beginning; duplicates are still dropped)."
            )

    def _probe(self, tp, offset: int) -> bool:
        """Whether the broker returns the record at `offset` (a short fetch outside the group)."""
        from kafka import KafkaConsumer

        probe = KafkaConsumer(enable_auto_commit=False, auto_offset_reset="none", **self.client_options)
        try:
            probe.assign([tp])
            probe.seek(tp, offset)
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                for records in probe.poll(timeout_ms=500).values():
                    if any(r.offset == offset for r in records):
                        return True
                    if records:
                        return False
            return False
        except Exception:  # an out-of-range fetch is the answer "not held"
            return False
        finally:
            probe.close(autocommit=False)

    # -- the loop ----------------------------------------------------------------------------------

    def _loop(self, consumer, deadline: float | None, summary: RunSummary, on_progress) -> None:
        from kafka.errors import KafkaError, OffsetOutOfRangeError

        pending: list = []
        batch_started = time.monotonic()
        idle_since = time.monotonic()
        while True:
            if self._stop.is_set():
                summary.stopped_by = "signal"
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            try:
                polled = consumer.poll(timeout_ms=100, max_records=self.max_batch - len(pending))
            except OffsetOutOfRangeError as error:
                raise BrokerBehind(
                    f"{self.spec.topic}: the broker has no records at the offsets Delta says come next ({error}); "
                    f"see `yiwang stream status` and `yiwang stream reset {self.spec.short_name} --reason '...'`"
                ) from None
            except KafkaError as error:
                log.warning("%s: broker error %s; retrying", self.spec.topic, error)
                self._stop.wait(1.0)
                continue
            self._verify_log(consumer)
            for records in polled.values():
                pending.extend(records)
            if pending:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > 15:
                self._report_idle(consumer)
                idle_since = time.monotonic()
            full = len(pending) >= self.max_batch
            if pending and (full or time.monotonic() - batch_started >= self.batch_seconds):
                self._write(pending, summary)
                pending = []
                batch_started = time.monotonic()
                if on_progress is not None:
                    on_progress(summary)
            elif not pending:
                batch_started = time.monotonic()
        if pending and summary.stopped_by == "signal":
            self._write(pending, summary)  # a clean stop writes what it holds

    def _report_idle(self, consumer) -> None:
        from kafka.errors import KafkaError

        try:
            consumer.end_offsets(list(consumer.assignment()) or [])
        except KafkaError as error:
            log.warning(
                "%s: broker %s unreachable (%s); kafka-python reconnects with backoff (at most 10 s)",
                self.spec.topic,
                self.client_options.get("bootstrap_servers"),
                error,
            )

    def _write(self, records: list, summary: RunSummary) -> None:
        messages = [
            Message(r.partition, r.offset, r.key, r.value, r.timestamp, tuple(r.headers or ()))
            for r in records
            if r.partition in self._states
        ]
        if not messages:
            return
        self._check_continuity(messages)
        checked = self.spec.check(messages, self.spec.topic, self.spec.contract, self.spec.rules())
        new_rows, duplicates = self._drop_duplicates(checked.good)
        ranges = self._offset_ranges(messages)
        last = {partition: offset for partition, (_, offset) in ranges.items()}
        self._batches += 1
        micro_batch = f"{self.consumer_id}#{self._batches}"
        new_rows = new_rows.with_columns(
            pl.lit(datetime.now(UTC)).cast(pl.Datetime("us", "UTC")).alias("_ingested_at"),
            pl.lit(micro_batch).alias("_micro_batch"),
        )
        started = time.perf_counter()
        try:
            self._write_quarantine(checked, last)
            if self.spec.before_commit is not None and new_rows.height:
                self.spec.before_commit(new_rows, last, self.epoch)
            version = self._commit_bronze(new_rows, last)
        except (CommitFailedError, DeltaError) as error:
            log.warning(
                "%s: another consumer wrote partitions %s (%s); re-reading Delta", self.spec.topic, sorted(last), error
            )
            self._reassign(sorted(last))
            return
        committed_at = datetime.now(UTC)
        commit_ms = (time.perf_counter() - started) * 1000
        for partition, offset in last.items():
            self._expected[partition] = offset + 1
        self._commit_kafka(last)
        after_ms = None
        if self.spec.after_commit is not None and new_rows.height:
            started = time.perf_counter()
            summary.post = self.spec.after_commit(new_rows)
            after_ms = (time.perf_counter() - started) * 1000
        figures = {"micro_batch": micro_batch, "commit_ms": commit_ms, "after_commit_ms": after_ms}
        try:
            self._record_batch(messages, new_rows, duplicates, checked, version, committed_at, ranges, figures)
        except DeltaError as error:  # figures only: the batch itself is committed
            log.warning("%s: ops/stream_batches row of %s not written: %s", self.spec.topic, micro_batch, error)
        summary.batches += 1
        summary.messages += len(messages)
        summary.written += new_rows.height
        summary.duplicates += duplicates
        summary.quarantined += checked.refused

    def _check_continuity(self, messages: list[Message]) -> None:
        """A record below the offset Delta says comes next means the broker's log changed under us."""
        for message in messages:
            expected = self._expected.get(message.partition)
            if expected is not None and message.offset < expected:
                raise BrokerBehind(
                    f"{self.spec.topic} partition {message.partition}: the broker sent offset {message.offset} "
                    f"after Delta recorded offsets up to {expected - 1}: its log was replaced. Nothing was "
                    f"written. Accept the new log with `yiwang stream reset {self.spec.short_name} --reason '...'`."
                )

    @staticmethod
    def _offset_ranges(messages: list[Message]) -> dict[int, tuple[int, int]]:
        """Per partition, the first and last offset of the batch."""
        ranges: dict[int, tuple[int, int]] = {}
        for message in messages:
            first, last = ranges.get(message.partition, (message.offset, message.offset))
            ranges[message.partition] = (min(first, message.offset), max(last, message.offset))
        return ranges

    def _drop_duplicates(self, good: pl.DataFrame) -> tuple[pl.DataFrame, int]:
        if good.height == 0:
            return good, 0
        keep = [False] * good.height
        positions = pl.Series(range(good.height))
        for partition, state in self._states.items():
            mask = good["_partition"] == partition
            if not mask.any():
                continue
            index = positions.filter(mask).to_list()
            new, older = state.admit(good[index])
            if older:
                new = self._resolve_older(good[index], new, older, state)
            for position, fresh in zip(index, new, strict=True):
                keep[position] = fresh
        kept = good.filter(pl.Series(keep))
        return kept, good.height - kept.height

    def _resolve_older(
        self, rows: pl.DataFrame, new: list[bool], older: list[int], state: _PartitionState
    ) -> list[bool]:
        """Records older than the in-memory window: look them up in bronze."""
        candidates = rows[older].select(self.spec.dedupe_key)
        table = self._bronze()
        stored = pl.DataFrame(schema=candidates.schema)
        if table is not None:
            frame = pl.from_arrow(table.to_pyarrow_table(columns=list(self.spec.dedupe_key)))
            assert isinstance(frame, pl.DataFrame)
            stored = frame.join(candidates.unique(), on=list(self.spec.dedupe_key), how="semi")
        seen = {tuple(r) for r in stored.iter_rows()}
        result = list(new)
        for position in older:
            key = tuple(rows[position].select(self.spec.dedupe_key).row(0))
            if key not in seen:
                result[position] = True
                seen.add(key)
        if state.seq is not None:
            state.seq.mark(rows[self.spec.dedupe_key[0]].to_list(), rows[self.spec.dedupe_key[1]].to_list())
        return result

    def _write_quarantine(self, checked: CheckedBatch, last: dict[int, int]) -> None:
        rows = checked.quarantine
        if rows.height == 0:
            return
        uri = self.warehouse.uri(QUARANTINE_MESSAGES)
        table = self._latest(QUARANTINE_MESSAGES)
        partitions = sorted(set(rows["partition"].to_list()))
        written = read_offsets(table, self.spec.topic, self.epoch, partitions).last
        fresh = pl.lit(True)
        for partition, offset in written.items():
            if offset is not None:
                fresh = fresh & ~((pl.col("partition") == partition) & (pl.col("offset") <= offset))
        rows = rows.filter(fresh)
        if rows.height == 0:
            return
        for message_partition, offset, rule, detail in rows.select("partition", "offset", "rule", "detail").iter_rows():
            log.warning(
                "%s partition %d offset %d refused (%s): %s", self.spec.topic, message_partition, offset, rule, detail
            )
        transactions = {app_id(self.spec.topic, self.epoch, p): last[p] for p in partitions}
        append_transactions(
            uri,
            rows,
            QUARANTINE_MESSAGES_SCHEMA,
            transactions=transactions,
            table=table,
            storage_options=self.warehouse.options(),
        )

    def _commit_bronze(self, rows: pl.DataFrame, last: dict[int, int]) -> int:
        table = self._bronze()
        if table is not None:
            # Our own view must match Delta's: a newer commit of these partitions means another owner.
            current = read_offsets(table, self.spec.topic, self.epoch, sorted(last)).last
            for partition, offset in current.items():
                expected = self._expected.get(partition)
                if offset is not None and (expected is None or offset + 1 != expected):
                    raise CommitFailedError(f"partition {partition} is at offset {offset} in Delta")
        transactions = {app_id(self.spec.topic, self.epoch, p): offset for p, offset in last.items()}
        append_transactions(
            self.warehouse.uri(self.spec.bronze_table),
            rows.select(self.schema.names),
            self.schema,
            transactions=transactions,
            table=table,
            storage_options=self.warehouse.options(),
        )
        return self._bronze().version()  # type: ignore[union-attr]

    def _reassign(self, partitions: list[int]) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        owned = [tp for tp in consumer.assignment() if tp.partition in partitions]
        self.revoked(owned)
        self.assigned(consumer, owned)

    def _record_batch(self, messages, rows, duplicates, checked, version, committed_at, ranges, figures) -> None:
        """One row of ops/stream_batches: what the micro-batch held and how long it took to be visible."""
        committed = pl.lit(committed_at).cast(pl.Datetime("us", "UTC"))
        waited = rows.select(((committed - pl.col("_kafka_ts")).dt.total_microseconds() / 1000).alias("ms"))
        latency = waited["ms"].drop_nulls()
        row = {
            "topic": self.spec.topic,
            "consumer_id": self.consumer_id,
            "micro_batch": figures["micro_batch"],
            "epoch": self.epoch,
            "bronze_version": version,
            "partitions": " ".join(f"{p}:{first}-{last}" for p, (first, last) in sorted(ranges.items())),
            "messages": len(messages),
            "written": rows.height,
            "duplicates": duplicates,
            "quarantined": checked.refused,
            "latency_p50_ms": float(latency.median()) if latency.len() else None,  # type: ignore[arg-type]
            "latency_p99_ms": float(latency.quantile(0.99)) if latency.len() else None,  # type: ignore[arg-type]
            "latency_max_ms": float(latency.max()) if latency.len() else None,  # type: ignore[arg-type]
            "commit_ms": round(figures["commit_ms"], 1),
            "after_commit_ms": round(figures["after_commit_ms"], 1) if figures["after_commit_ms"] else None,
            "rss_mb": round(rss_mb(), 1),
            "committed_at": committed_at,
        }
        append_transactions(
            self.warehouse.uri(STREAM_BATCHES),
            pa.Table.from_pylist([row], schema=STREAM_BATCH_SCHEMA),
            STREAM_BATCH_SCHEMA,
            transactions={},
            table=self._latest(STREAM_BATCHES),
            storage_options=self.warehouse.options(),
        )

    def _commit_kafka(self, last: dict[int, int]) -> None:
        """Kafka's group offsets, for tools that read them; Delta's are the ones that count."""
        from kafka import TopicPartition
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata

        if self._consumer is None:
            return
        offsets = {TopicPartition(self.spec.topic, p): OffsetAndMetadata(o + 1, "", -1) for p, o in last.items()}
        try:
            self._consumer.commit_async(offsets)
        except KafkaError as error:
            log.debug("kafka offset commit skipped: %s", error)


def _rebalance_listener(owner: StreamConsumer):
    """kafka-python's rebalance listener, forwarding to the consumer."""
    from kafka import ConsumerRebalanceListener

    class Rebalance(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked) -> None:
            owner.revoked(list(revoked))

        def on_partitions_assigned(self, assigned) -> None:
            if owner._consumer is not None:
                owner.assigned(owner._consumer, list(assigned))

    return Rebalance()
