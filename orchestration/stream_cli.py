"""`yiwang broker`, `yiwang simulate` and `yiwang stream`: the streaming side of the command line.

Exit codes as elsewhere: 0 done, 2 a bad argument, 4 the stream cannot go on (no broker, or a broker
whose log no longer holds what Delta says was consumed). Library logs go to `<home>/logs/stream.log`;
the terminal shows progress lines and a summary. Times a person reads are China Standard Time.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ingestion.keys import CST
from orchestration.cli_output import existing_warehouse
from orchestration.cli_output import fail as _fail

console = Console()
STREAM_FAILED = 4

broker_app = typer.Typer(
    help="The local Kafka-compatible broker (Tansu, ephemeral) for dev mode.", no_args_is_help=True
)
simulate_app = typer.Typer(help="Produce realistic traffic to the stream topics.", no_args_is_help=True)
stream_app = typer.Typer(help="Consume the stream topics into bronze exactly once.", no_args_is_help=True)


def _settings():
    from ingestion.settings import Settings

    return Settings.from_env()


def _log_to_file(settings) -> Path:
    """Library logs (kafka-python, delta-rs, ours) to a file; the terminal keeps progress and summaries."""
    path = settings.home / "logs" / "stream.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("kafka").setLevel(logging.WARNING)
    return path


def _kafka(settings):
    from ingestion.streaming.settings import BrokerUnavailable
    from orchestration.streaming import kafka_settings

    try:
        return kafka_settings(settings)
    except (BrokerUnavailable, ValueError) as error:
        raise _fail(str(error), STREAM_FAILED) from None


def _warehouse(settings):
    """The warehouse the streams belong to; a local one must exist (a batch run creates it and the registry)."""
    return existing_warehouse(settings.warehouse)


# -- broker ---------------------------------------------------------------------------------------------


@broker_app.command("start")
def broker_start(
    port: int | None = typer.Option(None, "--port", help="Loopback port (default: a free one)."),
    storage: str = typer.Option("memory://tansu/", "--storage", help="memory://tansu/ or s3://bucket/ (AWS_* env)."),
) -> None:
    """Start Tansu on 127.0.0.1 (ephemeral: memory-only) and create the project's topics."""
    import os

    from ingestion.streaming.broker import BrokerError, TopicError, ensure_topics
    from ingestion.streaming.settings import KafkaSettings
    from orchestration.streaming import local_broker

    settings = _settings()
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        raise _fail("KAFKA_BOOTSTRAP_SERVERS is set: the platform uses that cluster; unset it for a local broker")
    broker = local_broker(settings)
    try:
        state = broker.start(port=port, storage=storage)
        created = ensure_topics(KafkaSettings.from_env(broker), _topics())
    except (BrokerError, TopicError, ValueError) as error:
        raise _fail(str(error), STREAM_FAILED) from None
    console.print(
        f"[green]broker[/] 127.0.0.1:{state.port} (pid {state.pid}, storage {state.storage}) "
        "[yellow]EPHEMERAL[/]: memory-only unless on s3://; a restart loses its topics and offsets."
    )
    console.print(f"topics: {', '.join(_topic_line(t) for t in _topics())}" + (f" (created {len(created)})"))


def _consumed_stream(stream: str):
    """The topic of `iot`, `hotline` or `video`, the streams these commands consume."""
    from orchestration.streaming import topic_named

    if stream not in ("iot", "hotline", "video"):
        raise _fail(f"unknown stream {stream!r}: use iot, hotline or video")
    return topic_named(stream)


def _topics():
    from ingestion.streaming.topics import load_topics

    return list(load_topics().values())


def _topic_line(topic) -> str:
    return f"{topic.name} ({topic.partitions} partitions)"


@broker_app.command("stop")
def broker_stop() -> None:
    """Stop the local broker this project started (and nothing else)."""
    from orchestration.streaming import local_broker

    stopped = local_broker(_settings()).stop()
    console.print("broker stopped" if stopped else "no local broker was running")


@broker_app.command("status")
def broker_status() -> None:
    """Whether the local broker runs, where, and on what storage."""
    from orchestration.streaming import local_broker

    state = local_broker(_settings()).status()
    if state is None:
        console.print("no local broker running ([bold]yiwang broker start[/] starts one)")
        raise typer.Exit(1)
    console.print(
        f"broker 127.0.0.1:{state.port} pid {state.pid} storage {state.storage} since {state.started_at} "
        "[yellow](ephemeral)[/]"
    )


