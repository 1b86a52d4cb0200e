"""Run Debian's kcat against Tansu with the librdkafka of the confluent-kafka wheel.

Debian's kcat 1.7.1 links librdkafka 2.0.2, whose ApiVersion v3 request Tansu answers in a way it cannot read
("Read underflow"). The confluent-kafka wheel bundles librdkafka 2.16, which works; kcat picks it up when a folder on
LD_LIBRARY_PATH holds it as `librdkafka.so.1`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
import tempfile
from pathlib import Path


class KcatUnavailable(RuntimeError):
    """kcat or the librdkafka it needs is not installed."""


def _wheel_librdkafka() -> Path:
    """The librdkafka shared library bundled in the confluent-kafka wheel (`confluent_kafka.libs/`)."""
    spec = importlib.util.find_spec("confluent_kafka")
    if spec is None or spec.origin is None:
        raise KcatUnavailable(
            "confluent-kafka is not installed (its wheel supplies the librdkafka kcat needs): "
            "pip install confluent-kafka==2.16.1"
        )
    libs = Path(spec.origin).parent.parent / "confluent_kafka.libs"
    found = sorted(libs.glob("librdkafka-*.so.1"))
    if not found:
        raise KcatUnavailable(f"no librdkafka-*.so.1 in {libs}: reinstall the confluent-kafka wheel (not an sdist)")
    return found[-1]


def _private_dir(path: Path) -> Path:
    """A cache folder only this user can write: a library folder others could write would run their code."""
    path.mkdir(mode=0o700, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise KcatUnavailable(f"{path} is not a folder private to this user: remove it and retry")
    return path


def _linked_library_dir(library: Path) -> Path:
    """A folder holding `librdkafka.so.1` -> the wheel's library, (re)made only when it points elsewhere."""
    folder = _private_dir(Path(tempfile.gettempdir()) / f"yiwang-kcat-lib-{os.getuid()}")
    link = folder / "librdkafka.so.1"
    if link.is_symlink() and Path(os.readlink(link)) == library:
        return folder
    tmp = folder / f".librdkafka.so.1.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(library)
    os.replace(tmp, link)  # atomic, so a concurrent kcat never sees a missing library
    return folder


def kcat_command() -> tuple[list[str], dict[str, str]]:
    """The argv prefix (`[kcat]`) and the full environment to run kcat with a librdkafka that speaks to Tansu."""
    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    if kcat is None:
        raise KcatUnavailable("kcat is not installed: apt-get install -y kcat (or `make setup`)")
    folder = _linked_library_dir(_wheel_librdkafka())
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(folder), env.get("LD_LIBRARY_PATH", "")) if p)
    return [kcat], env
