"""Config validation: every bad input names its YAML path and problem."""

from __future__ import annotations

import copy
import dataclasses
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.config import (
    ApiKey,
    MetricsSettings,
    PriceSettings,
    RiskSettings,
    load_api_key,
    load_config,
    parse_config,
)
from monitor.config.model import ChainConfig, SpenderConfig, spender_index
from monitor.errors import ConfigError
from monitor.risk.model import KnownSpender, RuleSettings, Suppression

ROOT = Path(__file__).resolve().parent.parent
WALLET = "0x5014ef5ED72014E90B82285EA7888B4A091409Ec"
WALLET2 = "0xfcd6A6536Fc62D5Dcf3E1Fd31F6BF54eA18ccBa2"
ROUTER = "0x111111125421cA6dc452d289314280a0f8842A65"
PERMIT2 = "0x000000000022D473030F116dDEE9F6B43aC78BA3"

MINIMAL: dict[str, Any] = {
    "wallets": [{"address": WALLET}],
    "chains": [{"id": 1, "spenders": [{"address": ROUTER}]}],
}


def with_change(path: str, value: Any) -> dict[str, Any]:
    """MINIMAL with the value at a dotted path (list indexes as numbers) set or added."""
    doc = copy.deepcopy(MINIMAL)
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    target: Any = doc
    for key in keys[:-1]:
        if isinstance(key, str) and key not in target:
            target[key] = {}
        target = target[key]
    last = keys[-1]
    if isinstance(last, int) and last == len(target):
        target.append(value)
    else:
        target[last] = value
    return doc


def test_example_config_loads_and_matches_the_documented_defaults() -> None:
    config = load_config(ROOT / "config.example.yaml")
    assert config.api.requests_per_second == 1
    assert config.api.max_wallets_per_request == 50
    assert config.metrics.host == "127.0.0.1"
    defaults = MetricsSettings()
    assert config.metrics.max_position_series == defaults.max_position_series
    assert config.metrics.max_finding_series == defaults.max_finding_series
    assert [c.id for c in config.chains] == [1, 8453]
    assert len(config.wallets) == 3
    cold = config.wallets[2]
    assert cold.chains == (1,)
    assert [w.label for w in config.wallets_on(8453)] == ["treasury", "ops"]


def test_minimal_config_gets_sane_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.chdir(tmp_path)
    config = parse_config(MINIMAL)
    assert config.api.base_url == "https://api.1inch.dev"
    assert config.api.requests_per_second == 1.0
    assert config.api.max_wallets_per_request == 50
    assert config.api.filter_empty is True
    assert config.poll.interval_s == 300
    assert (config.poll.timeout_s, config.poll.jitter_s, config.poll.shutdown_grace_s) == (
        240,
        30,
        30,
    )
    assert config.metrics.max_position_series == 50_000
    assert config.metrics.max_finding_series == 10_000
    assert config.metrics.ready_after_intervals == 3
    assert (config.metrics.host, config.metrics.port) == ("127.0.0.1", 9751)
    assert config.database.url == f"sqlite+aiosqlite:///{tmp_path}/exposure-monitor.sqlite"
    assert config.database.migrate_on_start is True
    assert config.database.retention_days == 365


def test_a_wallet_is_found_by_its_address_also_in_a_replaced_config() -> None:
    config = parse_config(
        with_change("wallets", [{"address": WALLET, "label": "ops"}, {"address": WALLET2}])
    )
    found = config.wallet(WALLET.lower())
    assert found is not None and found.label == "ops"
    assert config.wallet(WALLET2.lower()) is config.wallets[1]
    assert config.wallet(ROUTER.lower()) is None
    assert config.wallet(WALLET) is None  # addresses are lowercase inside
    replaced = dataclasses.replace(config, wallets=config.wallets[1:])
    assert replaced.wallet(WALLET.lower()) is None
    assert replaced.wallet(WALLET2.lower()) is config.wallets[1]
    assert replaced == dataclasses.replace(config, wallets=config.wallets[1:])