# -- simulators -----------------------------------------------------------------------------------------


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if value <= 0:
            raise _fail(f"--{name.replace('_', '-')} must be positive (got {value})")


@simulate_app.command("iot")
def simulate_iot(
    devices: int = typer.Option(0, "--devices", help="How many registry devices report (0 = all active ones)."),
    rate: float = typer.Option(20.0, "--rate", help="Messages per second, all devices together."),
    duration: float = typer.Option(60.0, "--duration", help="Seconds to produce."),
    time_scale: float = typer.Option(1.0, "--time-scale", help="Simulated seconds per wall-clock second."),
    seed: int = typer.Option(0, "--seed"),
    record: Path | None = typer.Option(None, "--record", help="Write every message sent, with its kind (JSONL)."),
) -> None:
    """Sensor readings from the registry's devices: noise, a rain event, quiet devices, duplicates, late
    and malformed messages."""
    from ingestion.streaming.simulate import IotSimulator, load_devices
    from orchestration.streaming import read_devices

    _check_positive(rate=rate, duration=duration, time_scale=time_scale)
    if devices < 0:
        raise _fail(f"--devices must be 0 (every active device) or more (got {devices})")
    settings = _settings()
    kafka = _kafka(settings)
    registry = load_devices(read_devices(_warehouse(settings)))
    if not registry:
        raise _fail("the sensor registry is empty: run `yiwang run` first (it loads yingji.sensor_devices)")
    if devices > len(registry):
        raise _fail(f"--devices {devices}: the registry has {len(registry)} active devices; register more or lower it")
    chosen = registry[:devices] if devices else registry
    simulator = IotSimulator(chosen, rate, duration, seed=seed, time_scale=time_scale)
    _produce(settings, kafka, "iot", simulator.messages(), record, f"{len(chosen)} devices at {rate:g} msg/s")


@simulate_app.command("hotline")
def simulate_hotline(
    rate: float = typer.Option(1.0, "--rate", help="Appeals per second."),
    duration: float = typer.Option(60.0, "--duration", help="Seconds to produce."),
    seed: int = typer.Option(0, "--seed"),
    record: Path | None = typer.Option(None, "--record", help="Write every message sent, with its kind (JSONL)."),
) -> None:
    """Hotline appeals in everyday words (the corpus's training texts), at places of the grid registry."""
    _check_positive(rate=rate, duration=duration)
    settings = _settings()
    kafka = _kafka(settings)
    simulator = _hotline_simulator(_warehouse(settings), rate, duration, seed)
    _produce(settings, kafka, "hotline", simulator.messages(), record, f"{rate:g} appeals/s")


@simulate_app.command("video")
def simulate_video(
    cameras: int = typer.Option(4, "--cameras", help="How many cameras send (0 = every online camera)."),
    fps: float = typer.Option(1.0, "--fps", help="Frames per second per camera."),
    duration: float = typer.Option(60.0, "--duration", help="Seconds to produce."),
    seed: int = typer.Option(0, "--seed"),
    record: Path | None = typer.Option(None, "--record", help="Write every frame sent, with its kind (JSONL)."),
) -> None:
    """Camera frames drawn live (riders with and without helmets, overflowing bins, stalls), as JPEG with headers
    ts and frame_seq: cameras of zhengshu.video_cameras when loaded, else synthetic ids; a few corrupt frames,
    frames with a missing or bad header, and resent duplicates."""
    from demo_data.simulate_video import VideoSimulator

    _check_positive(fps=fps, duration=duration)
    if cameras < 0:
        raise _fail(f"--cameras must be 0 (every online camera) or more (got {cameras})")
    settings = _settings()
    kafka = _kafka(settings)
    chosen, where = _video_cameras(settings, cameras)
    try:
        simulator = VideoSimulator(chosen, fps, duration, seed=seed)
    except ValueError as error:
        raise _fail(str(error)) from None
    what = f"{len(chosen)} cameras ({where}) at {fps:g} frames/s each"
    _produce(settings, kafka, "video", simulator.messages(), record, what)


