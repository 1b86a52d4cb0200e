"""Where the Kafka brokers are and how to authenticate, read once from the environment.

A deployment sets `KAFKA_BOOTSTRAP_SERVERS` (and the security variables) to reach its cluster. Without it the platform
falls back to the ephemeral local Tansu broker of `yiwang broker start`, and says so in every log line: a memory-only
broker is fine for a demo and fatal to mistake for production.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ingestion.streaming.broker import LocalBroker

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI")
# Mechanisms that authenticate with KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD.
PASSWORD_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
DEFAULT_REPLICATION_FACTOR = 3


class BrokerUnavailable(ValueError):
    """No Kafka broker is configured or reachable."""


@dataclass(frozen=True)
class KafkaSettings:
    """Connection settings for kafka-python and for librdkafka (kcat, confluent-kafka)."""

    bootstrap_servers: tuple[str, ...]
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    # True for the local Tansu broker: memory-only unless started on s3:// storage.
    ephemeral: bool = False
    # Replication factor of the topics ensure_topics creates (KAFKA_REPLICATION_FACTOR; 1 on the local broker).
    replication_factor: int = DEFAULT_REPLICATION_FACTOR

    @classmethod
    def from_env(
        cls, local_broker: LocalBroker | None = None, environ: Mapping[str, str] | None = None
    ) -> KafkaSettings:
        """The cluster of KAFKA_BOOTSTRAP_SERVERS, else the running local broker, else BrokerUnavailable."""
        env = os.environ if environ is None else environ
        protocol = _protocol(env)
        mechanism, username, password = _sasl(env, protocol)
        cafile, certfile, keyfile = _ssl_files(env, protocol)
        servers_text = _get(env, "KAFKA_BOOTSTRAP_SERVERS")
        if servers_text is None:
            return _local_settings(protocol, local_broker)
        return cls(
            bootstrap_servers=_servers(servers_text),
            security_protocol=protocol,
            sasl_mechanism=mechanism,
            sasl_username=username,
            sasl_password=password,
            ssl_cafile=cafile,
            ssl_certfile=certfile,
            ssl_keyfile=keyfile,
            replication_factor=_replication_factor(env),
        )

    @property
    def bootstrap(self) -> str:
        """The servers as one comma-separated string."""
        return ",".join(self.bootstrap_servers)

    def client_options(self) -> dict[str, object]:
        """Keyword arguments for kafka-python's KafkaProducer, KafkaConsumer and KafkaAdminClient."""
        options: dict[str, object] = {
            "bootstrap_servers": list(self.bootstrap_servers),
            "security_protocol": self.security_protocol,
        }
        extra = {
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_plain_username": self.sasl_username,
            "sasl_plain_password": self.sasl_password,
            "ssl_cafile": self.ssl_cafile,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
        }
        options.update({k: v for k, v in extra.items() if v is not None})
        return options

    def librdkafka_options(self) -> dict[str, str]:
        """Configuration properties for librdkafka clients (kcat's `-X`, confluent-kafka's config dict)."""
        options = {"bootstrap.servers": self.bootstrap, "security.protocol": self.security_protocol.lower()}
        extra = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password,
            "ssl.ca.location": self.ssl_cafile,
            "ssl.certificate.location": self.ssl_certfile,
            "ssl.key.location": self.ssl_keyfile,
        }
        options.update({k: v for k, v in extra.items() if v is not None})
        return options

    def describe(self) -> str:
        """One line for logs: where the brokers are and what kind they are; never a secret."""
        if self.ephemeral:
            return f"{self.bootstrap} (ephemeral local broker: memory-only unless started on s3:// storage)"
        auth = f", {self.sasl_mechanism} as {self.sasl_username}" if self.sasl_username else ""
        if self.sasl_mechanism and not self.sasl_username:
            auth = f", {self.sasl_mechanism}"
        return f"{self.bootstrap} (Kafka cluster, {self.security_protocol}{auth})"


def _get(env: Mapping[str, str], name: str) -> str | None:
    """A variable's value, with an empty or blank value read as unset."""
    value = env.get(name, "").strip()
    return value or None


