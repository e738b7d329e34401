"""HTTPS and basic auth of the rendered web configurations and of Jaeger's proxy, measured against Debian's binaries.

Prometheus 2.42, Alertmanager 0.25 and the blackbox exporter 0.23 start on 127.0.0.1 with the
`web.yml` that the services render, a test CA and server certificates made with openssl, and
known passwords hashed with bcrypt. Each endpoint gets five requests: HTTPS with the right
credentials, without credentials, with a wrong password, plain HTTP, and HTTPS from a client
that trusts another CA. Only the first may succeed. The results are written as a Markdown
table to build/security-table.md.

Debian's Caddy 2.6.2 starts with the Caddyfile of jaeger-proxy, moved to 127.0.0.1, in front of
a Python HTTPS server in place of Jaeger. It gets the same five cases, plus a right client
through a second Caddy whose upstream has a certificate of another CA. Those results go to
build/jaeger-proxy-table.md.
"""

import shutil
import subprocess
import ssl
import sys
import time
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from components import credentials, tls
from components.config import read_stack_file, render_placeholders
from components.rendering import REPOSITORY_ROOT
from components.services import alertmanager, blackbox_exporter, endpoints as ep, jaeger_proxy, prometheus
from components.settings import load_settings
from live import (
    LOOPBACK,
    ClientCredentials,
    LiveSecrets,
    Process,
    free_ports,
    http_request,
    issue_test_ca,
    issue_test_certificate,
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


# --- Jaeger's basic-auth proxy: Debian's Caddy 2.6.2 with the rendered Caddyfile -----------------

PROXY_TABLE_PATH = REPOSITORY_ROOT / "build" / "jaeger-proxy-table.md"
PROXY_PATH = "/api/services"
PROXY_CASES = (*CASES, "untrusted upstream")

# Serves in place of Jaeger's query port: HTTPS with a certificate of the test CA, 200 to every GET.
UPSTREAM_SCRIPT = """
import http.server, ssl, sys

cert_file, key_file, port = sys.argv[1], sys.argv[2], int(sys.argv[3])


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("upstream " + self.path).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


server = http.server.HTTPServer(("127.0.0.1", port), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert_file, key_file)
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"""


@dataclass
class ProxiedJaeger:
    secrets: LiveSecrets
    untrusted_ca: Path
    proxy: str
    """127.0.0.1:port of the Caddy whose upstream has a certificate of the test CA."""
    untrusted_proxy: str
    """127.0.0.1:port of a second Caddy, whose upstream has a certificate of another CA."""


def _replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in the rendered Caddyfile"
    return text.replace(old, new)


def _local_caddyfile(rendered: str, folder: Path, port: int, health_port: int, upstream_port: int) -> Path:
    """Write the rendered Caddyfile with its paths under `folder`, its listeners on 127.0.0.1 and its upstream at `upstream_port`."""
    text = rendered.replace(jaeger_proxy.CONFIG_DIR, str(folder))
    text = _replace_once(text, f"https://:{ep.JAEGER_PROXY_PORT} {{\n", f"https://:{port} {{\n\tbind {LOOPBACK}\n")
    text = _replace_once(text, f"http://:{ep.JAEGER_PROXY_HEALTH_PORT} {{\n", f"http://:{health_port} {{\n\tbind {LOOPBACK}\n")
    text = _replace_once(text, f"https://{jaeger_proxy.UPSTREAM} ", f"https://{LOOPBACK}:{upstream_port} ")
    path = folder / jaeger_proxy.CADDYFILE
    path.write_text(text)
    return path


def _start_upstream(name: str, cert: str, key: str, folder: Path, port: int) -> Process:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "upstream.crt").write_text(cert)
    (folder / "upstream.key").write_text(key)
    (folder / "upstream.py").write_text(UPSTREAM_SCRIPT)
    argv = [sys.executable, str(folder / "upstream.py"), str(folder / "upstream.crt"), str(folder / "upstream.key"), str(port)]
    return start_process(name, argv, folder / f"{name}.log")


