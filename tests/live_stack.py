"""The live end-to-end stack: the reference app, Prometheus, Alertmanager and the blackbox exporter.

`running_stack` renders the dev stack's configuration with `load_settings` and the services'
`render` functions, then moves only hosts, ports and paths to 127.0.0.1 and a temporary folder,
and starts Debian's binaries with the services' own command-line flags. Collector, Jaeger and
Grafana are not started, so Prometheus' scrape jobs of those services are removed.
"""

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, TypeVar

import yaml

from components.config import read_stack_file
from components.rendering import REPOSITORY_ROOT
from components.services import alertmanager, blackbox_exporter, grafana, prometheus
from components.settings import CONFIG_KEYS, StackSettings, load_settings
from components.stack import SERVICES
from components.workload import Workload
from live import (
    LOOPBACK,
    Process,
    free_ports,
    get_json,
    http_get,
    make_test_secrets,
    register_endpoint,
    start_process,
    stop_process,
    wait_until_ready,
)

APP_DIR = REPOSITORY_ROOT / "examples" / "reference_app"
APP_TOKEN_VARIABLE = "MAGFLOW_API_METRICS_TOKEN"

# Debian package that provides each binary, for the error message when one is missing.
BINARIES = {
    "prometheus": "prometheus",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "prometheus-blackbox-exporter": "prometheus-blackbox-exporter",
    "hey": "hey",
}

# Started services, by name, with their Debian binary and the path that returns 200 when ready.
STARTED = {
    blackbox_exporter.NAME: (blackbox_exporter, "prometheus-blackbox-exporter", "/-/healthy"),
    alertmanager.NAME: (alertmanager, "prometheus-alertmanager", "/-/ready"),
    prometheus.NAME: (prometheus, "prometheus", "/-/ready"),
}
NOT_STARTED = tuple(service.NAME for service in SERVICES if service.NAME not in STARTED)

# Prometheus' global scrape and evaluation intervals in the test. The rendered 15s would make a
# `for` of a few seconds meaningless and push alerts past the test's time budget.
TEST_INTERVAL = "1s"
TEST_RESEND_DELAY = "2s"

T = TypeVar("T")


def require_binaries() -> None:
    """Raise RuntimeError that names the Debian package of each binary that is not installed."""
    missing = [package for binary, package in BINARIES.items() if shutil.which(binary) is None]
    if missing:
        raise RuntimeError(
            f"binaries not found for Debian packages {', '.join(missing)}: "
            f"install them with apt-get install {' '.join(missing)} (scripts/test.sh does)"
        )


def load_test_settings(app_address: str, overrides: Mapping[str, Any]) -> StackSettings:
    """Load the dev stack's config with the API target moved to `app_address` and `overrides` applied.

    Raises KeyError for an override that is not a stack config key.
    """
    unknown = sorted(key for key in overrides if key not in CONFIG_KEYS)
    if unknown:
        raise KeyError(f"unknown stack config keys {unknown}: use keys of components/settings.py")

    raw = read_stack_file(REPOSITORY_ROOT / "Pulumi.dev.yaml")
    return load_settings({**raw, **overrides, "apiTargets": [app_address], "apiMetricsToken": "set below"})


@dataclass
class LiveStack:
    """Addresses of a running live stack, and what it was rendered from."""

    settings: StackSettings
    config_root: Path
    app_address: str
    addresses: dict[str, str]
    """127.0.0.1:port of each started service, by service name."""
    processes: list[Process] = field(default_factory=list)

    @property
    def app_url(self) -> str:
        return f"http://{self.app_address}"

    @property
    def prometheus_url(self) -> str:
        return f"https://{self.addresses[prometheus.NAME]}"

    @property
    def alertmanager_url(self) -> str:
        return f"https://{self.addresses[alertmanager.NAME]}"

    def rendered(self, service: str, relative: str) -> str:
        return (self.config_root / service / relative).read_text()

    def rule_groups(self) -> list[dict[str, Any]]:
        """Return every rule group of the rule files that Prometheus loaded."""
        groups = []
        for path in sorted((self.config_root / prometheus.NAME / "rules").glob("*.yml")):
            groups.extend((yaml.safe_load(path.read_text()) or {}).get("groups") or [])
        return groups

    def dashboard(self, name: str) -> dict[str, Any] | None:
        """Return the rendered Grafana dashboard `name`, or None when the stack has none by that name."""
        text = grafana.render(self.settings, {"grafanaAdminPassword": "unused"}).get(f"dashboards/{name}")
        return None if text is None else json.loads(text)

    def logs(self) -> str:
        return "\n".join(f"--- {process.name} (PID {process.pid}) ---\n{process.log(2000)}" for process in self.processes)