def _video_cameras(settings, count: int):
    """Online cameras of silver zhengshu.video_cameras when the warehouse has them, else synthetic ones."""
    import polars as pl

    from demo_data.simulate_video import load_cameras, synthetic_cameras
    from ingestion.warehouse import Warehouse
    from ml.algorithms import load_algorithms
    from thematic_libs.urban.events import read_silver

    known = tuple(load_algorithms())
    registry: list = []
    warehouse = Warehouse.at(settings.warehouse)
    try:
        frame = pl.from_arrow(read_silver(warehouse, "zhengshu.video_cameras", ["camera_id", "algorithms", "status"]))
        assert isinstance(frame, pl.DataFrame)
        registry = load_cameras(frame, known)
    except (OSError, ValueError) as error:  # no local warehouse yet: synthetic cameras
        logging.getLogger("yiwang.stream").info("camera registry not read: %s", error)
    if registry:
        if count > len(registry):
            raise _fail(f"--cameras {count}: the registry has {len(registry)} online cameras; lower it")
        return (registry[:count] if count else registry), "zhengshu.video_cameras"
    return synthetic_cameras(count or 4, known), "synthetic ids: zhengshu.video_cameras is not loaded"


def _hotline_simulator(warehouse, rate: float, duration: float, seed: int = 0):
    """Appeals at the places of the grid registry, in its district (most grids')."""
    import polars as pl

    from demo_data.events import corpus_texts
    from ingestion.streaming.simulate import HotlineSimulator
    from thematic_libs.urban.events import read_grids

    grids = pl.from_arrow(read_grids(warehouse))
    assert isinstance(grids, pl.DataFrame)
    if grids.height == 0:
        raise _fail("the grid registry is empty: run `yiwang run` first (it loads zhengshu.grid_registry)")
    district = str(grids["district_code"].mode().first())
    return HotlineSimulator(grids, district, rate, duration, texts=corpus_texts(), seed=seed)


def _produce(settings, kafka, short_name: str, messages, record: Path | None, what: str) -> None:
    from ingestion.streaming.simulate import produce
    from orchestration.streaming import topic_named

    _log_to_file(settings)
    topic = topic_named(short_name)
    console.print(f"producing to {topic.name} on {kafka.describe()}: {what}")
    handle = open(record, "w", encoding="utf-8") if record else None  # noqa: SIM115 - closed below
    try:
        stats = produce(kafka.client_options(), topic.name, messages, handle)
    except Exception as error:  # kafka-python raises several unrelated types for an unreachable broker
        raise _fail(f"producing to {topic.name} failed: {error}", STREAM_FAILED) from None
    finally:
        if handle is not None:
            handle.close()
    kinds = ", ".join(f"{kind} {count:,}" for kind, count in sorted(stats.by_kind.items()))
    console.print(f"[green]sent[/] {stats.sent:,} messages ({kinds})")


# -- consumers ------------------------------------------------------------------------------------------


@stream_app.command("run")
def stream_run(
    stream: str = typer.Argument(..., help="iot, hotline or video"),
    max_seconds: float | None = typer.Option(None, "--max-seconds", help="Stop after this long (default: SIGTERM)."),
    batch_seconds: float = typer.Option(0.5, "--batch-seconds", help="Longest wait before a micro-batch is written."),
    derive: bool = typer.Option(True, "--derive/--no-derive", help="Incidents, events and tickets after each batch."),
) -> None:
    """Consume one topic into bronze (one member of its consumer group; run several side by side).

    `video` also scores every new frame with the production model of each algorithm into silver/video/detections
    (in the same exactly-once way: a replayed frame is neither lost nor scored twice)."""
    _consumed_stream(stream)
    if max_seconds is not None and max_seconds <= 0:
        raise _fail("--max-seconds must be positive")
    _check_positive(batch_seconds=batch_seconds)
    summary = _consume(stream, max_seconds, batch_seconds, derive)
    console.print(
        f"[green]stopped[/] ({summary.stopped_by}): {summary.batches:,} batches, {summary.messages:,} messages, "
        f"{summary.written:,} written, {summary.duplicates:,} duplicates dropped, {summary.quarantined:,} "
        f"quarantined {json.dumps(summary.post, ensure_ascii=False) if summary.post else ''}"
    )