def test_poll_timeout_and_jitter_scale_with_a_short_interval() -> None:
    poll = parse_config(with_change("poll.interval_s", 2)).poll
    assert (poll.timeout_s, poll.jitter_s) == (1.6, 0.2)


def test_retention_null_keeps_history_forever() -> None:
    assert (
        parse_config(with_change("database.retention_days", None)).database.retention_days is None
    )
    assert parse_config(with_change("database.retention_days", 30)).database.retention_days == 30


def test_default_database_lives_in_the_systemd_state_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/exposure-monitor")
    config = parse_config(MINIMAL)
    assert (
        config.database.url
        == "sqlite+aiosqlite:////var/lib/exposure-monitor/exposure-monitor.sqlite"
    )


@pytest.mark.parametrize(
    ("written", "resolved"),
    [
        ("sqlite+aiosqlite:///exposure-monitor.sqlite", "{dir}/exposure-monitor.sqlite"),
        ("sqlite+aiosqlite:///data/x.sqlite", "{dir}/data/x.sqlite"),
        ("sqlite+aiosqlite:///./x.sqlite?timeout=5", "{dir}/x.sqlite?timeout=5"),
        ("sqlite+aiosqlite:////var/lib/x.sqlite", "/var/lib/x.sqlite"),
    ],
)
def test_a_relative_sqlite_path_is_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: str, resolved: str
) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    path = folder / "monitor.yaml"
    path.write_text(yaml.safe_dump(with_change("database.url", written)))
    monkeypatch.chdir(tmp_path)  # anywhere but the config's folder
    expected = "sqlite+aiosqlite:///" + resolved.format(dir=folder)
    assert load_config(path).database.url == expected


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+asyncpg://exposure_monitor@/exposure_monitor?host=/run/postgresql",
        "postgresql+psycopg://u@db.example:5432/x",
        "sqlite+aiosqlite://",
        "sqlite+aiosqlite:///:memory:",
    ],
)
def test_other_database_urls_are_kept_as_written(tmp_path: Path, url: str) -> None:
    path = tmp_path / "monitor.yaml"
    path.write_text(yaml.safe_dump(with_change("database.url", url)))
    assert load_config(path).database.url == url