def localize_text(text: str, replacements: Mapping[str, str]) -> str:
    """Replace every `old` of `replacements` that is not part of a longer host name or number."""
    for old, new in replacements.items():
        text = re.sub(r"(?<![\w.-])" + re.escape(old) + r"(?![\w])", new, text)
    return text


def localize_prometheus_config(text: str, replacements: Mapping[str, str]) -> str:
    """Rewrite prometheus.yml for the test: loopback addresses, local paths, short intervals.

    Raises ValueError when the config still names a service that the test does not start.
    """
    config = yaml.safe_load(localize_text(text, replacements))
    config["global"]["scrape_interval"] = TEST_INTERVAL
    config["global"]["evaluation_interval"] = TEST_INTERVAL

    # Jobs of services that the test does not start would only report `up == 0`.
    def scrapes_started_service(job: dict[str, Any]) -> bool:
        dumped = yaml.safe_dump(job)
        return not any(re.search(rf"(?<![\w.-]){re.escape(name)}:\d", dumped) for name in NOT_STARTED)

    config["scrape_configs"] = [job for job in config["scrape_configs"] if scrapes_started_service(job)]

    result = yaml.safe_dump(config, sort_keys=False)
    for name in NOT_STARTED:
        if re.search(rf"(?<![\w.-]){re.escape(name)}:\d", result):
            raise ValueError(
                f"prometheus.yml names {name}, which the live test does not start, outside scrape_configs: "
                "move that address to 127.0.0.1 in tests/live_stack.py"
            )
    return result


def check_no_receiver(text: str) -> None:
    """Raise ValueError when alertmanager.yml could notify anyone, since live tests send nothing outside."""
    config = yaml.safe_load(text)
    for receiver in config.get("receivers") or []:
        notifiers = [key for key in receiver if key.endswith("_configs")]
        if notifiers:
            raise ValueError(
                f"receiver {receiver['name']!r} has {notifiers}: the live test needs alertDefaultReceiver "
                "and alertCriticalReceiver set to none"
            )


def localize_args(workload: Workload, config_dir: Path, data_dir: Path, listen: str) -> list[str]:
    """Return the workload's flags with its config and data directories and listen address moved."""
    args = []
    for arg in workload.args:
        arg = arg.replace(workload.config_dir, str(config_dir))
        if workload.data is not None:
            arg = arg.replace(f"={workload.data.mount_path}", f"={data_dir}")
        arg = re.sub(r"=0\.0\.0\.0:\d+$", f"={listen}", arg)
        args.append(arg)
    return args


def write_files(folder: Path, files: Mapping[str, str]) -> None:
    for relative, content in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


def start_app(root: Path, port: int, token: str) -> Process:
    """Start the reference app with uvicorn on 127.0.0.1:`port`, with trace export off."""
    argv = [
        "env",
        *[f"--unset={name}" for name in sorted(os.environ) if name.startswith("OTEL_")],
        f"{APP_TOKEN_VARIABLE}={token}",
        sys.executable, "-m", "uvicorn", "app:app",
        "--app-dir", str(APP_DIR),
        "--host", LOOPBACK,
        "--port", str(port),
        "--no-access-log",
    ]
    return start_process("reference-app", argv, root / "logs" / "reference-app.log")


