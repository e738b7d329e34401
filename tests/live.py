"""Helpers for live tests: free loopback ports, processes with captured logs, readiness waits,
and a rendered stack rewritten so that Debian's binaries can read it on 127.0.0.1.

Every address these helpers produce or contact is on 127.0.0.1.
"""

import base64
import json
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import bcrypt

from components import credentials, tls
from components.config import placeholder_secrets, read_stack_file, render_placeholders
from components.render import render_stack
from components.rendering import REPOSITORY_ROOT
from components.settings import load_settings
from components.stack import SERVICES

LOOPBACK = "127.0.0.1"


def free_ports(count: int) -> list[int]:
    """Return `count` distinct TCP ports that are free on 127.0.0.1 right now.

    The sockets stay bound until all ports are picked, so the kernel cannot hand out one port
    twice. Another process may still take a port before the caller binds it.
    """
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((LOOPBACK, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    return free_ports(1)[0]


@dataclass
class Process:
    """A started process and the file that receives its stdout and stderr."""

    name: str
    popen: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self, tail: int = 4000) -> str:
        """Return the last `tail` characters of the process' log, for failure messages."""
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except FileNotFoundError:
            return f"(log file {self.log_path} not found)"


def start_process(name: str, argv: Sequence[str], log_path: Path, cwd: Path | None = None) -> Process:
    """Start `argv` with stdout and stderr written to `log_path`.

    Raises FileNotFoundError when the binary is not installed.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log_file:
        popen = subprocess.Popen(
            list(argv),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            # A session of its own, so a Ctrl-C in the terminal does not reach it before the finalizer.
            start_new_session=True,
        )
    return Process(name, popen, log_path)


def stop_process(process: Process, timeout: float = 10.0) -> None:
    """Stop a started process by its PID: SIGTERM, then SIGKILL after `timeout` seconds."""
    if process.popen.poll() is not None:
        return

    os.kill(process.pid, signal.SIGTERM)
    try:
        process.popen.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.popen.wait(timeout=timeout)


@dataclass(frozen=True)
class ClientCredentials:
    """What a client presents to one endpoint: the CA file it trusts and optional basic-auth credentials."""

    ca_file: Path | None = None
    username: str | None = None
    password: str | None = None


# Credentials by "127.0.0.1:port", registered by the helpers that start TLS endpoints, so that
# http_get, get_json and wait_until_ready connect to them like a configured client.
_ENDPOINT_CREDENTIALS: dict[str, ClientCredentials] = {}


def register_endpoint(address: str, client: ClientCredentials) -> None:
    _ENDPOINT_CREDENTIALS[address] = client


def check_loopback(url: str) -> None:
    """Raise ValueError unless `url` is http:// or https:// on 127.0.0.1 with a port."""
    if not (url.startswith(f"http://{LOOPBACK}:") or url.startswith(f"https://{LOOPBACK}:")):
        raise ValueError(f"invalid URL {url!r}: live tests only contact http(s)://{LOOPBACK}:<port>")


def http_request(url: str, client: ClientCredentials = ClientCredentials(), timeout: float = 5.0) -> tuple[int, bytes]:
    """GET a loopback URL as `client` and return the status code and body.

    HTTP error statuses are returned, not raised. An HTTPS URL is verified against `client.ca_file`
    (the system's CAs when None), and a failed handshake raises ssl.SSLError or URLError.
    """
    check_loopback(url)
    headers = {}
    if client.username is not None:
        token = base64.b64encode(f"{client.username}:{client.password or ''}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"

    context = None
    if url.startswith("https://"):
        context = ssl.create_default_context(cafile=str(client.ca_file) if client.ca_file else None)
    # No proxy from the environment: a proxy would carry loopback requests to another host.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET a loopback URL with the credentials registered for its address, if any."""
    check_loopback(url)
    client = _ENDPOINT_CREDENTIALS.get(urllib.parse.urlsplit(url).netloc, ClientCredentials())
    return http_request(url, client, timeout)


def get_json(url: str, timeout: float = 5.0) -> Any:
    """GET a loopback URL and return its JSON body. Raises AssertionError on a status other than 200."""
    status, body = http_get(url, timeout)
    assert status == 200, f"GET {url} returned {status}: {body[:500]!r}"
    return json.loads(body)


def wait_until_ready(url: str, process: Process, timeout: float = 30.0) -> None:
    """Poll `url` until it returns 200.

    Raises TimeoutError on timeout and RuntimeError when the process exits first, both with its log.
    """
    deadline = time.monotonic() + timeout
    last = "no response"
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise RuntimeError(
                f"{process.name} (PID {process.pid}) exited with code {process.popen.returncode} "
                f"before {url} was ready. Log:\n{process.log()}"
            )
        try:
            status, body = http_get(url, timeout=2.0)
            if status == 200:
                return
            last = f"status {status}: {body[:200]!r}"
        except OSError as error:
            last = str(error)
        time.sleep(0.2)
    raise TimeoutError(
        f"{process.name} (PID {process.pid}) was not ready at {url} after {timeout}s (last: {last}). "
        f"Log:\n{process.log()}"
    )


# --- Test certificates and credentials ---------------------------------------------------------

TEST_CERTIFICATE_DAYS = 2


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed with exit code {result.returncode}: {result.stderr}")


def issue_test_ca(folder: Path, name: str = "ca") -> Path:
    """Create a self-signed ECDSA P-256 CA with openssl in `folder`; return its certificate's path."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", str(TEST_CERTIFICATE_DAYS),
        "-subj", f"/CN=magflow-monitoring live test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )
    return folder / f"{name}.crt"


def issue_test_certificate(folder: Path, ca_cert: Path, service: str) -> tuple[str, str]:
    """Sign a server certificate for `service`, localhost and 127.0.0.1 with the CA next to `ca_cert`.

    Returns the certificate and private key as PEM text, as pulumi-tls would.
    """
    ca_key = ca_cert.with_suffix(".key")
    (folder / f"{service}.ext").write_text(
        f"subjectAltName=DNS:{service},DNS:localhost,IP:{LOOPBACK}\nextendedKeyUsage=serverAuth\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
    )
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{service}.key", "-out", f"{service}.csr", "-subj", f"/CN={service}",
        cwd=folder,
    )
    _openssl(
        "x509", "-req", "-in", f"{service}.csr", "-CA", str(ca_cert), "-CAkey", str(ca_key), "-CAcreateserial",
        "-days", str(TEST_CERTIFICATE_DAYS), "-extfile", f"{service}.ext", "-out", f"{service}.crt",
        cwd=folder,
    )
    return (folder / f"{service}.crt").read_text(), (folder / f"{service}.key").read_text()


@dataclass
class LiveSecrets:
    """Certificates of a test CA and known passwords, keyed as the services' `render` reads them."""

    ca_file: Path
    values: dict[str, str]

    def client(self, service: str) -> ClientCredentials:
        """Return the credentials that a configured client presents to `service`: the CA, and basic auth where required."""
        if service in credentials.PROTECTED:
            return ClientCredentials(self.ca_file, credentials.BASIC_AUTH_USER, self.values[credentials.password_key(service)])
        return ClientCredentials(self.ca_file)


def make_test_secrets(folder: Path) -> LiveSecrets:
    """Issue a test CA and a certificate per served service, and a random password with its bcrypt hash per protected service."""
    ca_file = issue_test_ca(folder)
    values = {tls.CA_CERT_KEY: ca_file.read_text()}
    for service in tls.SERVED:
        values[tls.cert_key(service)], values[tls.key_key(service)] = issue_test_certificate(folder, ca_file, service)
    for service in (*credentials.PROTECTED, *credentials.PROXY_PROTECTED):
        password = secrets.token_hex(16)
        values[credentials.password_key(service)] = password
        # Cost 10, as pulumi-random's bcrypt_hash; the Debian binaries verify it on every request.
        values[credentials.hash_key(service)] = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
    return LiveSecrets(ca_file, values)


# Container configuration directories, by service name: the folder `render_stack` writes each to.
CONFIG_DIRS: dict[str, str] = {service.NAME: service.CONFIG_DIR for service in SERVICES}
# Every service name is a host name on the stack's network.
SERVICE_HOSTS = tuple(service.NAME for service in SERVICES)
# Hosts that name the service whose file contains them: its own listen or self-scrape address.
SELF_HOSTS = ("0.0.0.0", "localhost")


@dataclass
class LocalStack:
    """A rendered stack rewritten for one machine, with the port map that the rewrite used."""

    root: Path
    files: list[Path]
    ports: dict[tuple[str, int], int] = field(default_factory=dict)
    """Loopback port that replaces each (service host, container port) pair."""
    secrets: LiveSecrets | None = None
    """The test CA and passwords that the files were rendered with."""

    def path(self, service: str, relative: str) -> Path:
        return self.root / service / relative

    def port(self, host: str, container_port: int) -> int:
        """Return the loopback port that replaced `host:container_port`. Raises KeyError if no file used it."""
        return self.ports[(host, container_port)]

    def address(self, host: str, container_port: int) -> str:
        return f"{LOOPBACK}:{self.port(host, container_port)}"


def render_local_stack(stack: str, out: Path) -> LocalStack:
    """Render `Pulumi.<stack>.yaml` into `out` with `render_stack`, then rewrite it for local use.

    Only two things change in the files. Each service's container configuration directory (such
    as /etc/prometheus) becomes its folder under `out`. Each `host:port` pair of a stack service,
    a scrape target of the API, or a 0.0.0.0/localhost listen address becomes 127.0.0.1 and a free
    port. The same service and container port always get the same free port, so the addresses
    that services use to reach each other still match.

    Certificates, keys and basic-auth passwords are real ones from `make_test_secrets` (under
    `out/pki`), and every service address is registered with them, so `http_get` connects to the
    started services over HTTPS with the test CA and, where required, basic auth.

    NOTE: listen addresses written as separate host and port keys (the collector's and Jaeger's
    own telemetry readers) and data directories such as /badger are left as rendered.
    """
    files = render_stack(stack, out)
    settings = load_settings({**read_stack_file(REPOSITORY_ROOT / f"Pulumi.{stack}.yaml"), **placeholder_secrets()})

    # The same files, rendered again with a test CA and known passwords instead of placeholders.
    live_secrets = make_test_secrets(out / "pki")
    for service in SERVICES:
        for relative, content in service.render(settings, {**render_placeholders(), **live_secrets.values}).items():
            (out / service.NAME / relative).write_text(content)
    api_hosts = sorted({target.rsplit(":", 1)[0] for target in settings.api_targets})

    hosts = [*SERVICE_HOSTS, *api_hosts, *SELF_HOSTS]
    pair = re.compile(r"(?<![\w.-])(" + "|".join(re.escape(host) for host in hosts) + r"):(\d{1,5})(?!\d)")

    texts = {path: path.read_text() for path in files}
    owners = {path: path.relative_to(out).parts[0] for path in files}

    # First pass: every (host, port) pair in every file, so the ports can be picked at once.
    def key(match: re.Match, owner: str) -> tuple[str, int]:
        host = owner if match.group(1) in SELF_HOSTS else match.group(1)
        return host, int(match.group(2))

    keys = sorted({key(match, owners[path]) for path, text in texts.items() for match in pair.finditer(text)})
    ports = dict(zip(keys, free_ports(len(keys))))

    for path, text in texts.items():
        owner = owners[path]
        text = pair.sub(lambda match: f"{LOOPBACK}:{ports[key(match, owner)]}", text)
        for service, config_dir in CONFIG_DIRS.items():
            local_dir = str(out / service)
            text = re.sub(re.escape(config_dir) + r"(?=/|\b)", lambda _: local_dir, text)
        path.write_text(text)

    for (host, _), port in ports.items():
        if host in tls.SERVED:
            register_endpoint(f"{LOOPBACK}:{port}", live_secrets.client(host))
    return LocalStack(out, files, ports, live_secrets)