def test_the_example_config_uses_the_state_directory_under_systemd(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/exposure-monitor")
    config = load_config(ROOT / "config.example.yaml")
    assert (
        config.database.url
        == "sqlite+aiosqlite:////var/lib/exposure-monitor/exposure-monitor.sqlite"
    )


def test_addresses_are_stored_lowercase_and_shown_checksummed() -> None:
    config = parse_config(with_change("wallets.0.address", WALLET.lower()))
    assert config.wallets[0].address == WALLET.lower()
    assert config.wallets[0].checksum == WALLET
    assert config.chains[0].spenders[0].address == ROUTER.lower()
    assert config.chains[0].spenders[0].checksum == ROUTER


def test_custom_tokens_accept_addresses_or_mappings() -> None:
    config = parse_config(
        with_change(
            "chains.0.custom_tokens",
            [PERMIT2.lower(), {"address": WALLET2, "symbol": "LOC", "decimals": 6}],
        )
    )
    tokens = config.chains[0].custom_tokens
    assert [t.address for t in tokens] == [PERMIT2.lower(), WALLET2.lower()]
    assert (tokens[1].symbol, tokens[1].decimals) == ("LOC", 6)
    assert tokens[0].symbol is None


def test_listen_accepts_ipv6() -> None:
    config = parse_config(with_change("metrics.listen", "[::1]:9000"))
    assert (config.metrics.host, config.metrics.port) == ("::1", 9000)


BAD_CASES = [
    # (dotted path to change, value, expected path in the error, expected problem fragment)
    ("surprise", 1, "surprise", "unknown key"),
    ("api.base_urll", "http://x", "api.base_urll", "unknown key"),
    ("api.api_key", "abc", "api.api_key", "must not be written in the config file"),
    ("apiKey", "abc", "apiKey", "must not be written in the config file"),
    ("api.base_url", "ftp://x", "api.base_url", "expected an http(s) URL"),
    ("api.base_url", "https://user:pw@x", "api.base_url", "must not contain credentials"),
    ("api.requests_per_second", 0, "api.requests_per_second", "at least 0.01"),
    ("api.requests_per_second", "fast", "api.requests_per_second", "expected a number"),
    ("api.requests_per_second", True, "api.requests_per_second", "expected a number"),
    ("api.timeout_s", float("nan"), "api.timeout_s", "must be"),
    ("api.timeout_s", -1, "api.timeout_s", "at least 0.1"),
    ("api.max_wallets_per_request", 0, "api.max_wallets_per_request", "between 1 and 1000"),
    ("api.max_wallets_per_request", 2.5, "api.max_wallets_per_request", "whole number"),
    ("api.max_attempts", 0, "api.max_attempts", "between 1 and 20"),
    ("api.backoff_max_s", 0.1, "api.backoff_max_s", "not be below backoff_initial_s"),
    ("api.filter_empty", "yes", "api.filter_empty", "expected true or false"),
    ("api", [1], "api", "expected a mapping"),
    ("database.url", "sqlite:///x.db", "database.url", "name the async driver"),
    ("database.url", "postgresql://h/db", "database.url", "name the async driver"),
    ("database.url", "mysql+aiomysql://h/db", "database.url", "unsupported URL scheme"),
    ("database.retention_days", 0, "database.retention_days", "between 1 and 36500"),
    ("database.migrate_on_start", "no", "database.migrate_on_start", "expected true or false"),
    ("poll.interval_s", 0.5, "poll.interval_s", "at least 1"),
    ("poll.timeout_s", 400, "poll.timeout_s", "at most 300"),
    ("poll.jitter_s", -1, "poll.jitter_s", "at least 0"),
    ("metrics.max_position_series", -5, "metrics.max_position_series", "between 0 and"),
    ("metrics.max_finding_series", -1, "metrics.max_finding_series", "between 0 and"),
    ("metrics.max_finding_series", 1.5, "metrics.max_finding_series", "whole number"),
    ("metrics.max_finding_series", "all", "metrics.max_finding_series", "whole number"),
    ("metrics.ready_after_intervals", 0.5, "metrics.ready_after_intervals", "at least 1"),
    ("poll.interval_s", "5m", "poll.interval_s", "expected a number"),
    ("metrics.listen", "9751", "metrics.listen", "expected HOST:PORT"),
    ("metrics.listen", "localhost:99999", "metrics.listen", "between 0 and 65535"),
    ("wallets", [], "wallets", "must not be empty"),
    ("wallets", {"address": WALLET}, "wallets", "expected a list"),
    ("wallets.0.address", "0x1234", "wallets[0].address", "not a valid address"),
    ("wallets.0.address", "0x5014ef5ED72014E90B82285EA7888B4A091409EC", "wallets[0].address", "bad EIP-55 checksum"),
    ("wallets.0.address", None, "wallets[0].address", "is required"),
    ("wallets.0.label", 12, "wallets[0].label", "expected a string"),
    ("wallets.0.label", "a\nb", "wallets[0].label", "control characters"),
    ("wallets.0.chains", [137], "wallets[0].chains[0]", "chain 137 is not under chains:"),
    ("wallets.0.chains", [1, 1], "wallets[0].chains[1]", "duplicate chain 1"),
    ("wallets.0.chains", [], "wallets[0].chains", "must not be empty"),
    ("wallets.0.colour", "red", "wallets[0].colour", "unknown key"),
    ("wallets.1", {"address": WALLET.lower()}, "wallets[1].address", "duplicate wallet (same as wallets[0])"),
    ("chains", None, "chains", "is required"),
    ("chains.0.id", 999, "chains[0].id", "unsupported chain id 999"),
    ("chains.0.id", "1", "chains[0].id", "expected a chain id"),
    ("chains.1", {"id": 1, "spenders": [{"address": ROUTER}]}, "chains[1].id", "already configured at chains[0]"),
    ("chains.0.spenders", [], "chains[0].spenders", "must not be empty"),
    ("chains.0.spenders.1", {"address": ROUTER.lower()}, "chains[0].spenders[1].address", "duplicate spender"),
    ("chains.0.spenders.0.trusted", "yes", "chains[0].spenders[0].trusted", "expected true or false"),
    ("chains.0.spenders.0.address", "0xZZ", "chains[0].spenders[0].address", "not a valid address"),
    ("chains.0.custom_tokens", ["0x12"], "chains[0].custom_tokens[0]", "not a valid address"),
    ("chains.0.custom_tokens", [PERMIT2, PERMIT2.lower()], "chains[0].custom_tokens[1]", "duplicate custom token"),
    ("chains.0.custom_tokens", [{"address": PERMIT2, "decimals": 300}], "chains[0].custom_tokens[0].decimals", "between 0 and 255"),
    ("risk", [], "risk", "expected a mapping"),
    ("risk.surprise", 1, "risk.surprise", "unknown key"),
    ("risk.api_token", "abc", "risk.api_token", "must not be written in the config file"),
    ("risk.unlimited_threshold", 0, "risk.unlimited_threshold", "between 1 and 2^256-1"),
    ("risk.unlimited_threshold", 2**256, "risk.unlimited_threshold", "between 1 and 2^256-1"),
    ("risk.unlimited_threshold", "1" * 100, "risk.unlimited_threshold", "a 100-digit number"),
    ("risk.unlimited_threshold", "2**96-1", "risk.unlimited_threshold", "string of decimal digits"),
    ("risk.unlimited_threshold", "-5", "risk.unlimited_threshold", "string of decimal digits"),
    ("risk.unlimited_threshold", 1.5e28, "risk.unlimited_threshold", "whole number"),
    ("risk.unlimited_threshold", True, "risk.unlimited_threshold", "whole number"),
    ("risk.value_at_risk_usd", 0, "risk.value_at_risk_usd", "greater than 0"),
    ("risk.value_at_risk_usd", -10, "risk.value_at_risk_usd", "greater than 0"),
    ("risk.value_at_risk_usd", float("inf"), "risk.value_at_risk_usd", "greater than 0"),
    ("risk.value_at_risk_usd", "NaN", "risk.value_at_risk_usd", "greater than 0"),
    ("risk.value_at_risk_usd", "lots", "risk.value_at_risk_usd", "expected a number"),
    ("risk.value_at_risk_usd", False, "risk.value_at_risk_usd", "expected a number"),
    ("risk.fresh_approval_hours", 0, "risk.fresh_approval_hours", "greater than 0"),
    ("risk.fresh_approval_hours", "1d", "risk.fresh_approval_hours", "expected a number"),
    ("risk.fresh_approval_hours", 10**6, "risk.fresh_approval_hours", "at most 87600"),
    ("risk.denylist_file", 5, "risk.denylist_file", "expected a string"),
    ("risk.denylist_file", "/nonexistent/denylist.json", "risk.denylist_file", "no such file"),
    ("risk.prices", "on", "risk.prices", "expected a mapping"),
    ("risk.prices.enabled", "yes", "risk.prices.enabled", "expected true or false"),
    ("risk.prices.ttl_s", -1, "risk.prices.ttl_s", "at least 0"),
    ("risk.prices.timeout_s", 0, "risk.prices.timeout_s", "at least 1"),
    ("risk.prices.currency", "EUR", "risk.prices.currency", "unknown key"),
    ("risk.ignore", {"reason": "x"}, "risk.ignore", "expected a list"),
    ("risk.ignore", ["0x" + "5e" * 20], "risk.ignore[0]", "expected a mapping"),
    ("risk.ignore", [{"reason": "r"}], "risk.ignore[0]", "at least one of wallet, spender, token or rule"),
    ("risk.ignore", [{"chain_id": 1, "reason": "r"}], "risk.ignore[0]", "at least one of"),
    ("risk.ignore", [{"wallet": WALLET}], "risk.ignore[0].reason", "is required"),
    ("risk.ignore", [{"wallet": WALLET, "reason": ""}], "risk.ignore[0].reason", "must not be empty"),
    ("risk.ignore", [{"wallet": "0x1234", "reason": "r"}], "risk.ignore[0].wallet", "not a valid address"),
    ("risk.ignore", [{"spender": "0x111111125421cA6dc452d289314280a0f8842a65", "reason": "r"}], "risk.ignore[0].spender", "bad EIP-55 checksum"),
    ("risk.ignore", [{"token": "sk-canary-789", "reason": "r"}], "risk.ignore[0].token", "not a valid address"),
    ("risk.ignore", [{"rule": "unlimited", "reason": "r"}], "risk.ignore[0].rule", "unknown rule 'unlimited'"),
    ("risk.ignore", [{"rule": "value_at_risk", "chain_id": 999, "reason": "r"}], "risk.ignore[0].chain_id", "unsupported chain id 999"),
    ("risk.ignore", [{"rule": "value_at_risk", "reason": "r", "until": "next week"}], "risk.ignore[0].until", "ISO date or datetime"),
    ("risk.ignore", [{"rule": "value_at_risk", "reason": "r", "until": 20250101}], "risk.ignore[0].until", "ISO date or datetime"),
    ("risk.ignore", [{"rule": "value_at_risk", "reason": "r", "note": "x"}], "risk.ignore[0].note", "unknown key"),
    ("api.token", "abc", "api.token", "must not be written in the config file"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "value", "path", "problem"), BAD_CASES)
def test_bad_config_names_the_path_and_the_problem(
    change: str, value: Any, path: str, problem: str
) -> None:
    doc = with_change(change, value)
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    assert info.value.path == path
    assert problem in info.value.problem
    assert "\n" not in str(info.value)


def test_a_key_in_the_config_file_is_never_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(with_change("api.apikey", "sk-canary-123"))
    assert "sk-canary-123" not in str(info.value)


def test_config_root_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match="expected a mapping"):
        parse_config(["wallets"])


