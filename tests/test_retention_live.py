"""Debian's Prometheus on 127.0.0.1 with the rendered retention flags and scrape guards.

Checks that stored samples survive a restart, that a tiny size limit removes the oldest blocks
while Prometheus keeps serving, and that a target above `sample_limit` fails alone. Old data
comes from `promtool tsdb create-blocks-from openmetrics`; live data from small scrape targets
that the tests serve from Python on free loopback ports.
"""

import json
import shutil
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from components.config import placeholder_secrets, read_stack_file
from components.rendering import REPOSITORY_ROOT
from components.services import prometheus
from components.settings import StackSettings, load_settings
from live import LOOPBACK, Process, free_port, get_json, http_get, start_process, stop_process, wait_until_ready

pytestmark = pytest.mark.live

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
BLOCK_HOURS = 2
SCRAPE_INTERVAL = "1s"


@pytest.fixture(scope="module")
def settings() -> StackSettings:
    """Return the dev stack's settings: the flags and limits under test are rendered from them."""
    if PROMETHEUS is None or PROMTOOL is None:
        pytest.skip("Debian's prometheus package (prometheus and promtool) is not installed: run scripts/test.sh")
    raw = {**read_stack_file(REPOSITORY_ROOT / "Pulumi.dev.yaml"), **placeholder_secrets()}
    return load_settings(raw)


def retention_flags(settings: StackSettings, size: str | None = None) -> list[str]:
    """Return the rendered --storage.tsdb.retention.* flags, with the size limit replaced when `size` is given."""
    flags = [arg for arg in prometheus.args(settings) if arg.startswith("--storage.tsdb.retention.")]
    assert len(flags) == 2, f"expected the retention time and size flags, found {flags}"
    if size is not None:
        flags = [flag for flag in flags if not flag.startswith("--storage.tsdb.retention.size=")]
        flags.append(f"--storage.tsdb.retention.size={size}")
    return flags


def guarded_jobs(settings: StackSettings, targets: dict[str, int]) -> list[dict[str, Any]]:
    """Return scrape jobs for loopback ports, with the rendered sample_limit, label_limit and labeldrop."""
    jobs = [{"job_name": name, "static_configs": [{"targets": [f"{LOOPBACK}:{port}"]}]} for name, port in targets.items()]
    return prometheus.limit_cardinality(jobs, settings)


# --- scrape targets served from this process ---------------------------------------------------


@pytest.fixture
def metrics_target():
    """Return a function that serves a metrics text on a free loopback port and returns the port."""
    servers: list[ThreadingHTTPServer] = []

    def serve(body: str) -> int:
        payload = body.encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server method name
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format, *args):  # noqa: A002 - http.server signature
                pass

        server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_address[1]

    yield serve

    for server in servers:
        server.shutdown()
        server.server_close()


# --- Prometheus processes ----------------------------------------------------------------------


class PrometheusServer:
    """One started Prometheus: its process, data directory and base URL."""

    def __init__(self, process: Process, data_dir: Path, port: int):
        self.process = process
        self.data_dir = data_dir
        self.url = f"http://{LOOPBACK}:{port}"

    def query(self, expression: str, at: float | None = None) -> list[dict[str, Any]]:
        """Run an instant query and return its result list. Raises AssertionError when the query fails."""
        params = {"query": expression}
        if at is not None:
            params["time"] = f"{at:.3f}"
        body = get_json(f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}")
        assert body["status"] == "success", f"query {expression!r} failed: {body}"
        return body["data"]["result"]

    def metric(self, name: str) -> float:
        """Return the value of one of Prometheus' own unlabelled metrics from /metrics."""
        status, body = http_get(f"{self.url}/metrics")
        assert status == 200, f"GET /metrics returned {status}"
        for line in body.decode().splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
        raise AssertionError(f"{name} not found in {self.url}/metrics")


