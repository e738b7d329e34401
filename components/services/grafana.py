"""Grafana: datasources and the MagFlow dashboard provisioned from files, admin password from a secret."""

import json
from typing import Any, Mapping

from components import credentials, tls
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
# Basic-auth passwords of the Prometheus and Alertmanager datasources.
PASSWORD_FILES = {service: f"secrets/{service}-password" for service in credentials.PROTECTED}
SECRETS = (
    "grafanaAdminPassword",
    *tls.secret_keys(NAME),
    *(credentials.password_key(service) for service in credentials.PROTECTED),
)
SECRET_FILES = frozenset({ADMIN_PASSWORD_FILE, *PASSWORD_FILES.values(), *tls.SECRET_FILES})

PROMETHEUS_UID = "prometheus"
ALERTMANAGER_UID = "alertmanager"
JAEGER_UID = "jaeger"
EXEMPLAR_TRACE_ID_LABEL = "trace_id"


def public_url(settings: StackSettings) -> str:
    """Return the URL users open, which Grafana needs for links and redirects."""
    if settings.platform == "kubernetes":
        return f"https://{settings.ui_host(NAME)}/"
    return f"https://127.0.0.1:{settings.grafana_port}/"


def render_ini(settings: StackSettings) -> str:
    """Return grafana.ini: no anonymous access, no sign-up, admin password read from a file."""
    annotation_max_age = format_go_duration(parse_duration(settings.grafana_annotation_max_age))
    sections = {
        "server": {
            "protocol": "https",
            "http_port": str(PORT),
            "root_url": public_url(settings),
            "cert_file": f"{CONFIG_DIR}/{tls.CERT_FILE}",
            "cert_key": f"{CONFIG_DIR}/{tls.KEY_FILE}",
        },
        "security": {
            "admin_user": "admin",
            "admin_password": f"$__file{{{CONFIG_DIR}/{ADMIN_PASSWORD_FILE}}}",
            "disable_initial_admin_creation": "false",
            # Session cookies travel over HTTPS only. Lax, not strict, still sends them when a user
            # follows a link from an alert (Slack, email) to a dashboard, and never with cross-site POSTs.
            "cookie_secure": "true",
            "cookie_samesite": "lax",
            "strict_transport_security": "true",
            # Grafana accepts its own root_url; other origins pass the CSRF check only when listed.
            "csrf_trusted_origins": " ".join(_origin(url) for url in settings.cors_allowed_origins),
        },
        "users": {"allow_sign_up": "false", "allow_org_create": "false"},
        "auth.anonymous": {"enabled": "false"},
        "analytics": {"reporting_enabled": "false", "check_for_updates": "false", "check_for_plugin_updates": "false"},
        # Grafana 11 and later download preinstalled plugins at start; the network policies block that,
        # and the stack uses only built-in datasources.
        "plugins": {"preinstall_disabled": "true"},
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


def _origin(url: str) -> str:
    # Grafana compares the host of the Origin header with these entries.
    return url.split("://", 1)[-1].rstrip("/")


def _tls_client() -> tuple[dict[str, Any], dict[str, str]]:
    """Return the jsonData and secureJsonData entries that make a datasource trust the stack's CA."""
    return {"tlsAuthWithCACert": True}, {"tlsCACert": f"$__file{{{CONFIG_DIR}/{tls.CA_FILE}}}"}


def _basic_auth(service: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Return the datasource fields and secureJsonData entries of basic auth; the password stays in its file."""
    return (
        {"basicAuth": True, "basicAuthUser": credentials.BASIC_AUTH_USER},
        {"basicAuthPassword": f"$__file{{{CONFIG_DIR}/{PASSWORD_FILES[service]}}}"},
    )


def render_datasources(settings: StackSettings) -> dict[str, Any]:
    """Return the datasource provisioning file: Prometheus (default), Alertmanager and Jaeger, over HTTPS."""
    tls_json, tls_secure = _tls_client()
    prometheus_auth, prometheus_secure = _basic_auth(ep.PROMETHEUS)
    alertmanager_auth, alertmanager_secure = _basic_auth(ep.ALERTMANAGER)
    return {
        "apiVersion": 1,
        "datasources": [
            {
                "name": "Prometheus",
                "uid": PROMETHEUS_UID,
                "type": "prometheus",
                "access": "proxy",
                "url": f"https://{ep.address(ep.PROMETHEUS, ep.PROMETHEUS_PORT)}",
                "isDefault": True,
                "editable": False,
                **prometheus_auth,
                "secureJsonData": {**tls_secure, **prometheus_secure},
                "jsonData": {
                    **tls_json,
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
                "url": f"https://{ep.address(ep.ALERTMANAGER, ep.ALERTMANAGER_PORT)}",
                "editable": False,
                **alertmanager_auth,
                "secureJsonData": {**tls_secure, **alertmanager_secure},
                "jsonData": {**tls_json, "implementation": "prometheus", "handleGrafanaManagedAlerts": False},
            },
            {
                "name": "Jaeger",
                "uid": JAEGER_UID,
                "type": "jaeger",
                "access": "proxy",
                "url": f"https://{ep.address(ep.JAEGER, ep.JAEGER_UI_PORT)}",
                "editable": False,
                "secureJsonData": dict(tls_secure),
                "jsonData": dict(tls_json),
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
    files.update(tls.files(NAME, secrets))
    for service, path in PASSWORD_FILES.items():
        if credentials.password_key(service) in secrets:
            files[path] = secrets[credentials.password_key(service)]
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
        # /api/health needs no login. curl verifies the certificate against the stack's CA.
        check=HttpCheck(
            "/api/health",
            PORT,
            ("curl", "-fsS", "-o", "/dev/null", "--cacert", f"{CONFIG_DIR}/{tls.CA_FILE}", f"https://localhost:{PORT}/api/health"),
            scheme="HTTPS",
        ),
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
