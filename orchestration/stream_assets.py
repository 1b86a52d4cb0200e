"""The streamed tables as Dagster assets, and the emergency products built on the IoT readings.

- `bronze/stream/iot_sensor_readings` and `bronze/stream/hotline_appeals` are written by the long-running
  consumers (`yiwang stream run`), not by a Dagster run: they are observable source assets whose
  observation records the table version, each partition's offset in Delta and its lag behind the broker.
  They sit in their domain's group (hotline: urban, IoT: emergency), tagged `layer: bronze`.
- `gold/emergency/incidents` is recomputed from every streamed reading by the batch run (the consumer
  keeps it current between runs), `gold/emergency/warnings` from the waterlogging risk of the latest
  forecast. Both feed the IoT tickets through the one dispatch derivation.

What triggers the derivation downstream of the streams: the IoT consumer itself updates incidents and
tickets after every micro-batch that opens, closes or escalates an incident; the hotline consumer
rebuilds the urban events and their tickets after every micro-batch. The nightly `platform_build` run
recomputes both from bronze, so the two paths meet in the same tables.
"""

# No `from __future__ import annotations`: Dagster inspects the real annotations of assets.
from dagster import (
    AssetsDefinition,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    ObserveResult,
    SourceAsset,
    asset,
    observable_source_asset,
)

from ingestion.contract import get_contract
from ingestion.streaming.topics import Topic, load_topics
from orchestration.asset_layout import contract_domain, layer_tags
from orchestration.dispatch_assets import table_key
from orchestration.ingestion_assets import silver_key
from orchestration.resources import PlatformResource
from orchestration.streaming import SENSOR_DEVICES
from thematic_libs.emergency.alerts import INCIDENTS, RISK, WARNINGS, rebuild_incidents, write_warnings
from thematic_libs.sharing.asset_metadata import product_asset_facts


def _observe_stream(topic: Topic) -> SourceAsset:
    @observable_source_asset(
        key=table_key(topic.bronze_table),
        group_name=contract_domain(".".join(topic.bronze_table.split("/")[1:3])),  # stream.hotline_appeals -> urban
        tags=layer_tags("bronze"),
        description=(
            f"{topic.name} consumed exactly once by `yiwang stream run {topic.short_name}` "
            f"({topic.partitions} partitions, group {topic.group}); offsets live in the table's Delta commits."
        ),
        required_resource_keys={"platform"},
    )
    def _observe(context) -> ObserveResult:
        from ingestion.settings import Settings
        from ingestion.streaming.settings import BrokerUnavailable
        from ingestion.streaming.status import stream_status
        from orchestration.streaming import kafka_settings

        platform: PlatformResource = context.resources.platform
        warehouse = platform.get_warehouse()
        if not warehouse.exists(topic.bronze_table):
            return ObserveResult(data_version=DataVersion("none"), metadata={"note": "nothing consumed yet"})
        try:
            kafka = kafka_settings(Settings.from_env())
        except BrokerUnavailable:
            kafka = None
        rows = stream_status(warehouse, topic, kafka)
        lags = [row.lag for row in rows if row.lag is not None]
        version = warehouse.table(topic.bronze_table).version()
        return ObserveResult(
            data_version=DataVersion(str(version)),
            metadata={
                "table_version": version,
                "offsets_in_delta": MetadataValue.json({str(r.partition): r.delta_offset for r in rows}),
                "lag": sum(lags) if lags else None,
                "broker": "reachable" if lags else "not reachable (lag unknown)",
                "quarantined_last_hour": sum(r.quarantined_last_hour for r in rows),
            },
        )

    return _observe


STREAMED = {short: _observe_stream(topic) for short, topic in load_topics().items()}


@asset(
    key=table_key(INCIDENTS),
    deps=[table_key(load_topics()["iot"].bronze_table), silver_key(get_contract(SENSOR_DEVICES))],
    group_name="emergency",
    description=(
        "内涝事件 Waterlogging incidents: N consecutive readings at or above a device's threshold (or a steady "
        "rise through it) open one, M minutes below threshold minus a margin close it. Recomputed here from "
        "every streamed reading; the IoT consumer keeps it current between runs."
    ),
    kinds={"delta", "python"},
    **product_asset_facts(INCIDENTS),
)
def emergency_incidents(platform: PlatformResource) -> MaterializeResult:
    from orchestration.streaming import read_devices

    warehouse = platform.get_warehouse()
    incidents = rebuild_incidents(warehouse, read_devices(warehouse))
    counts = incidents.group_by("status").len().rows() if incidents.height else []
    return MaterializeResult(metadata={"incidents": incidents.height, "by_status": MetadataValue.json(dict(counts))})


@asset(
    key=table_key(WARNINGS),
    deps=[table_key(RISK)],
    group_name="emergency",
    description=(
        "内涝预警 Early waterlogging warnings: grids with waterlogging history in a district whose forecast rain "
        "passes the level, before any sensor fires."
    ),
    kinds={"delta", "python"},
    **product_asset_facts(WARNINGS),
)
def emergency_warnings(platform: PlatformResource) -> MaterializeResult:
    warnings = write_warnings(platform.get_warehouse())
    return MaterializeResult(
        metadata={
            "warnings": warnings.height,
            "grids": MetadataValue.json(warnings["grid_code"].to_list()[:50] if warnings.height else []),
        }
    )


def stream_assets() -> list[AssetsDefinition | SourceAsset]:
    return [*STREAMED.values(), emergency_incidents, emergency_warnings]
