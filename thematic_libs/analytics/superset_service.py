"""Superset for analysts: its environment, secrets, server process and REST API, as yiwang runs them.

- **Its own environment.** Superset pins SQLAlchemy < 2, pandas 2.1, numpy < 2 and pyarrow < 19
  (../shared/STACK.md), so it lives in `.venv-superset` (the Makefile builds it from
  `superset-requirements.txt`, duckdb pinned to the main environment's version); yiwang drives it through
  subprocesses and HTTP, never imports it.
- **Secrets** (the admin password and Flask's SECRET_KEY) are generated on the first start into
  `<home>/superset/` (mode 600, never committed), unless YIWANG_SUPERSET_ADMIN_PASSWORD /
  YIWANG_SUPERSET_SECRET_KEY give them.
- **The server** is gunicorn on 127.0.0.1, started detached in its own session and recorded in
  `<home>/superset/superset.json`; `stop` signals only that recorded process (after /proc shows it is still
  that gunicorn on that port), so nothing else is ever killed. Its output goes to `<home>/logs/superset.log`.
- **The API**: a form-less login (JWT) plus the CSRF token, then the asset import and export endpoints.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import requests

LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 8088
DEFAULT_WORKERS = 2
ADMIN_USER = "admin"
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 20.0
SETUP_TIMEOUT_S = 600.0
STATE_FILE = "superset.json"
SETUP_STAMP = "setup.json"
REPO = Path(__file__).resolve().parents[2]
CONFIG_FILE = Path(__file__).with_name("superset_config.py")
SETUP_SCRIPT = Path(__file__).with_name("superset_setup.py")
REQUIREMENTS = Path(__file__).with_name("superset-requirements.txt")


class SupersetError(RuntimeError):
    """Superset could not be set up, started, stopped or reached; the message says what to do."""


class SupersetMissing(SupersetError):
    """Superset's environment is not installed (a missing prerequisite, not a failure)."""


# --- where things are ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SupersetPaths:
    """Superset's files under the platform's home: state, secrets, metadata database, caches; the log."""

    home: Path  # <YIWANG_HOME>
    venv: Path

    @classmethod
    def for_home(cls, home: Path, venv: Path | None = None) -> SupersetPaths:
        chosen = venv or Path(os.environ.get("YIWANG_SUPERSET_VENV", REPO / ".venv-superset"))
        return cls(home=Path(home).resolve(), venv=Path(chosen).absolute())

    @property
    def state_dir(self) -> Path:
        return self.home / "superset"

    @property
    def state_file(self) -> Path:
        return self.state_dir / STATE_FILE

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / "superset.log"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def gunicorn(self) -> Path:
        return self.venv / "bin" / "gunicorn"

    def check_venv(self) -> None:
        if not self.gunicorn.exists() or not self.python.exists():
            raise SupersetMissing(
                f"Superset's environment {self.venv} is missing: run `make superset-setup` (it builds .venv-superset)"
            )


# --- secrets ------------------------------------------------------------------------------------------------


def _secret(path: Path, env: str, nbytes: int) -> str:
    """The secret from `env`, else from `path`, else a new one written to `path` once (mode 600)."""
    given = os.environ.get(env)
    if given:
        return given
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        value = ""
    if value:
        return value
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(nbytes)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    try:
        os.link(tmp, path)  # first writer wins: two first starts end with one secret
    except FileExistsError:
        value = path.read_text(encoding="utf-8").strip()
    finally:
        tmp.unlink(missing_ok=True)
    return value


@dataclass(frozen=True)
class Secrets:
    admin_password: str
    secret_key: str


def ensure_secrets(paths: SupersetPaths) -> Secrets:
    return Secrets(
        admin_password=_secret(paths.state_dir / "admin_password", "YIWANG_SUPERSET_ADMIN_PASSWORD", 18),
        secret_key=_secret(paths.state_dir / "secret_key", "YIWANG_SUPERSET_SECRET_KEY", 42),
    )


