"""HTTPS and basic auth of the rendered web configurations, measured against Debian's binaries.

Prometheus 2.42, Alertmanager 0.25 and the blackbox exporter 0.23 start on 127.0.0.1 with the
`web.yml` that the services render, a test CA and server certificates made with openssl, and
known passwords hashed with bcrypt. Each endpoint gets five requests: HTTPS with the right
credentials, without credentials, with a wrong password, plain HTTP, and HTTPS from a client
that trusts another CA. Only the first may succeed. The results are written as a Markdown
table to build/security-table.md.
"""

import shutil
import subprocess
import ssl
import time
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from components import credentials
from components.config import read_stack_file, render_placeholders
from components.rendering import REPOSITORY_ROOT
from components.services import alertmanager, blackbox_exporter, prometheus
from components.settings import load_settings
from live import (
    LOOPBACK,
    ClientCredentials,
    LiveSecrets,
    Process,
    free_ports,
    http_request,
    issue_test_ca,
    make_test_secrets,
    register_endpoint,
    start_process,
    stop_process,
    wait_until_ready,
)

pytestmark = pytest.mark.live

TABLE_PATH = REPOSITORY_ROOT / "build" / "security-table.md"
READY_TIMEOUT = 30.0

# Endpoint name, service module, Debian binary and an API path that returns 200 to an authorized client.
ENDPOINTS = {
    "Prometheus": (prometheus, "prometheus", "/api/v1/status/buildinfo"),
    "Alertmanager": (alertmanager, "prometheus-alertmanager", "/api/v2/status"),
}
CASES = ("right credentials", "no credentials", "wrong password", "plain HTTP", "untrusted CA")


@dataclass(frozen=True)
class Result:
    """The outcome of one request: an HTTP status, or the TLS or connection error that ended it."""

    status: int | None
    error: str = ""

    def describe(self) -> str:
        return str(self.status) if self.status is not None else f"rejected: {self.error}"


def _request(url: str, client: ClientCredentials) -> Result:
    try:
        status, _ = http_request(url, client)
        return Result(status)
    except ssl.SSLCertVerificationError as error:
        return Result(None, f"TLS handshake failed ({error.verify_message})")
    except urllib.error.URLError as error:
        reason = error.reason
        if isinstance(reason, ssl.SSLCertVerificationError):
            return Result(None, f"TLS handshake failed ({reason.verify_message})")
        return Result(None, f"connection error ({reason})")


def _local_files(files: dict[str, str], config_dir: str, folder: Path) -> None:
    """Write rendered files under `folder`, with the container's config directory moved there."""
    for relative, content in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content.replace(config_dir, str(folder)))


@dataclass
class SecuredStack:
    secrets: LiveSecrets
    untrusted_ca: Path
    addresses: dict[str, str]
    """127.0.0.1:port by endpoint name, and of the blackbox exporter."""


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredStack]:
    """Start Prometheus, Alertmanager and the blackbox exporter with their rendered web configurations."""
    missing = [binary for _, binary, _ in ENDPOINTS.values() if shutil.which(binary) is None]
    if shutil.which("prometheus-blackbox-exporter") is None:
        missing.append("prometheus-blackbox-exporter")
    if shutil.which("openssl") is None:
        missing.append("openssl")
    if missing:
        pytest.fail(f"binaries not found: {missing}; install the Debian packages with scripts/test.sh")

    root = tmp_path_factory.mktemp("security")
    secrets = make_test_secrets(root / "pki")
    untrusted_ca = issue_test_ca(root / "untrusted", "untrusted")
    settings = load_settings({**read_stack_file(REPOSITORY_ROOT / "Pulumi.dev.yaml"), "apiMetricsToken": "unused"})
    values = {**render_placeholders(), **secrets.values}

    ports = free_ports(len(ENDPOINTS) + 1)
    addresses = {name: f"{LOOPBACK}:{port}" for name, port in zip([*ENDPOINTS, blackbox_exporter.NAME], ports)}
    processes: list[Process] = []
    try:
        for name, (service, binary, _) in ENDPOINTS.items():
            folder = root / service.NAME
            _local_files(service.render(settings, values), service.CONFIG_DIR, folder)
            web_config = str(folder / service.WEB_CONFIG_FILE)
            if service is prometheus:
                # Only the web configuration is under test: no scrape jobs, so nothing is contacted.
                (folder / "minimal.yml").write_text("global:\n  scrape_interval: 15s\n")
                args = [f"--config.file={folder / 'minimal.yml'}", f"--storage.tsdb.path={folder / 'data'}"]
            else:
                args = [f"--config.file={folder / 'alertmanager.yml'}", f"--storage.path={folder / 'data'}", "--cluster.listen-address="]
            argv = [binary, *args, f"--web.listen-address={addresses[name]}", f"--web.config.file={web_config}"]
            processes.append(start_process(name, argv, root / "logs" / f"{service.NAME}.log"))
            register_endpoint(addresses[name], secrets.client(service.NAME))
            wait_until_ready(f"https://{addresses[name]}/-/ready", processes[-1], READY_TIMEOUT)

        folder = root / blackbox_exporter.NAME
        _local_files(blackbox_exporter.render(settings, values), blackbox_exporter.CONFIG_DIR, folder)
        argv = [
            "prometheus-blackbox-exporter",
            f"--config.file={folder / 'config.yml'}",
            f"--web.listen-address={addresses[blackbox_exporter.NAME]}",
            f"--web.config.file={folder / blackbox_exporter.WEB_CONFIG_FILE}",
        ]
        processes.append(start_process(blackbox_exporter.NAME, argv, root / "logs" / "blackbox-exporter.log"))
        register_endpoint(addresses[blackbox_exporter.NAME], secrets.client(blackbox_exporter.NAME))
        wait_until_ready(f"https://{addresses[blackbox_exporter.NAME]}/-/healthy", processes[-1], READY_TIMEOUT)

        yield SecuredStack(secrets, untrusted_ca, addresses)
    finally:
        for process in reversed(processes):
            stop_process(process)


