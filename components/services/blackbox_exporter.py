"""Blackbox exporter: probes each API instance's health endpoint from outside, for Prometheus.

Prometheus' `magflow-api-health` job asks the exporter to probe every API target with the
`http_2xx` module, so a probe fails when the API stops answering `GET /health` with 200, even
while its `/metrics` endpoint still answers.
"""

from typing import Any, Mapping

from components.rendering import to_yaml
from components.services import endpoints as ep
from components.settings import StackSettings
from components.workload import HttpCheck, Port, Resources, Workload

NAME = ep.BLACKBOX_EXPORTER
IMAGE = "prom/blackbox-exporter:v0.27.0"
PORT = ep.BLACKBOX_EXPORTER_PORT
CONFIG_DIR = "/etc/blackbox_exporter"

HTTP_MODULE = "http_2xx"
API_HEALTH_PATH = "/health"

SECRETS: tuple[str, ...] = ()
SECRET_FILES: frozenset[str] = frozenset()


def render_config() -> dict[str, Any]:
    """Return the exporter's config.yml as data."""
    return {
        "modules": {
            HTTP_MODULE: {
                "prober": "http",
                # The exporter also caps each probe at the scrape timeout that Prometheus sends.
                "timeout": "5s",
                "http": {
                    "method": "GET",
                    # Only 200 counts as healthy, so a redirect to a login page or a 204 fails the probe.
                    "valid_status_codes": [200],
                    "preferred_ip_protocol": "ip4",
                },
            }
        }
    }


def render(settings: StackSettings, secrets: Mapping[str, str]) -> dict[str, str]:
    """Return every file the exporter reads, by path relative to its config directory."""
    return {"config.yml": to_yaml(render_config())}


def workload(settings: StackSettings, files: Mapping[str, Any]) -> Workload:
    return Workload(
        name=NAME,
        image=IMAGE,
        args=[f"--config.file={CONFIG_DIR}/config.yml", f"--web.listen-address=0.0.0.0:{PORT}"],
        # Only Prometheus calls the exporter, from inside the Docker network or the cluster.
        ports=[Port("http", PORT)],
        config_dir=CONFIG_DIR,
        files=dict(files),
        check=HttpCheck("/-/healthy", PORT, ("wget", "-q", "-O", "/dev/null", f"http://localhost:{PORT}/-/healthy")),
        resources=Resources("25m", "32Mi", "250m", "128Mi"),
        # The API runs on the developer's machine in the dev stack, and the exporter probes it there.
        extra_hosts={"host.docker.internal": "host-gateway"},
    )