def test_empty_file_reports_the_first_missing_key(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.path == "chains"


def test_duplicate_yaml_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(MINIMAL) + "poll:\n  interval_s: 5\n  interval_s: 6\n")
    with pytest.raises(ConfigError, match="duplicate key 'interval_s'") as info:
        load_config(path)
    assert info.value.path.startswith("line ")


def test_yaml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("chains: [\n  {id: 1\n")
    with pytest.raises(ConfigError, match="invalid YAML") as info:
        load_config(path)
    assert info.value.path.startswith("line ")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")


# -- the API key ------------------------------------------------------------------------------


def test_api_key_comes_from_the_environment() -> None:
    key = load_api_key({"ONEINCH_API_KEY": " abc123 \n"})
    assert key == ApiKey("abc123")


def test_api_key_prefers_the_systemd_credential(tmp_path: Path) -> None:
    (tmp_path / "oneinch_api_key").write_text("from-credential\n")
    key = load_api_key({"CREDENTIALS_DIRECTORY": str(tmp_path), "ONEINCH_API_KEY": "from-env"})
    assert key is not None
    assert key.reveal() == "from-credential"


def test_credentials_directory_without_our_credential_falls_back_to_env(tmp_path: Path) -> None:
    key = load_api_key({"CREDENTIALS_DIRECTORY": str(tmp_path), "ONEINCH_API_KEY": "from-env"})
    assert key is not None
    assert key.reveal() == "from-env"