def _clients(stack: SecuredStack, service: str) -> dict[str, tuple[str, ClientCredentials]]:
    """Return the scheme and client of each case."""
    right = stack.secrets.client(service)
    return {
        "right credentials": ("https", right),
        "no credentials": ("https", ClientCredentials(right.ca_file)),
        "wrong password": ("https", ClientCredentials(right.ca_file, credentials.BASIC_AUTH_USER, "wrong-password")),
        "plain HTTP": ("http", right),
        "untrusted CA": ("https", ClientCredentials(stack.untrusted_ca, right.username, right.password)),
    }


@pytest.fixture(scope="module")
def results(secured: SecuredStack) -> dict[tuple[str, str], Result]:
    """Send every case to every endpoint once, and write the table of results."""
    measured = {}
    for name, (service, _, path) in ENDPOINTS.items():
        for case, (scheme, client) in _clients(secured, service.NAME).items():
            measured[(name, case)] = _request(f"{scheme}://{secured.addresses[name]}{path}", client)

    rows = [f"| {name} `{ENDPOINTS[name][2]}` | {case} | {measured[(name, case)].describe()} |" for name, case in measured]
    TABLE_PATH.parent.mkdir(parents=True, exist_ok=True)
    TABLE_PATH.write_text(
        f"Measured {time.strftime('%Y-%m-%d', time.gmtime())} by tests/test_security_live.py "
        "(Debian's Prometheus 2.42 and Alertmanager 0.25 on 127.0.0.1).\n\n"
        "| Endpoint | Case | Result |\n|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    return measured


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_https_right_credentials_accepted(results, endpoint):
    assert results[(endpoint, "right credentials")].status == 200


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
@pytest.mark.parametrize("case", ["no credentials", "wrong password"])
def test_https_bad_credentials_rejected(results, endpoint, case):
    assert results[(endpoint, case)].status == 401, results[(endpoint, case)].describe()


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_plain_http_rejected(results, endpoint):
    # Go's TLS server returns 400 to a plain HTTP request and serves nothing else.
    assert results[(endpoint, "plain HTTP")].status == 400, results[(endpoint, "plain HTTP")].describe()


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_untrusted_ca_rejected(results, endpoint):
    result = results[(endpoint, "untrusted CA")]
    assert result.status is None, result.describe()
    assert "TLS handshake failed" in result.error


def test_table_lists_every_case(results):
    text = TABLE_PATH.read_text()
    assert len(results) == len(ENDPOINTS) * len(CASES)
    for name, case in results:
        assert f"| {case} |" in text, f"{name} {case} missing from {TABLE_PATH}"


def test_tls_probe_reads_expiry(secured):
    # The tls_connect module verifies Prometheus' certificate with the rendered CA file and reports its expiry.
    target = secured.addresses["Prometheus"]
    url = f"https://{secured.addresses[blackbox_exporter.NAME]}/probe?module={blackbox_exporter.TLS_MODULE}&target={target}"
    status, body = http_request(url, secured.secrets.client(blackbox_exporter.NAME))
    samples = {
        line.split()[0]: float(line.split()[1])
        for line in body.decode().splitlines()
        if line and not line.startswith("#") and "{" not in line
    }

    assert status == 200
    assert samples.get("probe_success") == 1, body.decode()[:2000]
    days_left = (samples["probe_ssl_earliest_cert_expiry"] - time.time()) / 86400
    assert 0 < days_left <= 2, f"expiry {days_left:.2f} days away; the test certificates are valid for 2 days"


def test_rendered_web_config_is_checked(secured, tmp_path):
    # promtool validates the rendered web configuration as Prometheus reads it.
    settings = load_settings({**read_stack_file(REPOSITORY_ROOT / "Pulumi.dev.yaml"), "apiMetricsToken": "unused"})
    values = {**render_placeholders(), **secured.secrets.values}
    _local_files(prometheus.render(settings, values), prometheus.CONFIG_DIR, tmp_path)
    web = yaml.safe_load((tmp_path / prometheus.WEB_CONFIG_FILE).read_text())

    assert set(web["basic_auth_users"]) == {credentials.BASIC_AUTH_USER}
    result = subprocess.run(
        ["promtool", "check", "web-config", str(tmp_path / prometheus.WEB_CONFIG_FILE)],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
