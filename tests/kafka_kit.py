"""Brokers for tests: a local Tansu with the project topics, and moto's S3 server for Tansu's s3:// storage.

Both are context managers that always tear down what they started, so a failing test leaves no process behind.
"""

from __future__ import annotations

import contextlib
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

import boto3
from moto.server import ThreadedMotoServer

from ingestion.streaming.broker import LocalBroker, ensure_topics
from ingestion.streaming.settings import KafkaSettings

S3_STORAGE = "s3://tansu/"
S3_BUCKET = "tansu"


@contextlib.contextmanager
def running_broker(
    tmp_path: Path,
    storage: str = "memory://tansu/",
    env: Mapping[str, str] | None = None,
    port: int | None = None,
) -> Iterator[tuple[LocalBroker, KafkaSettings]]:
    """A Tansu broker in `tmp_path/broker` with the project's topics, stopped on exit whatever happened."""
    broker = LocalBroker(tmp_path / "broker")
    try:
        broker.start(port=port, storage=storage, env=env)
        # environ={}: a KAFKA_* variable of the developer's shell must not point the test at a real cluster.
        settings = KafkaSettings.from_env(broker, environ={})
        ensure_topics(settings)
        yield broker, settings
    finally:
        broker.stop()


@contextlib.contextmanager
def moto_s3_server() -> Iterator[dict[str, str]]:
    """moto's S3 on a random loopback port with bucket `tansu`; yields the environment Tansu's s3:// storage needs."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        env = {
            "AWS_ENDPOINT": endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
        }
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        s3.create_bucket(Bucket=S3_BUCKET)
        yield env
    finally:
        # moto's backends are process-global: reset them so the next server starts with an empty bucket.
        with contextlib.suppress(OSError):
            host, port = server.get_host_and_port()
            reset = urllib.request.Request(f"http://{host}:{port}/moto-api/reset", method="POST")
            urllib.request.urlopen(reset, timeout=10).close()
        server.stop()