def test_no_api_key_is_fine() -> None:
    assert load_api_key({}) is None


@pytest.mark.parametrize("value", ["", "   ", "abc def", "abc\x00"])
def test_malformed_api_key_is_refused_without_echoing_it(value: str) -> None:
    with pytest.raises(ConfigError, match="ONEINCH_API_KEY") as info:
        load_api_key({"ONEINCH_API_KEY": value})
    if value.strip():
        assert value.strip() not in str(info.value)


def test_api_key_never_prints_itself() -> None:
    key = ApiKey("sk-canary-456")
    assert "sk-canary-456" not in repr(key)
    assert "sk-canary-456" not in str(key)
    assert "sk-canary-456" not in f"{key} {key!r} {[key]}"


# -- risk ---------------------------------------------------------------------------------------


def test_risk_defaults() -> None:
    risk = parse_config(MINIMAL).risk
    assert risk == RiskSettings()
    assert risk.unlimited_threshold == 2**96 - 1
    assert risk.value_at_risk_usd == Decimal(10_000)
    assert risk.fresh_approval_hours == 24
    assert risk.denylist_file is None
    assert risk.denylist == ()
    assert risk.prices == PriceSettings(enabled=True, ttl_s=300, timeout_s=20)
    assert risk.ignore == ()


def test_example_config_has_a_working_risk_section() -> None:
    risk = load_config(ROOT / "config.example.yaml").risk
    assert risk.unlimited_threshold == 2**96 - 1
    assert risk.value_at_risk_usd == Decimal(10_000)
    assert [s.rule for s in risk.ignore] == ["untrusted_spender"]
    assert risk.ignore[0].until == datetime(2030, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("value", [2**160 - 1, str(2**160 - 1)])
def test_unlimited_threshold_is_a_number_or_a_string_of_digits(value: object) -> None:
    risk = parse_config(with_change("risk.unlimited_threshold", value)).risk
    assert risk.unlimited_threshold == 2**160 - 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.1, Decimal("0.1")), (2500, Decimal(2500)), ("12345.67", Decimal("12345.67"))],
)
def test_value_at_risk_threshold_is_exact(value: object, expected: Decimal) -> None:
    risk = parse_config(with_change("risk.value_at_risk_usd", value)).risk
    assert risk.value_at_risk_usd == expected
    assert isinstance(risk.value_at_risk_usd, Decimal)