def _protocol(env: Mapping[str, str]) -> str:
    value = (_get(env, "KAFKA_SECURITY_PROTOCOL") or "PLAINTEXT").upper()
    if value not in PROTOCOLS:
        raise ValueError(f"KAFKA_SECURITY_PROTOCOL={value!r} is not one of {', '.join(PROTOCOLS)}")
    return value


def _servers(text: str) -> tuple[str, ...]:
    """`host:port` entries of a comma list; a missing port is an error rather than a silent 9092."""
    servers = tuple(s.strip() for s in text.split(",") if s.strip())
    if not servers:
        raise ValueError("KAFKA_BOOTSTRAP_SERVERS is empty: give a comma list of host:port")
    for server in servers:
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"KAFKA_BOOTSTRAP_SERVERS entry {server!r} is not host:port (e.g. kafka-1:9092)")
    return servers


def _sasl(env: Mapping[str, str], protocol: str) -> tuple[str | None, str | None, str | None]:
    """Mechanism, username and password; SASL settings without a SASL protocol would be silently ignored."""
    mechanism = _get(env, "KAFKA_SASL_MECHANISM")
    username = _get(env, "KAFKA_SASL_USERNAME")
    password = env.get("KAFKA_SASL_PASSWORD") or None
    if not protocol.startswith("SASL_"):
        if mechanism or username or password:
            raise ValueError(
                f"KAFKA_SASL_* is set but KAFKA_SECURITY_PROTOCOL={protocol}: use SASL_PLAINTEXT or SASL_SSL"
            )
        return None, None, None
    if mechanism is None:
        raise ValueError(
            f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_MECHANISM ({', '.join(SASL_MECHANISMS)})"
        )
    mechanism = mechanism.upper()
    if mechanism not in SASL_MECHANISMS:
        raise ValueError(f"KAFKA_SASL_MECHANISM={mechanism!r} is not one of {', '.join(SASL_MECHANISMS)}")
    if mechanism in PASSWORD_MECHANISMS and (username is None or password is None):
        raise ValueError(f"KAFKA_SASL_MECHANISM={mechanism} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD")
    return mechanism, username, password


def _existing_file(env: Mapping[str, str], name: str) -> str | None:
    value = _get(env, name)
    if value is not None and not Path(value).is_file():
        raise ValueError(f"{name}={value} is not a readable file")
    return value


def _ssl_files(env: Mapping[str, str], protocol: str) -> tuple[str | None, str | None, str | None]:
    """CA, certificate and key files; they must exist now rather than fail inside the first connection."""
    cafile, certfile, keyfile = (
        _existing_file(env, name) for name in ("KAFKA_SSL_CAFILE", "KAFKA_SSL_CERTFILE", "KAFKA_SSL_KEYFILE")
    )
    if (certfile is None) != (keyfile is None):
        raise ValueError("KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE go together: set both or neither")
    if (cafile or certfile) and "SSL" not in protocol:
        raise ValueError(f"KAFKA_SSL_* files are set but KAFKA_SECURITY_PROTOCOL={protocol}: use SSL or SASL_SSL")
    return cafile, certfile, keyfile


def _replication_factor(env: Mapping[str, str]) -> int:
    value = _get(env, "KAFKA_REPLICATION_FACTOR") or str(DEFAULT_REPLICATION_FACTOR)
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"KAFKA_REPLICATION_FACTOR={value!r} is not a positive integer")
    return int(value)


def _local_settings(protocol: str, local_broker: LocalBroker | None) -> KafkaSettings:
    """The running local broker, which speaks PLAINTEXT on loopback only."""
    if protocol != "PLAINTEXT":
        # Security settings without servers mean a cluster was intended: do not fall back to a local broker.
        raise BrokerUnavailable(
            f"KAFKA_SECURITY_PROTOCOL={protocol} is set but KAFKA_BOOTSTRAP_SERVERS is not: set KAFKA_BOOTSTRAP_SERVERS"
        )
    state = local_broker.status() if local_broker is not None else None
    if state is None:
        raise BrokerUnavailable(
            "no Kafka broker: set KAFKA_BOOTSTRAP_SERVERS, or run `yiwang broker start` for a local ephemeral one"
        )
    return KafkaSettings(bootstrap_servers=(state.bootstrap_servers,), ephemeral=True, replication_factor=1)
