"""Checks of the rendered configuration: Debian's promtool and amtool on every stack's files,
secret handling in rendered files, and the structure of the Prometheus and collector configs.

promtool is Prometheus 2.42 and amtool is Alertmanager 0.25, older than the images deployed, so
a pass here means the files use nothing newer than those versions.
"""

import fnmatch
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.config import placeholder_secrets, read_stack_file, render_placeholders, secret_placeholder
from components.rendering import REPOSITORY_ROOT
from components.services import alertmanager, endpoints as ep, grafana, otel_collector, prometheus
from components.settings import StackSettings, load_settings
from components.stack import SERVICES, describe
from live import LocalStack, render_local_stack

STACKS = ["dev", "prod"]
TOOL_TIMEOUT = 60

# Receiver choices that put every receiver secret into alertmanager.yml, on top of a stack file.
RECEIVER_VARIANTS: dict[str, dict[str, Any]] = {
    "webhook-slack": {
        "alertDefaultReceiver": "webhook",
        "alertCriticalReceiver": "slack",
        "alertSlackChannel": "#magflow-alerts",
    },
    "email": {
        "alertDefaultReceiver": "email",
        "alertCriticalReceiver": "email",
        "alertEmailTo": "oncall@example.com",
        "alertEmailFrom": "alertmanager@example.com",
        "alertEmailSmarthost": "smtp.example.com:587",
        "alertEmailUsername": "alertmanager",
    },
}

PLACEHOLDER_MARKERS = ("SECRET-PLACEHOLDER-", "secret-placeholder.invalid")


def stack_settings(stack: str, overrides: dict[str, Any] | None = None) -> StackSettings:
    """Load `Pulumi.<stack>.yaml` as `render_stack` does, with every secret set to its placeholder."""
    raw = read_stack_file(REPOSITORY_ROOT / f"Pulumi.{stack}.yaml")
    return load_settings({**raw, **(overrides or {}), **placeholder_secrets()})