def _consume(stream: str, max_seconds: float | None, batch_seconds: float, derive: bool, quiet: bool = False):
    from ingestion.streaming.broker import TopicError, ensure_topics
    from ingestion.streaming.consumer import BrokerBehind, StreamConsumer
    from ingestion.streaming.settings import BrokerUnavailable
    from orchestration.streaming import MAX_BATCH, stream_spec, topic_named

    settings = _settings()
    log_file = _log_to_file(settings)
    kafka = _kafka(settings)
    warehouse = _warehouse(settings)
    topic = topic_named(stream)
    spec = _stream_spec(stream_spec, topic, warehouse, settings, derive)

    def create_topics() -> None:
        try:
            ensure_topics(kafka, [topic])
        except BrokerUnavailable as error:
            raise ConnectionError(str(error)) from None

    def retrying(message: str) -> None:
        if not quiet:
            console.print(f"[yellow]{datetime.now(CST):%H:%M:%S} {message}[/]", highlight=False)

    consumer = StreamConsumer(
        spec,
        warehouse,
        kafka.client_options(),
        batch_seconds=batch_seconds,
        max_batch=MAX_BATCH.get(stream, 5_000),
        on_connect=create_topics,
        on_retry=retrying,
    )
    if threading.current_thread() is threading.main_thread():
        consumer.install_signal_handlers()
    if not quiet:
        console.print(f"consuming {topic.name} from {kafka.describe()} into {topic.bronze_table}; logs: {log_file}")
        describe = getattr(spec.after_commit, "describe", None)
        if describe is not None:
            console.print(describe(), highlight=False)
    last = [time.monotonic()]

    def progress(summary) -> None:
        if quiet or time.monotonic() - last[0] < 10:
            return
        last[0] = time.monotonic()
        console.print(
            f"{datetime.now(CST):%H:%M:%S} {topic.name}: {summary.messages:,} messages, {summary.written:,} "
            f"written, {summary.duplicates:,} duplicates, {summary.quarantined:,} quarantined"
        )

    try:
        summary = consumer.run(max_seconds=max_seconds, on_progress=progress)
    except BrokerBehind as error:
        raise _fail(str(error), STREAM_FAILED) from None
    except TopicError as error:
        raise _fail(str(error), STREAM_FAILED) from None
    if summary.stopped_by.startswith("max-seconds (broker unreachable"):
        message = f"no broker answered at {kafka.bootstrap} within --max-seconds; nothing was consumed"
        raise _fail(message, STREAM_FAILED)
    return summary


def _stream_spec(build, topic, warehouse, settings, derive: bool):
    """The consumer's spec; a video consumer whose model registry cannot be read stops here with its reason."""
    if topic.short_name != "video":
        return build(topic, warehouse, settings, derive=derive)
    from ml.registry import RegistryError

    try:
        return build(topic, warehouse, settings, derive=derive)
    except RegistryError as error:
        raise _fail(str(error), STREAM_FAILED) from None
    except Exception as error:  # MLflow's own errors (a tracking server that does not answer, ...)
        logging.getLogger("yiwang.stream").exception("video: the model registry could not be read")
        message = f"the model registry could not be read ({type(error).__name__}: {str(error)[:300]}); see the log"
        raise _fail(message, STREAM_FAILED) from None


@stream_app.command("status")
def stream_status_command() -> None:
    """Per topic-partition: the offset in Delta, the broker's end, the lag, quarantined in the last hour."""
    from ingestion.streaming.settings import BrokerUnavailable
    from ingestion.streaming.status import stream_status
    from orchestration.streaming import kafka_settings

    settings = _settings()
    _log_to_file(settings)
    warehouse = _warehouse(settings)
    try:
        kafka = kafka_settings(settings)
    except BrokerUnavailable as error:
        kafka = None
        console.print(f"[yellow]{error}[/] (broker columns left empty)")
    from rich import box
    from rich.table import Column

    table = Table(
        Column("topic", no_wrap=True),
        Column("part.", justify="right"),
        Column("epoch", justify="right"),
        Column("in Delta", justify="right"),
        Column("broker end", justify="right"),
        Column("lag", justify="right"),
        Column("bad (1 h)", justify="right"),
        box=box.SIMPLE_HEAD,
        caption="in Delta: the last offset committed to bronze; bad: messages quarantined in the last hour",
    )
    for topic in _topics():
        for row in stream_status(warehouse, topic, kafka):
            table.add_row(
                row.topic,
                str(row.partition),
                str(row.epoch),
                "-" if row.delta_offset is None else f"{row.delta_offset:,}",
                "?" if row.broker_end is None else f"{row.broker_end:,}",
                "?" if row.lag is None else f"{row.lag:,}",
                f"{row.quarantined_last_hour:,}",
            )
    console.print(table)