@pytest.fixture
def start_prometheus(tmp_path) -> Callable[..., PrometheusServer]:
    """Return a function that starts Prometheus on a free port. The finalizer stops each one by its PID."""
    started: list[Process] = []

    def start(config: dict[str, Any], data_dir: Path, flags: list[str]) -> PrometheusServer:
        config_path = tmp_path / f"prometheus-{len(started)}.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        port = free_port()
        argv = [
            PROMETHEUS,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={data_dir}",
            f"--web.listen-address={LOOPBACK}:{port}",
            *flags,
        ]
        process = start_process(f"prometheus-{len(started)}", argv, tmp_path / f"prometheus-{len(started)}.log")
        started.append(process)
        wait_until_ready(f"http://{LOOPBACK}:{port}/-/ready", process, timeout=30)
        return PrometheusServer(process, data_dir, port)

    yield start

    for process in started:
        stop_process(process)


def wait_for(condition: Callable[[], Any], timeout: float, message: Callable[[], str]) -> Any:
    """Poll `condition` until it returns a true value, and return that value. Raises TimeoutError with `message()`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise TimeoutError(f"timed out after {timeout}s: {message()}")


# --- old data as TSDB blocks -------------------------------------------------------------------


def create_old_blocks(data_dir: Path, work_dir: Path, start: int, hours: int) -> list[dict[str, Any]]:
    """Write `hours` of one-minute samples of `old_value` from `start` (Unix seconds) as TSDB blocks.

    Returns the blocks' meta.json contents, oldest first. promtool cuts blocks at 2h boundaries.
    """
    lines = ["# HELP old_value Samples written before Prometheus started.", "# TYPE old_value gauge"]
    for timestamp in range(start, start + hours * 3600, 60):
        for series in range(5):
            lines.append(f'old_value{{series="{series}"}} {timestamp % 1000} {timestamp}')
    lines.append("# EOF")
    source = work_dir / "old.om"
    source.write_text("\n".join(lines) + "\n")

    data_dir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", "--quiet", str(source), str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"promtool failed with code {result.returncode}: {result.stderr}"
    return read_blocks(data_dir)


def read_blocks(data_dir: Path) -> list[dict[str, Any]]:
    """Return the meta.json of every block in a TSDB directory, oldest first."""
    metas = [json.loads(path.read_text()) for path in data_dir.glob("*/meta.json")]
    return sorted(metas, key=lambda meta: meta["minTime"])


def block_bytes(data_dir: Path, ulid: str) -> int:
    """Return a block's size as Prometheus counts it for size retention: every file in the block."""
    return sum(path.stat().st_size for path in (data_dir / ulid).rglob("*") if path.is_file())


def aligned_start(days_ago: float) -> int:
    """Return a Unix time about `days_ago` days back, aligned to a block boundary."""
    seconds = int(time.time() - days_ago * 86400)
    return seconds - seconds % (BLOCK_HOURS * 3600)


# --- tests -------------------------------------------------------------------------------------


def test_data_survives_restart(settings, tmp_path, metrics_target, start_prometheus):
    data_dir = tmp_path / "data"
    old_start = aligned_start(days_ago=3)
    blocks = create_old_blocks(data_dir, tmp_path, old_start, hours=4)
    assert len(blocks) == 2

    port = metrics_target('restart_value{user_id="u-1"} 42\n')
    config = {"global": {"scrape_interval": SCRAPE_INTERVAL}, "scrape_configs": guarded_jobs(settings, {"restart": port})}
    first = start_prometheus(config, data_dir, retention_flags(settings))

    wait_for(
        lambda: first.query("count_over_time(restart_value[1m]) >= 3"),
        timeout=20,
        message=lambda: f"fewer than 3 scraped samples. Log:\n{first.process.log()}",
    )
    # Two seconds back, so that every sample at or before this time is already stored.
    checked_at = time.time() - 2
    scraped_before = first.query("restart_value[1m]", at=checked_at)
    old_at = old_start + 3 * 3600
    old_before = first.query("count_over_time(old_value[1h])", at=old_at)
    assert scraped_before and old_before

    stop_process(first.process)
    assert first.process.popen.returncode == 0, f"Prometheus exited with {first.process.popen.returncode}"

    second = start_prometheus(config, data_dir, retention_flags(settings))

    assert second.query("restart_value[1m]", at=checked_at) == scraped_before
    assert second.query("count_over_time(old_value[1h])", at=old_at) == old_before


