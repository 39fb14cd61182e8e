"""The listener with TLS and basic auth from an exporter-toolkit web-config file."""

from __future__ import annotations

import signal
import ssl
import subprocess
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

import bcrypt
import pytest
import yaml

from monitor.cli import EXIT_CONFIG, main
from tests.daemon_helpers import daemon_process, simulator_process, wait_for, write_config

pytestmark = pytest.mark.slow


def self_signed(folder: Path) -> Path:
    cert, key = folder / "tls.crt", folder / "tls.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert


def fetch(url: str, context: ssl.SSLContext | None, auth: tuple[str, str] | None) -> int:
    request = urllib.request.Request(url)
    if auth:
        request.add_header(
            "Authorization", "Basic " + b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        )
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_tls_and_basic_auth(tmp_path: Path) -> None:
    cert = self_signed(tmp_path)
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=10)).decode().replace("$2b$", "$2y$")
    (tmp_path / "web.yml").write_text(
        yaml.safe_dump(
            {
                "tls_server_config": {"cert_file": "tls.crt", "key_file": "tls.key"},
                "basic_auth_users": {"prometheus": hashed},
            }
        )
    )
    client = ssl.create_default_context(cafile=str(cert))
    with simulator_process() as base_url:
        config, http_url = write_config(
            tmp_path / "config.yaml", base_url, metrics={"web_config_file": "web.yml"}
        )
        url = http_url.replace("http://", "https://")
        with daemon_process(config) as daemon:
            wait_for(lambda: fetch(url + "/healthz", client, None) == 200, 30, "the TLS listener")
            assert fetch(url + "/metrics", client, ("prometheus", "s3cret")) == 200
            assert fetch(url + "/metrics", client, ("prometheus", "wrong")) == 401
            assert fetch(url + "/metrics", client, ("nobody", "s3cret")) == 401
            assert fetch(url + "/metrics", client, None) == 401
            assert fetch(url + "/", client, None) == 401
            with pytest.raises((urllib.error.URLError, ConnectionError)):  # plain HTTP to TLS
                fetch(http_url + "/healthz", None, None)
            with pytest.raises(urllib.error.URLError):  # a client that does not trust the cert
                fetch(url + "/healthz", ssl.create_default_context(), None)
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=40) == 0


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (
            {"tls_server_config": {"cert_file": "missing.crt", "key_file": "missing.key"}},
            "cannot load",
        ),
        ({"basic_auth_users": {"prometheus": "plaintext-password"}}, "expected a bcrypt hash"),
        ({"tls_config": {}}, "unknown key"),
        ({"tls_server_config": {"key_file": "x"}}, "cert_file: is required"),
    ],
)
def test_bad_web_config_is_a_config_error_that_does_not_echo_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], document: dict[str, object], problem: str
) -> None:
    (tmp_path / "web.yml").write_text(yaml.safe_dump(document))
    config, _ = write_config(
        tmp_path / "config.yaml", "http://127.0.0.1:1", metrics={"web_config_file": "web.yml"}
    )
    assert main(["check", "--config", str(config)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert problem in err
    assert "plaintext-password" not in err