def _start_caddy(name: str, caddyfile: Path, folder: Path) -> Process:
    # `env` execs caddy, so the PID is Caddy's. Its state directories stay under `folder`.
    argv = [
        "env", f"XDG_DATA_HOME={folder / 'data'}", f"XDG_CONFIG_HOME={folder / 'config'}", f"HOME={folder}",
        "caddy", "run", "--config", str(caddyfile), "--adapter", "caddyfile",
    ]
    return start_process(name, argv, folder / f"{name}.log")


@pytest.fixture(scope="module")
def proxied_jaeger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxiedJaeger]:
    """Start two HTTPS upstreams and a Caddy with the rendered Caddyfile in front of each."""
    missing = [binary for binary in ("caddy", "openssl") if shutil.which(binary) is None]
    if missing:
        pytest.fail(f"binaries not found: {missing}; install the Debian packages with scripts/test.sh")

    root = tmp_path_factory.mktemp("jaeger-proxy")
    secrets = make_test_secrets(root / "pki")
    untrusted_ca = issue_test_ca(root / "untrusted", "untrusted")
    settings = load_settings({**read_stack_file(REPOSITORY_ROOT / "Pulumi.dev.yaml"), "apiMetricsToken": "unused"})
    rendered = jaeger_proxy.render(settings, {**render_placeholders(), **secrets.values})

    # Upstream certificates name the Jaeger service, which the Caddyfile sets as tls_server_name.
    trusted_cert = (secrets.values[tls.cert_key(ep.JAEGER)], secrets.values[tls.key_key(ep.JAEGER)])
    untrusted_cert = issue_test_certificate(root / "untrusted", untrusted_ca, ep.JAEGER)

    ports = free_ports(6)
    processes: list[Process] = []
    addresses = []
    try:
        for index, (name, (cert, key), ca_file) in enumerate(
            [("trusted", trusted_cert, secrets.ca_file), ("untrusted", untrusted_cert, untrusted_ca)]
        ):
            folder = root / name
            proxy_port, health_port, upstream_port = ports[3 * index: 3 * index + 3]

            processes.append(_start_upstream(f"upstream-{name}", cert, key, folder / "upstream", upstream_port))
            register_endpoint(f"{LOOPBACK}:{upstream_port}", ClientCredentials(ca_file))
            wait_until_ready(f"https://{LOOPBACK}:{upstream_port}/", processes[-1], READY_TIMEOUT)

            _local_files({path: text for path, text in rendered.items() if path != jaeger_proxy.CADDYFILE}, jaeger_proxy.CONFIG_DIR, folder)
            caddyfile = _local_caddyfile(rendered[jaeger_proxy.CADDYFILE], folder, proxy_port, health_port, upstream_port)
            processes.append(_start_caddy(f"caddy-{name}", caddyfile, folder))
            wait_until_ready(f"http://{LOOPBACK}:{health_port}/healthz", processes[-1], READY_TIMEOUT)
            addresses.append(f"{LOOPBACK}:{proxy_port}")

        yield ProxiedJaeger(secrets, untrusted_ca, addresses[0], addresses[1])
    finally:
        for process in reversed(processes):
            stop_process(process)


