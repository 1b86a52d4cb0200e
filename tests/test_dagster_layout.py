"""What the Dagster UI shows of the platform: groups by business domain with the layer as a tag, owners kept,
seeds in `reference`, freshness policies from the contracts' cadences (evaluated by Dagster's own freshness
evaluator), the instance settings and the named code location."""

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, DagsterInstance, MaterializeResult, asset, materialize
from dagster._core.definitions.freshness import FreshnessState
from dagster._core.definitions.freshness_evaluator import TimeWindowFreshnessPolicyEvaluator
from dagster._core.loader import LoadingContextForTest
from dagster._core.test_utils import freeze_time

from ingestion.contract import batch_contracts, get_contract, load_contracts
from orchestration.asset_layout import DOMAINS_FILE, contract_domain, known_domains, lay_out

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory):
    from ingestion.settings import Settings
    from orchestration.definitions import build_definitions

    root = tmp_path_factory.mktemp("layout")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("YIWANG_HOME", str(root))
        patch.setenv("YIWANG_WAREHOUSE", str(root / "warehouse"))
        patch.setenv("YIWANG_DUCKDB", str(root / "yiwang.duckdb"))
        yield build_definitions(Settings.from_env()).resolve_asset_graph()


def test_every_department_has_a_domain() -> None:
    for contract_id in load_contracts():
        assert contract_domain(contract_id) in known_domains(), contract_id
    with pytest.raises(ValueError, match=r"has no domain in domains\.yaml"):
        contract_domain("nowhere.data")


def test_assets_are_grouped_by_domain_with_the_layer_as_a_tag(graph) -> None:
    nodes = {key.to_user_string(): graph.get(key) for key in graph.get_all_asset_keys()}
    assert all("layer" in node.tags for node in nodes.values()), [k for k, n in nodes.items() if "layer" not in n.tags]
    for key, group, layer in [
        ("bronze/zuzhibu/party_members", "party", "bronze"),
        ("silver/minzheng/assistance_cases", "social_assistance", "silver"),
        ("silver/zhengshu/enterprise_appeals", "enterprises", "silver"),  # its own line in domains.yaml
        ("staging/stg_shichang__enterprise_registration", "enterprises", "staging"),
        ("staging/stg_gold__urban_events", "urban", "staging"),
        ("marts/party_org_tree", "party", "marts"),
        ("gold/party/org_tree", "party", "gold"),
        ("gold/dispatch/tickets", "dispatch", "gold"),
        ("bronze/stream/iot_sensor_readings", "emergency", "bronze"),
        ("reference/departments", "reference", "reference"),
        ("ops/quality_scorecard", "ops", "ops"),
        ("ops/catalog", "sharing", "ops"),
        ("analytics/published_warehouse", "analytics", "published"),
    ]:
        assert (nodes[key].group_name, nodes[key].tags["layer"]) == (group, layer), key
    # owners and the sharing tags of the catalog stay
    assert nodes["silver/minzheng/assistance_cases"].owners == ["team:minzheng"]
    assert nodes["silver/minzheng/assistance_cases"].tags["owner"] == "minzheng"
    assert {node.group_name for node in nodes.values()} >= {
        "party", "enterprises", "emergency", "urban", "dispatch", "social_assistance", "video", "sharing", "ops"
    }  # fmt: skip


def test_freshness_follows_the_cadence(graph) -> None:
    for contract in batch_contracts().values():
        policy = graph.get(AssetKey(["silver", contract.department, contract.dataset])).freshness_policy
        days = contract.cadence_days
        assert policy is not None and policy.warn_window.to_timedelta() == timedelta(days=days), contract.id
    hourly = graph.get(AssetKey(["bronze", "zhengshu", "hotline_appeals"])).freshness_policy
    assert hourly.fail_window.to_timedelta() == timedelta(hours=2)  # an hour's cadence, an hour's grace
    party_gold = graph.get(AssetKey(["gold", "party", "org_tree"])).freshness_policy  # products.yaml: weekly
    assert party_gold.warn_window.to_timedelta() == timedelta(days=7)


def test_a_late_delivery_makes_the_asset_fail_its_freshness() -> None:
    """A daily contract: fresh after its batch lands, due a day later, late (FAIL) after the grace; landing
    the late batch makes it pass again. Evaluated by the evaluator Dagster's freshness daemon runs."""
    contract = get_contract("gongan.household_registration")
    assert contract.cadence_days == 1

    @asset(key=["bronze", contract.department, contract.dataset])
    def bronze() -> MaterializeResult:  # stands for the bronze asset landing a batch
        return MaterializeResult(metadata={"batches_loaded": 1})

    (placed,) = lay_out([bronze])
    from dagster import Definitions

    node = Definitions(assets=[placed]).resolve_asset_graph().get(placed.key)
    instance = DagsterInstance.ephemeral()

    def state(at: datetime) -> FreshnessState:
        with freeze_time(at):
            evaluation = TimeWindowFreshnessPolicyEvaluator().evaluate_freshness(LoadingContextForTest(instance), node)
            return asyncio.run(evaluation)

    landed = datetime.now(UTC)
    assert state(landed) == FreshnessState.UNKNOWN  # never materialised
    assert materialize([placed], instance=instance).success
    assert state(landed + timedelta(hours=12)) == FreshnessState.PASS
    assert state(landed + timedelta(hours=26)) == FreshnessState.WARN  # the next batch is due
    assert state(landed + timedelta(hours=31)) == FreshnessState.FAIL  # and late: a day plus 6 h of grace
    with freeze_time(landed + timedelta(hours=31)):
        assert materialize([placed], instance=instance).success  # the late batch lands
    assert state(landed + timedelta(hours=32)) == FreshnessState.PASS


def test_instance_settings_and_code_location() -> None:
    settings = yaml.safe_load((REPO / "orchestration" / "dagster.yaml").read_text(encoding="utf-8"))
    assert settings["telemetry"] == {"enabled": False}
    (location,) = yaml.safe_load((REPO / "workspace.yaml").read_text(encoding="utf-8"))["load_from"]
    assert location["python_module"]["location_name"] == "yiwang"
    assert DOMAINS_FILE.exists()


def test_yiwang_run_gives_dagster_home_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestration.cli import _prepared_dagster_home

    home = tmp_path / "dagster"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert _prepared_dagster_home()
    assert yaml.safe_load((home / "dagster.yaml").read_text(encoding="utf-8"))["telemetry"] == {"enabled": False}
    instance = DagsterInstance.get()
    try:
        assert not instance.telemetry_enabled
    finally:
        instance.dispose()
