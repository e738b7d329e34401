"""Grafana: datasources and the MagFlow dashboard provisioned from files, admin password from a secret."""

import json
from typing import Any, Mapping

from components.rendering import REPOSITORY_ROOT, to_yaml
from components.services import endpoints as ep
from components.settings import StackSettings
from components.units import format_go_duration, parse_duration
from components.workload import DataVolume, HttpCheck, Port, Resources, Workload

NAME = ep.GRAFANA
IMAGE = "grafana/grafana:12.0.2"
PORT = ep.GRAFANA_PORT
CONFIG_DIR = "/etc/grafana"
DATA_DIR = "/var/lib/grafana"
DASHBOARDS_DIR = REPOSITORY_ROOT / "dashboards"

ADMIN_PASSWORD_FILE = "secrets/admin-password"
SECRETS = ("grafanaAdminPassword",)
SECRET_FILES = frozenset({ADMIN_PASSWORD_FILE})

PROMETHEUS_UID = "prometheus"
ALERTMANAGER_UID = "alertmanager"
JAEGER_UID = "jaeger"
EXEMPLAR_TRACE_ID_LABEL = "trace_id"


def public_url(settings: StackSettings) -> str:
    """Return the URL users open, which Grafana needs for links and redirects."""
    if settings.platform == "kubernetes":
        return f"http://{settings.ui_host(NAME)}/"
    return f"http://127.0.0.1:{settings.grafana_port}/"


def render_ini(settings: StackSettings) -> str:
    """Return grafana.ini: no anonymous access, no sign-up, admin password read from a file."""
    annotation_max_age = format_go_duration(parse_duration(settings.grafana_annotation_max_age))
    sections = {
        "server": {"http_port": str(PORT), "root_url": public_url(settings)},
        "security": {
            "admin_user": "admin",
            "admin_password": f"$__file{{{CONFIG_DIR}/{ADMIN_PASSWORD_FILE}}}",
            "disable_initial_admin_creation": "false",
        },
        "users": {"allow_sign_up": "false", "allow_org_create": "false"},
        "auth.anonymous": {"enabled": "false"},
        "analytics": {"reporting_enabled": "false", "check_for_updates": "false"},
        # The root filesystem is read-only, so Grafana logs to stdout instead of /var/log/grafana.
        "log": {"mode": "console"},
        "paths": {"provisioning": f"{CONFIG_DIR}/provisioning", "data": DATA_DIR},
        "dashboards": {"versions_to_keep": str(settings.grafana_dashboard_versions_to_keep)},
        # Grafana's cleanup job deletes older annotations. Hours, because Grafana reads a mixed
        # duration such as 1w2d with Go's parser, which has no day or week unit.
        "annotations.dashboard": {"max_age": annotation_max_age},
        "annotations.api": {"max_age": annotation_max_age},
    }
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {value}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)


def render_datasources(settings: StackSettings) -> dict[str, Any]:
    """Return the datasource provisioning file: Prometheus (default), Alertmanager and Jaeger."""
    return {
        "apiVersion": 1,
        "datasources": [
            {
                "name": "Prometheus",
                "uid": PROMETHEUS_UID,
                "type": "prometheus",
                "access": "proxy",
                "url": f"http://{ep.address(ep.PROMETHEUS, ep.PROMETHEUS_PORT)}",
                "isDefault": True,
                "editable": False,
                "jsonData": {
                    "httpMethod": "POST",
                    "timeInterval": "15s",
                    # Exemplars whose trace_id label (the OpenTelemetry name) links to the trace in Jaeger.
                    "exemplarTraceIdDestinations": [
                        {"name": EXEMPLAR_TRACE_ID_LABEL, "datasourceUid": JAEGER_UID, "urlDisplayLabel": "Trace in Jaeger"}
                    ],
                },
            },
            {
                "name": "Alertmanager",
                "uid": ALERTMANAGER_UID,
                "type": "alertmanager",
                "access": "proxy",
                "url": f"http://{ep.address(ep.ALERTMANAGER, ep.ALERTMANAGER_PORT)}",
                "editable": False,
                "jsonData": {"implementation": "prometheus", "handleGrafanaManagedAlerts": False},
            },
            {
                "name": "Jaeger",
                "uid": JAEGER_UID,
                "type": "jaeger",
                "access": "proxy",
                "url": f"http://{ep.address(ep.JAEGER, ep.JAEGER_UI_PORT)}",
                "editable": False,
            },
        ],
    }


def render_dashboard_provider() -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": "magflow",
                "folder": "MagFlow",
                "type": "file",
                # Dashboards come from the repository; edits in the UI would be lost at the next start.
                "allowUiUpdates": False,
                "disableDeletion": True,
                "options": {"path": f"{CONFIG_DIR}/dashboards"},
            }
        ],
    }


def dashboard_files() -> dict[str, str]:
    """Return the dashboards of `dashboards/`, by file name, checked to be valid JSON."""
    files = {}
    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        text = path.read_text()
        json.loads(text)
        files[path.name] = text
    return files


def render(settings: StackSettings, secrets: Mapping[str, str]) -> dict[str, str]:
    """Return every file Grafana reads, by path relative to its config directory."""
    files = {
        "grafana.ini": render_ini(settings),
        "provisioning/datasources/datasources.yaml": to_yaml(render_datasources(settings)),
        "provisioning/dashboards/magflow.yaml": to_yaml(render_dashboard_provider()),
    }
    files.update({f"dashboards/{name}": text for name, text in dashboard_files().items()})
    files[ADMIN_PASSWORD_FILE] = secrets["grafanaAdminPassword"]
    return files


def workload(settings: StackSettings, files: Mapping[str, Any]) -> Workload:
    return Workload(
        name=NAME,
        image=IMAGE,
        args=[],
        env={"GF_PATHS_CONFIG": f"{CONFIG_DIR}/grafana.ini"},
        ports=[Port("http", PORT, host_port=settings.grafana_port, ingress=True)],
        config_dir=CONFIG_DIR,
        files=dict(files),
        secret_files=SECRET_FILES,
        check=HttpCheck("/api/health", PORT, ("wget", "-q", "-O", "/dev/null", f"http://localhost:{PORT}/api/health")),
        data=DataVolume(DATA_DIR, settings.grafana_volume_size),
        resources=Resources("100m", "128Mi", "1", "512Mi"),
        user=472,
        # Grafana stages plugin downloads and other temporary files in /tmp.
        tmp_dirs=("/tmp",),
    )


HOME_DASHBOARD = "magflow-api.json"


def home_dashboard_uid() -> str:
    """Return the uid of the MagFlow API dashboard, which becomes the organization's home page."""
    return json.loads((DASHBOARDS_DIR / HOME_DASHBOARD).read_text())["uid"]