@pytest.fixture(scope="module")
def proxy_results(proxied_jaeger: ProxiedJaeger) -> dict[str, tuple[Result, bytes]]:
    """Send every case to the proxy once, and write the table of results."""
    password = proxied_jaeger.secrets.values[credentials.password_key(ep.JAEGER)]
    right = ClientCredentials(proxied_jaeger.secrets.ca_file, credentials.BASIC_AUTH_USER, password)
    clients = {
        "right credentials": (f"https://{proxied_jaeger.proxy}", right),
        "no credentials": (f"https://{proxied_jaeger.proxy}", ClientCredentials(right.ca_file)),
        "wrong password": (f"https://{proxied_jaeger.proxy}", ClientCredentials(right.ca_file, right.username, "wrong-password")),
        "plain HTTP": (f"http://{proxied_jaeger.proxy}", right),
        "untrusted CA": (f"https://{proxied_jaeger.proxy}", ClientCredentials(proxied_jaeger.untrusted_ca, right.username, password)),
        # The client is right, but the upstream's certificate comes from another CA.
        "untrusted upstream": (f"https://{proxied_jaeger.untrusted_proxy}", right),
    }

    measured = {}
    for case, (base, client) in clients.items():
        result = _request(f"{base}{PROXY_PATH}", client)
        body = b""
        if result.status is not None:
            _, body = http_request(f"{base}{PROXY_PATH}", client)
        measured[case] = (result, body)

    rows = [f"| Jaeger proxy `{PROXY_PATH}` | {case} | {result.describe()} |" for case, (result, _) in measured.items()]
    PROXY_TABLE_PATH.parent.mkdir(parents=True, exist_ok=True)
    PROXY_TABLE_PATH.write_text(
        f"Measured {time.strftime('%Y-%m-%d', time.gmtime())} by tests/test_security_live.py "
        "(Debian's Caddy 2.6.2 on 127.0.0.1, in front of a Python HTTPS server).\n\n"
        "| Endpoint | Case | Result |\n|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    return measured


def test_proxy_right_credentials_reach_upstream(proxy_results):
    result, body = proxy_results["right credentials"]
    assert result.status == 200, result.describe()
    assert body == f"upstream {PROXY_PATH}".encode()


@pytest.mark.parametrize("case", ["no credentials", "wrong password"])
def test_proxy_bad_credentials_rejected(proxy_results, case):
    result, body = proxy_results[case]
    assert result.status == 401, result.describe()
    assert b"upstream" not in body


def test_proxy_plain_http_rejected(proxy_results):
    # Caddy's Go TLS server returns 400 to a plain HTTP request and forwards nothing.
    result, body = proxy_results["plain HTTP"]
    assert result.status == 400, result.describe()
    assert b"upstream" not in body


def test_proxy_untrusted_ca_rejected(proxy_results):
    result, _ = proxy_results["untrusted CA"]
    assert result.status is None, result.describe()
    assert "TLS handshake failed" in result.error


def test_proxy_untrusted_upstream_rejected(proxy_results):
    # Caddy verifies the upstream with the rendered CA file and returns 502 when that fails.
    result, body = proxy_results["untrusted upstream"]
    assert result.status == 502, result.describe()
    assert b"upstream" not in body


def test_proxy_table_lists_every_case(proxy_results):
    text = PROXY_TABLE_PATH.read_text()
    assert len(proxy_results) == len(PROXY_CASES)
    for case in proxy_results:
        assert f"| {case} |" in text, f"{case} missing from {PROXY_TABLE_PATH}"


def test_caddyfile_valid_for_debian_caddy(tmp_path):
    # `caddy validate` loads the whole configuration, certificates included, without serving it.
    secrets = make_test_secrets(tmp_path / "pki")
    settings = load_settings({**read_stack_file(REPOSITORY_ROOT / "Pulumi.dev.yaml"), "apiMetricsToken": "unused"})
    rendered = jaeger_proxy.render(settings, {**render_placeholders(), **secrets.values})
    _local_files(rendered, jaeger_proxy.CONFIG_DIR, tmp_path / "proxy")

    result = subprocess.run(
        ["env", f"HOME={tmp_path}", f"XDG_DATA_HOME={tmp_path / 'data'}", f"XDG_CONFIG_HOME={tmp_path / 'config'}",
         "caddy", "validate", "--config", str(tmp_path / "proxy" / jaeger_proxy.CADDYFILE), "--adapter", "caddyfile"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "not formatted" not in result.stderr, result.stderr