def test_dropped_labels_not_stored(settings, tmp_path, metrics_target, start_prometheus):
    body = "".join(f'request_value{{endpoint="/items",{label}="x-1"}} 1\n' for label in settings.dropped_metric_labels[:1])
    body += 'kept_value{endpoint="/items",method="GET"} 1\n'
    port = metrics_target(body)
    config = {"global": {"scrape_interval": SCRAPE_INTERVAL}, "scrape_configs": guarded_jobs(settings, {"labels": port})}
    server = start_prometheus(config, tmp_path / "data", retention_flags(settings))

    stored = wait_for(lambda: server.query("request_value"), timeout=20, message=lambda: server.process.log())

    assert len(stored) == 1
    assert settings.dropped_metric_labels[0] not in stored[0]["metric"]
    assert stored[0]["metric"]["endpoint"] == "/items"


def test_size_limit_deletes_oldest_blocks(settings, tmp_path, start_prometheus):
    data_dir = tmp_path / "data"
    blocks = create_old_blocks(data_dir, tmp_path, aligned_start(days_ago=3), hours=24)
    assert len(blocks) == 12
    sizes = [block_bytes(data_dir, block["ulid"]) for block in blocks]

    # Room for the three newest blocks and part of a fourth, so older blocks must go.
    limit_kib = (sum(sizes[-3:]) + sizes[-4] // 2) // 1024
    config = {"global": {"scrape_interval": SCRAPE_INTERVAL}, "scrape_configs": []}
    server = start_prometheus(config, data_dir, retention_flags(settings, size=f"{limit_kib}KB"))

    remaining = wait_for(
        lambda: [block["ulid"] for block in read_blocks(data_dir)] if len(read_blocks(data_dir)) < len(blocks) else None,
        timeout=20,
        message=lambda: f"no block was deleted. Log:\n{server.process.log()}",
    )
    ulids = [block["ulid"] for block in blocks]

    assert blocks[0]["ulid"] not in remaining
    assert remaining == ulids[len(ulids) - len(remaining):], "size retention must delete the oldest blocks first"
    assert len(remaining) >= 1
    assert server.process.popen.poll() is None, f"Prometheus exited. Log:\n{server.process.log()}"
    assert http_get(f"{server.url}/-/ready")[0] == 200
    assert server.metric("prometheus_tsdb_size_retentions_total") >= 1
    assert server.query("old_value", at=blocks[-1]["maxTime"] / 1000 - 60)
    assert not server.query("old_value", at=blocks[0]["maxTime"] / 1000 - 60)


def test_sample_limit_fails_target_alone(settings, tmp_path, metrics_target, start_prometheus):
    limit = settings.scrape_sample_limit
    oversized = metrics_target("".join(f'oversized_value{{series="{index}"}} 1\n' for index in range(limit + 1)))
    normal = metrics_target('normal_value{series="a"} 1\nnormal_value{series="b"} 2\n')
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL},
        "scrape_configs": guarded_jobs(settings, {"oversized": oversized, "normal": normal}),
    }
    server = start_prometheus(config, tmp_path / "data", retention_flags(settings))

    def scraped_targets() -> dict[str, dict[str, Any]] | None:
        targets = get_json(f"{server.url}/api/v1/targets")["data"]["activeTargets"]
        by_job = {target["labels"]["job"]: target for target in targets}
        done = len(by_job) == 2 and all(target["health"] != "unknown" for target in by_job.values())
        return by_job if done else None

    targets = wait_for(scraped_targets, timeout=30, message=lambda: server.process.log())

    assert targets["oversized"]["health"] == "down"
    assert "sample limit" in targets["oversized"]["lastError"]
    assert targets["normal"]["health"] == "up"
    assert server.query('up{job="oversized"} == 0')
    assert server.query('up{job="normal"} == 1')
    assert not server.query("oversized_value")
    assert len(server.query("normal_value")) == 2