def test_prices_can_be_turned_off_and_never_cached() -> None:
    doc = with_change("risk.prices", {"enabled": False, "ttl_s": 0, "timeout_s": 5})
    assert parse_config(doc).risk.prices == PriceSettings(enabled=False, ttl_s=0, timeout_s=5)


def test_ignore_entries_are_parsed_with_canonical_addresses() -> None:
    doc = with_change(
        "risk.ignore",
        [
            {"wallet": WALLET, "spender": ROUTER, "token": PERMIT2, "rule": "unlimited_approval",
             "chain_id": 1, "reason": "Permit2 needs it"},
            {"spender": ROUTER.lower(), "reason": "forever"},
        ],
    )  # fmt: skip
    first, second = parse_config(doc).risk.ignore
    assert first == Suppression(
        wallet=WALLET.lower(),
        spender=ROUTER.lower(),
        token=PERMIT2.lower(),
        rule="unlimited_approval",
        chain_id=1,
        reason="Permit2 needs it",
        until=None,
    )
    assert second == Suppression(spender=ROUTER.lower(), reason="forever")


@pytest.mark.parametrize(
    ("until", "expected"),
    [
        ("2025-07-01", datetime(2025, 7, 1, tzinfo=UTC)),
        ("2025-07-01T12:30:00Z", datetime(2025, 7, 1, 12, 30, tzinfo=UTC)),
        ("2025-07-01T14:30:00+02:00", datetime(2025, 7, 1, 12, 30, tzinfo=UTC)),
        ("2025-07-01T12:30:00", datetime(2025, 7, 1, 12, 30, tzinfo=UTC)),
    ],
)
def test_ignore_until_is_utc_from_yaml_dates_datetimes_and_strings(
    tmp_path: Path, until: str, expected: datetime
) -> None:
    # Unquoted, YAML turns these into date or datetime objects; quoted, they stay strings.
    for spelled in (until, f"'{until}'"):
        path = tmp_path / "c.yaml"
        path.write_text(
            yaml.safe_dump(MINIMAL)
            + "risk:\n  ignore:\n    - rule: fresh_approval\n      reason: r\n"
            + f"      until: {spelled}\n"
        )
        assert load_config(path).risk.ignore[0].until == expected