def run_tool(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    binary = shutil.which(argv[0])
    if binary is None:
        pytest.fail(f"{argv[0]} not found on PATH: install Debian's package with scripts/test.sh")
    return subprocess.run(
        [binary, *argv[1:]], capture_output=True, text=True, timeout=TOOL_TIMEOUT, cwd=cwd, check=False
    )


def tool_output(result: subprocess.CompletedProcess) -> str:
    return f"exit code {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


@pytest.fixture(scope="module", params=STACKS)
def local_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> LocalStack:
    # credentials_file and rule_files must exist for promtool, so container paths point into the temp dir.
    return render_local_stack(request.param, tmp_path_factory.mktemp(f"{request.param}-stack"))


# promtool and amtool


def test_promtool_check_config(local_stack: LocalStack) -> None:
    config = local_stack.path(ep.PROMETHEUS, "prometheus.yml")
    result = run_tool(["promtool", "check", "config", str(config)])
    assert result.returncode == 0, f"promtool check config {config} failed:\n{tool_output(result)}"


def test_promtool_check_rules(local_stack: LocalStack) -> None:
    rule_files = sorted(local_stack.path(ep.PROMETHEUS, "rules").glob("*.yml"))
    assert rule_files, f"no rule files under {local_stack.path(ep.PROMETHEUS, 'rules')}"

    for path in rule_files:
        result = run_tool(["promtool", "check", "rules", str(path)])
        assert result.returncode == 0, f"promtool check rules {path.name} failed:\n{tool_output(result)}"


def test_amtool_check_config(local_stack: LocalStack) -> None:
    config = local_stack.path(ep.ALERTMANAGER, "alertmanager.yml")
    result = run_tool(["amtool", "check-config", str(config)])
    assert result.returncode == 0, f"amtool check-config {config} failed:\n{tool_output(result)}"


@pytest.mark.parametrize("variant", sorted(RECEIVER_VARIANTS))
def test_amtool_check_config_receivers(variant: str, tmp_path: Path) -> None:
    settings = stack_settings("prod", RECEIVER_VARIANTS[variant])
    config = tmp_path / "alertmanager.yml"
    config.write_text(alertmanager.render(settings, placeholder_secrets())["alertmanager.yml"])

    result = run_tool(["amtool", "check-config", str(config)])
    assert result.returncode == 0, f"amtool check-config ({variant} receivers) failed:\n{tool_output(result)}"


# Secrets


def _variant_settings() -> list[tuple[str, StackSettings]]:
    return [(stack, stack_settings(stack)) for stack in STACKS] + [
        (f"prod+{variant}", stack_settings("prod", overrides)) for variant, overrides in RECEIVER_VARIANTS.items()
    ]


def test_secret_files_hold_marked_placeholders() -> None:
    checked = []
    for label, settings in _variant_settings():
        rendered = describe(settings)
        for service in SERVICES:
            for path in service.SECRET_FILES:
                text = rendered[service.NAME][path]
                # alertmanager.yml contains secrets only when a receiver that needs one is selected.
                if service is alertmanager and settings.alert_default_receiver == settings.alert_critical_receiver == "none":
                    continue
                assert any(marker in text for marker in PLACEHOLDER_MARKERS), (
                    f"{label}: secret file {service.NAME}/{path} has no marked placeholder:\n{text[:500]}"
                )
                checked.append(f"{label}:{service.NAME}/{path}")

    assert any(entry.endswith("alertmanager/alertmanager.yml") for entry in checked), "no receiver variant was checked"
    assert len(checked) >= 2 * len(_variant_settings()), f"too few secret files checked: {checked}"


def test_secret_placeholder_values() -> None:
    assert secret_placeholder("apiMetricsToken") == "SECRET-PLACEHOLDER-apiMetricsToken"
    assert secret_placeholder("alertWebhookUrl").startswith("https://secret-placeholder.invalid/")


def _distinctive_secrets() -> dict[str, str]:
    # Receiver URLs must still parse as URLs, so their token sits in the host name. Certificates
    # (keys ending in .crt) are public and left out; private keys, passwords and hashes are checked.
    return {
        key: f"https://leak-check-7f3a9c-{key.lower()}.invalid/hook" if key.endswith("Url") else f"leak-check-7f3a9c-{key}"
        for key in render_placeholders()
        if not key.endswith(".crt")
    }


def _public_certificates() -> dict[str, str]:
    return {key: f"public-certificate-{key}" for key in render_placeholders() if key.endswith(".crt")}


def test_secret_values_only_in_secret_files() -> None:
    secrets = _distinctive_secrets()
    found: set[str] = set()

    for label, settings in _variant_settings():
        for service in SERVICES:
            files = service.render(settings, {**_public_certificates(), **secrets})
            for path, text in files.items():
                leaked = sorted(key for key, value in secrets.items() if value in text)
                found.update(leaked)
                if leaked:
                    assert path in service.SECRET_FILES, (
                        f"{label}: {service.NAME}/{path} contains the value of {leaked} but is not in "
                        f"{service.NAME}.SECRET_FILES, so it would be stored unencrypted"
                    )

    # Every secret key reaches some file in at least one variant, so the check above saw them all.
    assert found == set(secrets), f"secret values never rendered: {sorted(set(secrets) - found)}"


def test_secret_file_paths_are_rendered() -> None:
    settings = stack_settings("dev")
    rendered = describe(settings)
    for service in SERVICES:
        for path in service.SECRET_FILES:
            assert path in rendered[service.NAME], f"{service.NAME}.SECRET_FILES names {path}, which is not rendered"


# Prometheus structure


def _prometheus_config(stack: str) -> dict[str, Any]:
    return yaml.safe_load(describe(stack_settings(stack))[prometheus.NAME]["prometheus.yml"])


def _jobs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {job["job_name"]: job for job in config["scrape_configs"]}


def _targets(job: dict[str, Any]) -> list[str]:
    return [target for static in job.get("static_configs", []) for target in static["targets"]]


def test_prometheus_api_job() -> None:
    job = _jobs(_prometheus_config("dev"))[prometheus.API_JOB]

    assert job["scrape_interval"] == "5s"
    assert job["metrics_path"] == "/metrics"
    assert job["authorization"]["credentials_file"] == f"{prometheus.CONFIG_DIR}/{prometheus.API_TOKEN_FILE}"
    assert "credentials" not in job["authorization"], "the token must come from the file, not sit in prometheus.yml"
    assert _targets(job) == ["host.docker.internal:8000"]


def test_prometheus_token_file_is_secret() -> None:
    rendered = describe(stack_settings("dev"))[prometheus.NAME]
    assert prometheus.API_TOKEN_FILE in rendered
    assert prometheus.API_TOKEN_FILE in prometheus.SECRET_FILES


@pytest.mark.parametrize(
    ("job_name", "target"),
    [
        (ep.OTEL_COLLECTOR, f"{ep.OTEL_COLLECTOR}:{ep.COLLECTOR_TELEMETRY_PORT}"),
        (ep.PROMETHEUS, f"localhost:{ep.PROMETHEUS_PORT}"),
        (ep.ALERTMANAGER, f"{ep.ALERTMANAGER}:{ep.ALERTMANAGER_PORT}"),
        (ep.GRAFANA, f"{ep.GRAFANA}:{ep.GRAFANA_PORT}"),
        (ep.JAEGER, f"{ep.JAEGER}:{ep.JAEGER_TELEMETRY_PORT}"),
    ],
)
def test_prometheus_component_job(job_name: str, target: str) -> None:
    jobs = _jobs(_prometheus_config("dev"))
    assert job_name in jobs, f"no scrape job {job_name}; jobs: {sorted(jobs)}"
    assert target in _targets(jobs[job_name])


def test_prometheus_job_names_unique() -> None:
    names = [job["job_name"] for job in _prometheus_config("dev")["scrape_configs"]]
    assert names
    assert len(names) == len(set(names)), f"duplicate job names: {names}"


@pytest.mark.parametrize(("stack", "environment"), [("dev", "development"), ("prod", "production")])
def test_prometheus_external_labels(stack: str, environment: str) -> None:
    assert _prometheus_config(stack)["global"]["external_labels"]["environment"] == environment


def test_prometheus_alerting_target() -> None:
    alertmanagers = _prometheus_config("dev")["alerting"]["alertmanagers"]
    targets = [target for entry in alertmanagers for static in entry["static_configs"] for target in static["targets"]]
    assert targets == [f"{ep.ALERTMANAGER}:{ep.ALERTMANAGER_PORT}"]


def test_prometheus_rule_files_glob() -> None:
    config = _prometheus_config("dev")
    rendered = describe(stack_settings("dev"))[prometheus.NAME]
    rule_paths = [f"{prometheus.CONFIG_DIR}/{path}" for path in rendered if path.startswith("rules/")]

    assert rule_paths, "no rule files rendered"
    for path in rule_paths:
        assert any(fnmatch.fnmatch(path, pattern) for pattern in config["rule_files"]), f"{path} matches no rule_files glob"


def test_rule_jobs_are_scraped() -> None:
    rendered = describe(stack_settings("dev"))[prometheus.NAME]
    rule_texts = [text for path, text in rendered.items() if path.startswith("rules/")]
    referenced = {name for text in rule_texts for name in re.findall(r'(?<![\w:])job="([^"]+)"', text)}
    scraped = set(_jobs(_prometheus_config("dev")))

    assert referenced, "rule files select no job by name"
    assert referenced - scraped == set(), f"rules select jobs that no scrape job has: {sorted(referenced - scraped)}"


def test_grafana_datasource_urls() -> None:
    datasources = yaml.safe_load(
        describe(stack_settings("dev"))[grafana.NAME]["provisioning/datasources/datasources.yaml"]
    )["datasources"]
    urls = {source["type"]: source["url"] for source in datasources}

    assert urls.get("prometheus") == f"https://{ep.PROMETHEUS}:{ep.PROMETHEUS_PORT}"
    assert urls.get("alertmanager") == f"https://{ep.ALERTMANAGER}:{ep.ALERTMANAGER_PORT}"
    assert urls.get("jaeger") == f"https://{ep.JAEGER}:{ep.JAEGER_UI_PORT}"


# OpenTelemetry Collector structure


def _collector_config(settings: StackSettings) -> dict[str, Any]:
    return yaml.safe_load(describe(settings)[otel_collector.NAME]["config.yaml"])


def _pipelines(config: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    pipelines = config["service"]["pipelines"]
    assert pipelines, "the collector config has no pipelines"
    return pipelines


@pytest.mark.parametrize("stack", STACKS)
def test_collector_memory_limiter_first(stack: str) -> None:
    for name, pipeline in _pipelines(_collector_config(stack_settings(stack))).items():
        assert pipeline["processors"][0] == "memory_limiter", f"{stack}: pipeline {name} starts with {pipeline['processors']}"


@pytest.mark.parametrize("stack", STACKS)
def test_collector_batch_in_pipelines(stack: str) -> None:
    for name, pipeline in _pipelines(_collector_config(stack_settings(stack))).items():
        assert "batch" in pipeline["processors"], f"{stack}: pipeline {name} lacks batch: {pipeline['processors']}"


def test_collector_debug_exporter_dev() -> None:
    config = _collector_config(stack_settings("dev"))
    assert "debug" in config["exporters"]
    for name, pipeline in _pipelines(config).items():
        assert "debug" in pipeline["exporters"], f"dev: pipeline {name} lacks the debug exporter"


def test_collector_debug_exporter_prod() -> None:
    config = _collector_config(stack_settings("prod"))
    assert "debug" not in config["exporters"]
    for name, pipeline in _pipelines(config).items():
        assert "debug" not in pipeline["exporters"], f"prod: pipeline {name} uses the debug exporter"


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("kind", ["receivers", "processors", "exporters"])
def test_collector_components_used(stack: str, kind: str) -> None:
    config = _collector_config(stack_settings(stack))
    declared = set(config.get(kind) or {})
    used = {name for pipeline in _pipelines(config).values() for name in pipeline.get(kind, [])}

    assert declared, f"{stack}: no {kind} declared"
    assert declared - used == set(), f"{stack}: {kind} declared but unused: {sorted(declared - used)}"
    assert used - declared == set(), f"{stack}: {kind} used but not declared: {sorted(used - declared)}"


@pytest.mark.parametrize("stack", STACKS)
def test_collector_extensions_used(stack: str) -> None:
    config = _collector_config(stack_settings(stack))
    declared = set(config.get("extensions") or {})
    enabled = set(config["service"].get("extensions", []))

    assert declared
    assert declared == enabled, f"{stack}: declared {sorted(declared)}, enabled {sorted(enabled)}"


@pytest.mark.parametrize("stack", STACKS)
def test_collector_health_check(stack: str) -> None:
    config = _collector_config(stack_settings(stack))
    assert "health_check" in config["service"]["extensions"]
    assert config["extensions"]["health_check"]["endpoint"].endswith(f":{ep.COLLECTOR_HEALTH_PORT}")


def _receiver_ports(config: dict[str, Any]) -> set[int]:
    ports = set()
    for receiver in config["receivers"].values():
        for protocol in (receiver or {}).get("protocols", {}).values():
            ports.add(int(protocol["endpoint"].rsplit(":", 1)[1]))
    return ports


@pytest.mark.parametrize("stack", STACKS)
def test_collector_exporters_avoid_own_receivers(stack: str) -> None:
    config = _collector_config(stack_settings(stack))
    receiver_ports = _receiver_ports(config)
    own_hosts = {ep.OTEL_COLLECTOR, "localhost", "127.0.0.1", "0.0.0.0"}

    endpoints = {
        name: exporter["endpoint"] for name, exporter in config["exporters"].items() if exporter and "endpoint" in exporter
    }
    assert receiver_ports, f"{stack}: no receiver ports found"
    assert endpoints, f"{stack}: no exporter endpoints found"

    for name, endpoint in endpoints.items():
        host, port = endpoint.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)
        loops_back = host in own_hosts and int(port) in receiver_ports
        assert not loops_back, f"{stack}: exporter {name} sends to {endpoint}, the collector's own receiver"


def _sampling_percentage(config: dict[str, Any]) -> float:
    """Return the random share of traces, in percent, that the traces pipeline keeps."""
    processors = _pipelines(config)["traces"]["processors"]
    if "probabilistic_sampler" in processors:
        return config["processors"]["probabilistic_sampler"]["sampling_percentage"]

    assert "tail_sampling" in processors, f"the traces pipeline has no sampler: {processors}"
    policies = config["processors"]["tail_sampling"]["policies"]
    shares = [policy["probabilistic"]["sampling_percentage"] for policy in policies if policy["type"] == "probabilistic"]
    assert len(shares) == 1, f"expected one probabilistic tail_sampling policy, found {len(shares)}: {policies}"
    return shares[0]


@pytest.mark.parametrize(("stack", "percentage"), [("dev", 100), ("prod", 10)])
def test_collector_sampler_stack_ratio(stack: str, percentage: float) -> None:
    settings = stack_settings(stack)
    assert settings.trace_sampling_ratio * 100 == pytest.approx(percentage)
    assert _sampling_percentage(_collector_config(settings)) == pytest.approx(percentage)


@pytest.mark.parametrize("stack", STACKS)
def test_collector_sampler_configured_ratio(stack: str) -> None:
    config = _collector_config(stack_settings(stack, {"traceSamplingRatio": "0.25"}))
    assert _sampling_percentage(config) == pytest.approx(25)


def test_grafana_password_from_file() -> None:
    ini = describe(stack_settings("dev"))[grafana.NAME]["grafana.ini"]
    assert f"$__file{{{grafana.CONFIG_DIR}/{grafana.ADMIN_PASSWORD_FILE}}}" in ini
