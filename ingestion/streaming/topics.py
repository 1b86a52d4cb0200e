"""The project's Kafka topics, read from `topics.yaml` and checked against the stream contracts.

Partition counts, keys and consumer groups live in one data file so that topic creation, the consumers and the
bronze tables cannot drift apart; the loader refuses a file whose key or dedupe fields are not in the contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from ingestion.contract import ContractError, get_contract

TOPICS_FILE = Path(__file__).parent / "topics.yaml"

_FIELDS = ("name", "contract", "fields_contract", "partitions", "key_field", "dedupe_key", "bronze_table", "group")


class TopicConfigError(ValueError):
    """`topics.yaml` says something the platform cannot use."""


@dataclass(frozen=True)
class Topic:
    """One Kafka topic of the platform and what its consumer needs to know about it."""

    short_name: str
    name: str
    contract_id: str
    fields_contract_id: str
    partitions: int
    key_field: str
    dedupe_key: tuple[str, ...]
    bronze_table: str
    group: str


def _parse_topic(short_name: str, raw: object, source: Path) -> Topic:
    """One entry of the file, with every field present and typed."""
    if not isinstance(raw, dict):
        raise TopicConfigError(f"{source}: topic {short_name!r} must be a mapping of {', '.join(_FIELDS)}")
    missing = [f for f in _FIELDS if f not in raw]
    if missing:
        raise TopicConfigError(f"{source}: topic {short_name!r} lacks {', '.join(missing)}")
    partitions = raw["partitions"]
    if not isinstance(partitions, int) or isinstance(partitions, bool) or partitions < 1:
        raise TopicConfigError(f"{source}: topic {short_name!r} has partitions={partitions!r}; use a positive integer")
    dedupe = raw["dedupe_key"]
    if not isinstance(dedupe, list) or not dedupe or not all(isinstance(f, str) for f in dedupe):
        raise TopicConfigError(f"{source}: topic {short_name!r} needs dedupe_key as a non-empty list of field names")
    return Topic(
        short_name=short_name,
        name=str(raw["name"]),
        contract_id=str(raw["contract"]),
        fields_contract_id=str(raw["fields_contract"]),
        partitions=partitions,
        key_field=str(raw["key_field"]),
        dedupe_key=tuple(dedupe),
        bronze_table=str(raw["bronze_table"]),
        group=str(raw["group"]),
    )


def _check_against_contracts(topic: Topic, source: Path) -> None:
    """The key and dedupe fields must be columns of the fields contract, and the key the contract's messageKey."""
    try:
        stream = get_contract(topic.contract_id)
        fields = get_contract(topic.fields_contract_id)
    except ContractError as exc:
        raise TopicConfigError(f"{source}: topic {topic.name!r}: {exc}") from None
    if not stream.is_stream:
        raise TopicConfigError(f"{source}: topic {topic.name!r}: contract {stream.id} is not a stream contract")
    message_key = stream.properties.get("messageKey")
    if message_key and message_key != topic.key_field:
        raise TopicConfigError(
            f"{source}: topic {topic.name!r} has key_field {topic.key_field!r} but {stream.id} says {message_key!r}"
        )
    unknown = [f for f in (topic.key_field, *topic.dedupe_key) if f not in fields.column_names]
    if unknown:
        raise TopicConfigError(
            f"{source}: topic {topic.name!r} names {', '.join(unknown)}, which {fields.id} does not have"
        )


@cache
def _load(path: Path) -> tuple[Topic, ...]:
    with open(path, encoding="utf-8") as f:
        document = yaml.safe_load(f) or {}
    entries = document.get("topics") if isinstance(document, dict) else None
    if not isinstance(entries, dict) or not entries:
        raise TopicConfigError(f"{path}: expected a mapping `topics:` of short name to topic")
    topics = tuple(_parse_topic(str(short), raw, path) for short, raw in entries.items())
    names = [t.name for t in topics]
    if len(set(names)) != len(names):
        raise TopicConfigError(f"{path}: a topic name appears twice")
    for topic in topics:
        _check_against_contracts(topic, path)
    return topics


def load_topics(path: Path = TOPICS_FILE) -> dict[str, Topic]:
    """Every project topic by short name (`iot`, `hotline`, `video`)."""
    return {t.short_name: t for t in _load(Path(path))}


def topic_by_name(name: str, path: Path = TOPICS_FILE) -> Topic:
    """The project topic called `name` (the Kafka name, e.g. `iot.sensor-readings`)."""
    for topic in _load(Path(path)):
        if topic.name == name:
            return topic
    known = ", ".join(t.name for t in _load(Path(path)))
    raise KeyError(f"unknown topic {name!r}; the project's topics are {known}")