@stream_app.command("reset")
def stream_reset(
    stream: str = typer.Argument(..., help="iot, hotline or video"),
    reason: str = typer.Option(..., "--reason", help="Why the broker's new log is accepted (kept for the audit)."),
    by: str = typer.Option("", "--by", help="Who decides (default: the login name)."),
) -> None:
    """Accept a broker log that no longer holds what Delta consumed: start a new epoch from its beginning."""
    import getpass

    from ingestion.streaming.offsets import start_new_epoch

    topic = _consumed_stream(stream)
    if not reason.strip():
        raise _fail("--reason must say why (it is kept in ops/stream_epochs)")
    settings = _settings()
    epoch, before = start_new_epoch(
        _warehouse(settings), topic.bronze_table, topic.name, topic.partitions, by or getpass.getuser(), reason
    )
    given_up = ", ".join(f"{p}:{o}" for p, o in before.items() if o is not None) or "none"
    console.print(f"{topic.name}: epoch {epoch} starts at the broker's beginning (offsets given up: {given_up})")


@stream_app.command("demo")
def stream_demo(
    seconds: float = typer.Option(60.0, "--seconds", help="How long the simulators produce."),
    rate: float = typer.Option(40.0, "--rate", help="IoT messages per second."),
    time_scale: float = typer.Option(120.0, "--time-scale", help="Simulated seconds per second (rain comes and goes)."),
) -> None:
    """The streaming path on the embedded default: broker, simulators, consumers, incidents, tickets."""
    from ingestion.streaming.broker import ensure_topics
    from ingestion.streaming.settings import KafkaSettings
    from ingestion.streaming.simulate import IotSimulator, load_devices, produce
    from orchestration.streaming import local_broker, read_devices

    _check_positive(seconds=seconds, rate=rate, time_scale=time_scale)
    settings = _settings()
    log_file = _log_to_file(settings)
    warehouse = _warehouse(settings)
    devices = load_devices(read_devices(warehouse))
    if not devices:
        raise _fail("the warehouse has no sensor registry yet: run `make run` (or `yiwang run`) first")
    broker = local_broker(settings)
    started_here = broker.status() is None
    state = broker.start()
    kafka = KafkaSettings.from_env(broker)
    ensure_topics(kafka, _topics())
    console.print(f"[bold]broker[/] 127.0.0.1:{state.port} [yellow](ephemeral)[/]; logs: {log_file}")
    iot = IotSimulator(devices, rate, seconds, time_scale=time_scale)
    hotline = _hotline_simulator(warehouse, 0.5, seconds)
    results: dict[str, object] = {}

    def consume(stream: str) -> None:
        results[stream] = _consume(stream, seconds + 15, 0.5, True, quiet=True)

    threads = [threading.Thread(target=consume, args=(s,), daemon=True) for s in ("iot", "hotline")]
    producers = [
        threading.Thread(target=produce, args=(kafka.client_options(), "iot.sensor-readings", iot.messages())),
        threading.Thread(target=produce, args=(kafka.client_options(), "hotline.appeals", hotline.messages())),
    ]
    try:
        for thread in threads + producers:
            thread.start()
        for thread in producers:
            thread.join()
        console.print("simulators done; consumers finishing")
        for thread in threads:
            thread.join()
    finally:
        if started_here:
            broker.stop()
    _print_demo_summary(warehouse, results)


def _print_demo_summary(warehouse, results: dict[str, object]) -> None:
    import polars as pl

    for stream, summary in results.items():
        console.print(
            f"{stream}: {summary.messages:,} messages, {summary.written:,} written, "  # type: ignore[attr-defined]
            f"{summary.duplicates:,} duplicates dropped, {summary.quarantined:,} quarantined"  # type: ignore[attr-defined]
        )
    from thematic_libs.emergency.alerts import INCIDENTS

    if warehouse.exists(INCIDENTS):
        incidents = pl.from_arrow(warehouse.table(INCIDENTS).to_pyarrow_table())
        assert isinstance(incidents, pl.DataFrame)
        counts = incidents.group_by("status", "severity").len().sort("status", "severity").rows()
        console.print(f"incidents: {incidents.height} ({', '.join(f'{s}/{v}: {n}' for s, v, n in counts)})")
    from thematic_libs.dispatch.store import TICKETS

    if warehouse.exists(TICKETS):
        tickets = pl.from_arrow(warehouse.table(TICKETS).to_pyarrow_table())
        assert isinstance(tickets, pl.DataFrame)
        iot = tickets.filter(pl.col("source") == "iot_alert")
        table = Table("ticket", "priority", "status", "title", title=f"{iot.height} IoT tickets")
        for row in iot.sort("created_at").head(12).iter_rows(named=True):
            table.add_row(row["ticket_id"], row["priority"], row["status"], row["title"])
        console.print(table)
    console.print("quarantined messages: quarantine/messages; per-batch figures: ops/stream_batches")