def superset_env(paths: SupersetPaths, found: Secrets) -> dict[str, str]:
    """The environment Superset's processes run with: its config, home and secrets, none of yiwang's venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env.update(
        {
            "SUPERSET_CONFIG_PATH": str(CONFIG_FILE),
            "SUPERSET_HOME": str(paths.state_dir),
            "SUPERSET_SECRET_KEY": found.secret_key,
            "YIWANG_SUPERSET_ADMIN_PASSWORD": found.admin_password,
            "FLASK_APP": "superset",
            "PATH": f"{paths.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    return env


# --- setup (metadata database, roles, admin) -------------------------------------------------------------------


def superset_version(paths: SupersetPaths) -> str:
    """The installed apache-superset version, read from its dist-info folder."""
    for info in sorted(paths.venv.glob("lib/python*/site-packages/apache_superset-*.dist-info")):
        return info.name.removeprefix("apache_superset-").removesuffix(".dist-info")
    raise SupersetMissing(f"apache-superset is not installed in {paths.venv}: run `make superset-setup`")


def _setup_fingerprint(paths: SupersetPaths, found: Secrets) -> dict[str, str]:
    return {
        "superset": superset_version(paths),
        "admin_password_sha256": hashlib.sha256(found.admin_password.encode()).hexdigest(),
        "setup_script_sha256": hashlib.sha256(SETUP_SCRIPT.read_bytes()).hexdigest(),
    }


def needs_setup(paths: SupersetPaths, found: Secrets) -> bool:
    """Whether the metadata database must be (re)prepared: first start, a new Superset, a new password."""
    stamp = paths.state_dir / SETUP_STAMP
    if not (paths.state_dir / "superset.db").exists() or not stamp.exists():
        return True
    try:
        return json.loads(stamp.read_text(encoding="utf-8")) != _setup_fingerprint(paths, found)
    except ValueError:
        return True


def run_setup(paths: SupersetPaths, found: Secrets, timeout: float = SETUP_TIMEOUT_S) -> float:
    """Migrations, roles, admin user (superset_setup.py in Superset's interpreter); returns the seconds taken."""
    paths.check_venv()
    paths.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths.state_dir.chmod(0o700)  # the metadata database holds the admin's password hash
    paths.log_file.parent.mkdir(parents=True, exist_ok=True)
    clock = time.perf_counter()
    with open(paths.log_file, "ab") as log:
        log.write(f"--- {datetime.now(UTC).isoformat(timespec='seconds')} setup\n".encode())
        log.flush()
        try:
            done = subprocess.run(
                [str(paths.python), "-P", str(SETUP_SCRIPT)],
                env=superset_env(paths, found),
                cwd=paths.state_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise SupersetError(f"Superset's setup took over {timeout:g} s; see {paths.log_file}") from None
    if done.returncode != 0:
        raise SupersetError(f"Superset's setup failed (exit {done.returncode}): {log_tail(paths.log_file)}")
    stamp = paths.state_dir / SETUP_STAMP
    stamp.write_text(json.dumps(_setup_fingerprint(paths, found), indent=2) + "\n", encoding="utf-8")
    return time.perf_counter() - clock


def clear_result_cache(home: Path) -> int:
    """Forget Superset's cached query results (its FileSystemCache files under `<home>/superset/cache/data`):
    called after the published file was replaced, so that no dashboard shows the previous build's figures.
    Returns how many entries were removed."""
    removed = 0
    for entry in (Path(home) / "superset" / "cache" / "data").glob("*"):
        if entry.is_file():
            entry.unlink(missing_ok=True)
            removed += 1
    return removed


# --- the server process --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerState:
    """What `superset.json` records about the running server."""

    pid: int
    port: int
    workers: int
    started_at: str
    venv: str
    host: str = LOOPBACK

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def read_state(paths: SupersetPaths) -> ServerState | None:
    try:
        return ServerState(**json.loads(paths.state_file.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as error:
        raise SupersetError(
            f"{paths.state_file} is not a Superset state file ({error}): delete it once no gunicorn of yiwang runs"
        ) from None


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _alive(pid: int) -> bool:
    """Whether `pid` runs (not a zombie); an exited child of this process is reaped on the way."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def is_our_server(state: ServerState) -> bool:
    """Whether the recorded pid is still the gunicorn master this project started on the recorded port."""
    if not _alive(state.pid):
        return False
    argv = _cmdline(state.pid)
    return any(Path(a).name == "gunicorn" for a in argv[:2]) and f"{LOOPBACK}:{state.port}" in argv


def port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        socket.create_connection((LOOPBACK, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        return requests.get(f"{url}/health", timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


def status(paths: SupersetPaths) -> ServerState | None:
    """The running server, or None; a state file whose process is gone is removed."""
    state = read_state(paths)
    if state is None:
        return None
    if not is_our_server(state):
        paths.state_file.unlink(missing_ok=True)
        return None
    return state


def log_tail(log_file: Path, lines: int = 6, offset: int = 0) -> str:
    """The last lines of the log (from `offset`), on one line."""
    try:
        with open(log_file, "rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    kept = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(kept) or "(log is empty)"


def _spawn_detached(argv: list[str], log_fd: int, env: Mapping[str, str], cwd: Path) -> int:
    """Start `argv` in a new session (it outlives this command), output to `log_fd`; return its pid."""
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, log_fd, 1),
        (os.POSIX_SPAWN_DUP2, log_fd, 2),
    ]
    previous = Path.cwd()
    os.chdir(cwd)  # posix_spawn has no cwd argument; the child inherits ours
    try:
        return os.posix_spawn(argv[0], argv, dict(env), file_actions=actions, setsid=True)
    finally:
        os.chdir(previous)


def _kill_group(pid: int, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL, the process group of a server this process has just spawned (its pid leads it)."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signum)
        deadline = time.monotonic() + grace
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not _alive(pid):
            return


@contextlib.contextmanager
def _state_lock(paths: SupersetPaths) -> Iterator[None]:
    """Serialise start and stop between processes sharing the home (two starts must not both spawn a server)."""
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    with open(paths.state_dir / "superset.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def start(
    paths: SupersetPaths,
    found: Secrets,
    port: int = DEFAULT_PORT,
    workers: int = DEFAULT_WORKERS,
    timeout: float = START_TIMEOUT_S,
) -> ServerState:
    """Start gunicorn on 127.0.0.1:`port` and wait until /health answers; the running one if there is one."""
    paths.check_venv()
    with _state_lock(paths):
        return _start(paths, found, port, workers, timeout)


def _start(paths: SupersetPaths, found: Secrets, port: int, workers: int, timeout: float) -> ServerState:
    running = status(paths)
    if running is not None:
        return running
    if port_open(port):
        raise SupersetError(f"port {port} on {LOOPBACK} is in use: pass --port, or stop what listens there")
    paths.log_file.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        str(paths.gunicorn),
        "--bind",
        f"{LOOPBACK}:{port}",
        "--workers",
        str(workers),
        "--worker-class",
        "gthread",
        "--threads",
        "4",
        "--timeout",
        "120",
        "--limit-request-line",
        "0",
        "--limit-request-field_size",
        "0",
        "--access-logfile",
        "-",
        "--error-logfile",
        "-",
        "superset.app:create_app()",
    ]
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    with open(paths.log_file, "ab") as log:
        offset = log.tell()
        log.write(f"--- {started_at} {' '.join(argv)}\n".encode())
        log.flush()
        pid = _spawn_detached(argv, log.fileno(), superset_env(paths, found), paths.state_dir)
    state = ServerState(pid=pid, port=port, workers=workers, started_at=started_at, venv=str(paths.venv))
    tmp = paths.state_file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, paths.state_file)
    deadline = time.monotonic() + timeout
    while not healthy(state.url):
        # alive, not is_our_server: just after the spawn its argv may still be ours (fork, then exec)
        exited = not _alive(state.pid)
        if exited or time.monotonic() > deadline:
            _kill_group(state.pid)  # the session it was started in, workers included: nothing is left behind
            paths.state_file.unlink(missing_ok=True)
            tail = log_tail(paths.log_file, offset=offset)
            if exited:
                raise SupersetError(f"Superset exited while starting: {tail}")
            raise SupersetError(f"Superset did not answer within {timeout:g} s: {tail}")
        time.sleep(0.3)
    return state


def stop(paths: SupersetPaths, timeout: float = STOP_TIMEOUT_S) -> bool:
    """SIGTERM the recorded gunicorn master (its workers follow), SIGKILL its process group after `timeout`;
    False when none was running. Nothing but the recorded process and its own group is signalled."""
    with _state_lock(paths):
        return _stop(paths, timeout)


def _stop(paths: SupersetPaths, timeout: float) -> bool:
    state = read_state(paths)
    if state is None:
        return False
    stopped = False
    if is_our_server(state):
        with contextlib.suppress(ProcessLookupError):
            os.kill(state.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(state.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(state.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(state.pid, signal.SIGKILL)  # the session it was started in: its own group only
        stopped = True
    paths.state_file.unlink(missing_ok=True)
    return stopped


# --- the REST API ---------------------------------------------------------------------------------------------


class SupersetClient:
    """A logged-in session on Superset's REST API (JWT + CSRF token)."""

    def __init__(self, url: str, username: str, password: str, timeout: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        try:
            response = self.session.post(
                f"{self.url}/api/v1/security/login",
                json={"username": username, "password": password, "provider": "db", "refresh": True},
                timeout=timeout,
            )
        except requests.RequestException as error:
            raise SupersetError(
                f"cannot reach Superset at {self.url} ({type(error).__name__}): is it running?"
            ) from None
        if response.status_code != 200:
            raise SupersetError(
                f"Superset refused the login of {username!r} ({response.status_code}): check the password file"
            )
        self.session.headers["Authorization"] = f"Bearer {response.json()['access_token']}"
        csrf = self._checked(self.session.get(f"{self.url}/api/v1/security/csrf_token/", timeout=timeout), "csrf")
        self.session.headers.update({"X-CSRFToken": csrf.json()["result"], "Referer": self.url})

    @staticmethod
    def _checked(response: requests.Response, what: str) -> requests.Response:
        if response.status_code >= 400:
            detail = response.text.replace("\n", " ")[:500]
            raise SupersetError(f"Superset refused the {what} request ({response.status_code}): {detail}")
        return response

    def get(self, path: str, **params: object) -> dict:
        return self._checked(self.session.get(f"{self.url}{path}", params=params, timeout=self.timeout), path).json()

    def import_assets(self, bundle: bytes) -> None:
        """POST the zip to /api/v1/assets/import/: every asset is created or overwritten in place (by uuid)."""
        response = self.session.post(
            f"{self.url}/api/v1/assets/import/",
            files={"bundle": ("yiwang_assets.zip", bundle, "application/zip")},
            data={"passwords": "{}"},
            timeout=self.timeout,
        )
        self._checked(response, "asset import")

    def export_assets(self) -> bytes:
        """Every database, dataset, chart and dashboard as Superset's export zip."""
        return self._checked(
            self.session.get(f"{self.url}/api/v1/assets/export/", timeout=self.timeout), "export"
        ).content

    def all_ids(self, kind: str) -> dict[str, int]:
        """uuid -> id of every chart, dashboard or dataset (kind: chart | dashboard | dataset)."""
        found: dict[str, int] = {}
        page = 0
        while True:
            query = f"(columns:!(id,uuid),page:{page},page_size:100)"
            result = self.get(f"/api/v1/{kind}/", q=query)["result"]
            found.update({row["uuid"]: row["id"] for row in result})
            if len(result) < 100:
                return found
            page += 1
