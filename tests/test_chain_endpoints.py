"""Which JSON-RPC endpoint a chain gets: YAML, environment, credential, 1inch, in that order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from monitor.chain.endpoints import resolve_endpoint
from monitor.chain.rpc import RpcEndpoint
from monitor.config.secrets import ApiKey
from monitor.errors import ConfigError

KEY = "k3y0123456789abcdefKEY"
ONEINCH_KEY = ApiKey("oneinch0123456789abcdef")
YAML_URL = f"https://yaml.example/v3/{KEY}"
ENV_URL = f"https://env.example:8545/rpc?apikey={KEY}"
CREDENTIAL_URL = f"http://user:{KEY}@credential.example/"


def resolve(chain_id: int = 1, **overrides: Any) -> RpcEndpoint | None:
    options: dict[str, Any] = {
        "configured_url": None,
        "configured_at": "chains[0].rpc.url",
        "environ": {},
        "credentials_dir": None,
        "oneinch_base_url": "https://api.1inch.dev/",
        "oneinch_key": None,
    }
    options.update(overrides)
    return resolve_endpoint(chain_id, **options)


@pytest.fixture
def credentials(tmp_path: Path) -> Path:
    (tmp_path / "rpc_url_1").write_text(f"  {CREDENTIAL_URL}\n", encoding="utf-8")
    return tmp_path


def test_the_yaml_url_wins_over_everything(credentials: Path) -> None:
    found = resolve(
        configured_url=YAML_URL,
        environ={"EXPOSURE_MONITOR_RPC_URL_1": ENV_URL},
        credentials_dir=credentials,
        oneinch_key=ONEINCH_KEY,
    )
    assert found == RpcEndpoint(chain_id=1, url=YAML_URL, origin="chains[0].rpc.url")
    assert found is not None
    assert found.headers == {}


def test_the_environment_comes_next(credentials: Path) -> None:
    found = resolve(
        environ={"EXPOSURE_MONITOR_RPC_URL_1": ENV_URL},
        credentials_dir=credentials,
        oneinch_key=ONEINCH_KEY,
    )
    assert found is not None
    assert (found.url, found.origin) == (ENV_URL, "environment variable EXPOSURE_MONITOR_RPC_URL_1")
    assert found.display == "https://env.example:8545"


def test_then_the_credential_stripped_of_its_newline(credentials: Path) -> None:
    found = resolve(
        environ={"EXPOSURE_MONITOR_RPC_URL_10": ENV_URL},  # another chain's
        credentials_dir=credentials,
        oneinch_key=ONEINCH_KEY,
    )
    assert found is not None
    assert (found.url, found.origin) == (CREDENTIAL_URL, "credential rpc_url_1")
    assert found.display == "http://credential.example"


def test_then_the_1inch_web3_api_with_the_key_as_bearer(tmp_path: Path) -> None:
    found = resolve(137, credentials_dir=tmp_path, oneinch_key=ONEINCH_KEY)
    assert found is not None
    assert found.url == "https://api.1inch.dev/web3/137"
    assert found.headers == {"Authorization": f"Bearer {ONEINCH_KEY.reveal()}"}
    assert found.origin == "1inch Web3 RPC API"
    assert found.chain_id == 137
    assert ONEINCH_KEY.reveal() not in repr(found) + str(found)


def test_a_simulator_base_url_serves_its_web3_api_without_a_key(tmp_path: Path) -> None:
    found = resolve(8453, credentials_dir=tmp_path, oneinch_base_url="http://127.0.0.1:8080/")
    assert found is not None
    assert found.url == "http://127.0.0.1:8080/web3/8453"
    assert found.headers == {}
    # The real API answers nothing without a key: no endpoint then.
    assert resolve(8453, credentials_dir=tmp_path) is None


def test_nothing_found_is_none(tmp_path: Path) -> None:
    assert resolve(credentials_dir=tmp_path) is None
    assert resolve(environ={"EXPOSURE_MONITOR_RPC_URL_56": ENV_URL}) is None


@pytest.mark.parametrize(
    "bad",
    [
        f"ftp://host.example/{KEY}",
        f"{KEY}",
        f"wss://host.example/{KEY}",
        f"https:///{KEY}",
        f"https://host.example:99999999/{KEY}",
        f"https://host.example/{KEY} extra",
        "   ",
        "",
    ],
)
@pytest.mark.parametrize(
    ("where", "origin"),
    [
        ("yaml", "chains[0].rpc.url"),
        ("env", "environment variable EXPOSURE_MONITOR_RPC_URL_1"),
        ("credential", "credential rpc_url_1"),
    ],
)
def test_a_bad_url_names_its_origin_and_never_itself(
    tmp_path: Path, bad: str, where: str, origin: str
) -> None:
    overrides: dict[str, Any] = {}
    if where == "yaml":
        overrides["configured_url"] = bad
    elif where == "env":
        overrides["environ"] = {"EXPOSURE_MONITOR_RPC_URL_1": bad}
    else:
        (tmp_path / "rpc_url_1").write_text(bad, encoding="utf-8")
        overrides["credentials_dir"] = tmp_path
    with pytest.raises(ConfigError) as caught:
        resolve(**overrides)
    assert caught.value.path == origin
    assert KEY not in str(caught.value)
    assert "extra" not in str(caught.value)


def test_an_unreadable_credential_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "rpc_url_1").write_bytes(b"\xff\xfe https://x.example/")
    with pytest.raises(
        ConfigError, match=r"^credential rpc_url_1: cannot read .*UnicodeDecodeError"
    ):
        resolve(credentials_dir=tmp_path)