@contextlib.contextmanager
def running_stack(root: Path, overrides: Mapping[str, Any]) -> Iterator[LiveStack]:
    """Start the app and the three services on free loopback ports, and stop each by its PID on exit.

    The services serve HTTPS with certificates of a test CA and require the rendered basic auth,
    as deployed. Their addresses are registered with those credentials for `http_get`.
    """
    require_binaries()
    app_port, *service_ports = free_ports(1 + len(STARTED))
    addresses = {name: f"{LOOPBACK}:{port}" for name, port in zip(STARTED, service_ports)}
    app_address = f"{LOOPBACK}:{app_port}"
    token = "live-test-token"

    settings = load_test_settings(app_address, overrides)
    live_secrets = make_test_secrets(root / "pki")
    config_root = root / "config"
    stack = LiveStack(settings, config_root, app_address, addresses)

    # Service host:port pairs as the rendered files write them, mapped to the started processes.
    replacements = {
        prometheus.CONFIG_DIR: str(config_root / prometheus.NAME),
        f"localhost:{prometheus.PORT}": addresses[prometheus.NAME],
        f"{alertmanager.NAME}:{alertmanager.PORT}": addresses[alertmanager.NAME],
        f"{blackbox_exporter.NAME}:{blackbox_exporter.PORT}": addresses[blackbox_exporter.NAME],
    }

    try:
        stack.processes.append(start_app(root, app_port, token))
        wait_until_ready(f"{stack.app_url}/health", stack.processes[-1])

        for name, (service, binary, ready_path) in STARTED.items():
            rendered = service.render(settings, {**live_secrets.values, "apiMetricsToken": token})
            # Paths in the other files (web configuration, CA file) move with the config directory.
            files = {path: text.replace(service.CONFIG_DIR, str(config_root / name)) for path, text in rendered.items()}
            if service is prometheus:
                files["prometheus.yml"] = localize_prometheus_config(rendered["prometheus.yml"], replacements)
            if service is alertmanager:
                check_no_receiver(files["alertmanager.yml"])
            write_files(config_root / name, files)

            workload = service.workload(settings, files)
            data_dir = root / "data" / name
            data_dir.mkdir(parents=True, exist_ok=True)
            args = localize_args(workload, config_root / name, data_dir, addresses[name])
            if service is prometheus:
                # The first evaluation runs before the notifier has its Alertmanager, so Prometheus
                # drops that notification and resends only after --rules.alert.resend-delay (1m).
                args.append(f"--rules.alert.resend-delay={TEST_RESEND_DELAY}")
            process = start_process(name, [binary, *args], root / "logs" / f"{name}.log")
            stack.processes.append(process)
            register_endpoint(addresses[name], live_secrets.client(name))
            wait_until_ready(f"https://{addresses[name]}{ready_path}", process)

        yield stack
    finally:
        # Reverse order: Prometheus stops before the services it sends to.
        for process in reversed(stack.processes):
            stop_process(process)


def query(stack: LiveStack, expr: str) -> list[dict[str, Any]]:
    """Run an instant PromQL query and return its result vector. Raises AssertionError on a query error."""
    url = f"{stack.prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    body = get_json(url)
    assert body["status"] == "success", f"query {expr!r} failed: {body}"
    return body["data"]["result"]


def alertmanager_alerts(stack: LiveStack) -> list[dict[str, Any]]:
    return get_json(f"{stack.alertmanager_url}/api/v2/alerts")


def prometheus_alerts(stack: LiveStack) -> list[dict[str, Any]]:
    """Return Prometheus' pending and firing alerts."""
    return get_json(f"{stack.prometheus_url}/api/v1/alerts")["data"]["alerts"]


def wait_for(check: Callable[[], T | None], timeout: float, interval: float = 1.0) -> T | None:
    """Call `check` until it returns a truthy value or `timeout` seconds pass, and return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def wait_for_targets(stack: LiveStack, jobs: set[str], timeout: float = 20.0) -> None:
    """Wait until Prometheus scraped every target of `jobs` successfully. Raises TimeoutError."""

    def healthy_jobs() -> set[str] | None:
        targets = get_json(f"{stack.prometheus_url}/api/v1/targets")["data"]["activeTargets"]
        up = {target["labels"]["job"] for target in targets if target["health"] == "up"}
        return up if jobs <= up else None

    if wait_for(healthy_jobs, timeout) is None:
        targets = get_json(f"{stack.prometheus_url}/api/v1/targets")["data"]["activeTargets"]
        states = {target["scrapeUrl"]: (target["health"], target["lastError"]) for target in targets}
        raise TimeoutError(f"jobs {sorted(jobs)} were not all up after {timeout}s: {states}\n{stack.logs()}")


def run_hey(url: str, *options: str) -> str:
    """Send load to a loopback URL with hey and return its report. `options` must bound it (-n or -z)."""
    if not url.startswith(f"http://{LOOPBACK}:"):
        raise ValueError(f"invalid URL {url!r}: live tests only send traffic to http://{LOOPBACK}:<port>")
    if "-n" not in options and "-z" not in options:
        raise ValueError(f"unbounded hey options {options}: pass -n <requests> or -z <duration>")

    result = subprocess.run(["hey", *options, url], capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"hey {' '.join(options)} {url} failed with exit code {result.returncode}: {result.stderr}")
    return result.stdout


def http_status(url: str) -> int:
    return http_get(url)[0]
