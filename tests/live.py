"""Helpers for live tests: free loopback ports, processes with captured logs, readiness waits,
and a rendered stack rewritten so that Debian's binaries can read it on 127.0.0.1.

Every address these helpers produce or contact is on 127.0.0.1.
"""

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from components.config import placeholder_secrets, read_stack_file
from components.render import render_stack
from components.rendering import REPOSITORY_ROOT
from components.settings import load_settings
from components.stack import SERVICES

LOOPBACK = "127.0.0.1"

# No proxy from the environment: a proxy would carry loopback requests to another host.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


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


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET a loopback URL and return the status code and body. HTTP error statuses are returned, not raised."""
    if not url.startswith(f"http://{LOOPBACK}:"):
        raise ValueError(f"invalid URL {url!r}: live tests only contact http://{LOOPBACK}:<port>")
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


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

    NOTE: listen addresses written as separate host and port keys (the collector's and Jaeger's
    own telemetry readers) and data directories such as /badger are left as rendered.
    """
    files = render_stack(stack, out)
    settings = load_settings({**read_stack_file(REPOSITORY_ROOT / f"Pulumi.{stack}.yaml"), **placeholder_secrets()})
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

    return LocalStack(out, files, ports)