def test_the_risk_rules_get_the_risk_section_as_plain_values() -> None:
    section = {
        "unlimited_threshold": 1000,
        "value_at_risk_usd": "2.5",
        "fresh_approval_hours": 3,
        "ignore": [{"rule": "value_at_risk", "reason": "r"}],
    }
    doc = with_change("risk", section)
    assert parse_config(doc).risk.rules == RuleSettings(
        unlimited_threshold=1000,
        value_at_risk_usd=Decimal("2.5"),
        fresh_approval_hours=3,
        suppressions=(Suppression(rule="value_at_risk", reason="r"),),
    )
    assert parse_config(MINIMAL).risk.rules == RuleSettings()


def test_spender_index_keys_configured_spenders_by_chain_and_address() -> None:
    router = SpenderConfig(address=ROUTER.lower(), label="1inch Router v6", trusted=True)
    vendor = SpenderConfig(address=WALLET2.lower(), label="vendor", trusted=False)
    chains = (
        ChainConfig(id=1, spenders=(router, vendor)),
        ChainConfig(id=8453, spenders=(router,)),
    )
    index = spender_index(chains)
    assert set(index) == {(1, ROUTER.lower()), (1, WALLET2.lower()), (8453, ROUTER.lower())}
    assert index[(8453, ROUTER.lower())].trusted
    assert index[(1, WALLET2.lower())] == KnownSpender(label="vendor", trusted=False)


def test_token_is_a_key_inside_ignore_but_still_a_secret_elsewhere() -> None:
    doc = with_change("risk.ignore", [{"token": PERMIT2, "reason": "r"}])
    assert parse_config(doc).risk.ignore[0].token == PERMIT2.lower()
    with pytest.raises(ConfigError, match="must not be written"):
        parse_config(with_change("risk.token", PERMIT2))


def test_a_token_value_that_is_not_an_address_is_never_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(with_change("risk.ignore", [{"token": "sk-canary-789", "reason": "r"}]))
    assert "sk-canary-789" not in str(info.value)


def test_denylist_file_is_read_relative_to_the_config_file(tmp_path: Path) -> None:
    other = "0x" + "5e" * 20
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "deny.json").write_text(
        json.dumps([{"chain_id": 1, "address": other, "name": "Our incident"}])
    )
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(with_change("risk.denylist_file", "lists/deny.json")))
    risk = load_config(path).risk
    assert risk.denylist_file == tmp_path.resolve() / "lists" / "deny.json"
    assert [(e.chain_id, e.address, e.info.name) for e in risk.denylist] == [
        (1, other, "Our incident")
    ]


def test_bad_denylist_entry_fails_config_load_naming_the_file_and_entry(tmp_path: Path) -> None:
    deny = tmp_path / "deny.json"
    deny.write_text(json.dumps([{"chain_id": 1, "address": "0x12", "name": "x"}]))
    with pytest.raises(ConfigError, match="not a valid address") as info:
        parse_config(with_change("risk.denylist_file", str(deny)))
    assert info.value.path == f"{deny}#[0].address"
