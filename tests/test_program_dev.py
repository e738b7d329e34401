"""The dev stack (Docker) under Pulumi mocks: every service's resources and their key inputs."""

import re

import pytest
import yaml

from components.platform.docker import CONFIG_CHECKSUM_LABEL
from components.services import alertmanager, grafana, jaeger, jaeger_proxy, otel_collector, prometheus
from components.stack import SERVICES
from pulumi_harness import (
    GENERATED_PASSWORD,
    TEST_API_METRICS_TOKEN,
    TEST_GRAFANA_ADMIN_PASSWORD,
    ProgramRun,
    RecordedResource,
    mocked_generated_secrets,
    mocked_image_id,
    stack_settings,
    string_paths,
)

NETWORK = "docker:index/network:Network"
IMAGE = "docker:index/remoteImage:RemoteImage"
VOLUME = "docker:index/volume:Volume"
CONTAINER = "docker:index/container:Container"
RANDOM_PASSWORD = "random:index/randomPassword:RandomPassword"
GRAFANA_PROVIDER = "pulumi:providers:grafana"
GRAFANA_PREFERENCES = "grafana:oss/organizationPreferences:OrganizationPreferences"

CORE_SERVICES = {otel_collector.NAME, prometheus.NAME, alertmanager.NAME, jaeger.NAME, grafana.NAME}
SERVICE_NAMES = [service.NAME for service in SERVICES]
SERVICES_WITH_DATA = {prometheus: "/prometheus", alertmanager: "/alertmanager", grafana: "/var/lib/grafana", jaeger: "/badger"}

# Loopback ports of Pulumi.yaml's defaults, which Pulumi.dev.yaml keeps.
PUBLISHED_PORTS = {
    grafana.NAME: {(3000, 3000)},
    prometheus.NAME: {(9090, 9090)},
    alertmanager.NAME: {(9093, 9093)},
    # Jaeger's UI is reachable through its basic-auth proxy only.
    jaeger.NAME: set(),
    jaeger_proxy.NAME: {(16686, 16686)},
    otel_collector.NAME: {(4317, 4317), (4318, 4318)},
}


def uploads(container: RecordedResource) -> dict[str, tuple[int, str]]:
    """Return a container's uploads as file path to (index in `uploads`, content)."""
    return {upload["file"]: (index, upload["content"]) for index, upload in enumerate(container.value("uploads"))}


def service_containers(run: ProgramRun) -> list[RecordedResource]:
    containers = [run.named(CONTAINER, name) for name in SERVICE_NAMES]
    assert containers
    return containers


def test_services_include_core_stack():
    assert CORE_SERVICES <= set(SERVICE_NAMES)


def test_network_single_bridge(dev_run):
    networks = dev_run.of_type(NETWORK)

    assert len(networks) == 1
    assert networks[0].value("name") == "magflow-dev-network"
    assert networks[0].value("driver") == "bridge"


def test_containers_join_network(dev_run):
    for container in service_containers(dev_run):
        attachments = container.value("networksAdvanced")
        assert [attachment["name"] for attachment in attachments] == ["magflow-dev-network"], container.name
        assert attachments[0]["aliases"] == [container.name]


def test_images_pinned(dev_run):
    images = dev_run.of_type(IMAGE)
    assert images

    for image in images:
        reference = image.value("name")
        repository, _, tag = reference.rpartition(":")
        assert repository and "/" not in tag, f"{image.name}: {reference!r} has no tag"
        assert tag != "latest", f"{image.name}: {reference!r} uses the latest tag"
        assert re.search(r"\d", tag), f"{image.name}: tag {tag!r} names no version"


def test_images_match_service_modules(dev_run):
    for service in SERVICES:
        assert dev_run.named(IMAGE, service.NAME).value("name") == service.IMAGE


def test_container_uses_pulled_image(dev_run):
    for container in service_containers(dev_run):
        assert container.value("image") == mocked_image_id(container.name)


@pytest.mark.parametrize("service", list(SERVICES_WITH_DATA), ids=lambda service: service.NAME)
def test_volume_named_and_mounted(dev_run, service):
    volume = dev_run.named(VOLUME, f"{service.NAME}-data")
    container = dev_run.named(CONTAINER, service.NAME)

    assert volume.value("name") == f"magflow-dev-{service.NAME}-data"
    mounts = [(mount["volumeName"], mount["containerPath"]) for mount in container.value("volumes")]
    assert mounts == [(f"magflow-dev-{service.NAME}-data", SERVICES_WITH_DATA[service])]


def test_volumes_only_for_stateful_services(dev_run):
    assert dev_run.names(VOLUME) == {f"{service.NAME}-data" for service in SERVICES_WITH_DATA}


def test_collector_has_no_volume(dev_run):
    assert dev_run.named(CONTAINER, otel_collector.NAME).inputs.get("volumes", []) == []


def test_containers_restart_policy(dev_run):
    for container in service_containers(dev_run):
        assert container.value("restart") == "unless-stopped", container.name


def test_containers_run_as_non_root(dev_run):
    for container in service_containers(dev_run):
        assert container.value("user") not in ("", "0", "root"), container.name


def test_ports_published_on_loopback_only(dev_run):
    ports = [(container.name, port) for container in dev_run.of_type(CONTAINER) for port in container.inputs.get("ports", [])]
    assert ports

    for name, port in ports:
        assert port["ip"] == "127.0.0.1", f"{name} publishes {port}"


@pytest.mark.parametrize("name", sorted(PUBLISHED_PORTS))
def test_published_ports(dev_run, name):
    ports = dev_run.named(CONTAINER, name).value("ports")

    assert {(int(port["internal"]), int(port["external"])) for port in ports} == PUBLISHED_PORTS[name]


@pytest.mark.parametrize("service", [prometheus, alertmanager, grafana, jaeger], ids=lambda service: service.NAME)
def test_healthcheck_where_image_has_shell(dev_run, service):
    healthcheck = dev_run.named(CONTAINER, service.NAME).value("healthcheck")

    check = service.workload(stack_settings("dev"), {}).check
    # Services that serve HTTPS are checked over HTTPS, by a client in their image that verifies the CA.
    scheme = "https" if check.scheme == "HTTPS" else "http"
    urls = [arg for arg in healthcheck["tests"] if f"{scheme}://localhost:" in arg]

    assert healthcheck["tests"][0] == "CMD"
    assert healthcheck["tests"][1:] == list(check.docker_command)
    assert len(urls) == 1, healthcheck["tests"]
    assert dev_run.named(CONTAINER, service.NAME).value("wait") is True


def test_collector_has_no_healthcheck(dev_run):
    # The collector image contains only its binary: no shell or HTTP client to run a check with.
    collector = dev_run.named(CONTAINER, otel_collector.NAME)

    assert "healthcheck" not in collector.inputs
    assert collector.value("wait") is False


def test_config_checksum_label(dev_run):
    for container in service_containers(dev_run):
        labels = {label["label"]: label["value"] for label in container.value("labels")}
        assert re.fullmatch(r"[0-9a-f]{64}", labels.get(CONFIG_CHECKSUM_LABEL, "")), container.name


def test_config_checksum_follows_config(dev_run, pulumi_program):
    changed = pulumi_program("dev", config={"apiScrapeInterval": "10s"})
    assert changed.error is None

    def checksum(run: ProgramRun, name: str) -> str:
        return run.named(CONTAINER, name).value("labels", 0, "value")

    assert checksum(changed, prometheus.NAME) != checksum(dev_run, prometheus.NAME)
    assert checksum(changed, grafana.NAME) == checksum(dev_run, grafana.NAME)


def test_uploads_match_rendered_files(dev_run):
    settings = stack_settings("dev")
    secrets = {"apiMetricsToken": TEST_API_METRICS_TOKEN, "grafanaAdminPassword": GENERATED_PASSWORD, **mocked_generated_secrets("dev")}

    for service in SERVICES:
        rendered = service.render(settings, secrets)
        expected = {f"{service.CONFIG_DIR}/{path}": text for path, text in rendered.items()}
        uploaded = {path: content for path, (_, content) in uploads(dev_run.named(CONTAINER, service.NAME)).items()}
        assert uploaded == expected, service.NAME


def test_uploads_read_only(dev_run):
    for container in service_containers(dev_run):
        for upload in container.value("uploads"):
            assert upload["permissions"] == "0444", f"{container.name}: {upload['file']}"


def test_prometheus_config_scrapes_api(dev_run):
    files = uploads(dev_run.named(CONTAINER, prometheus.NAME))
    config = yaml.safe_load(files["/etc/prometheus/prometheus.yml"][1])
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}

    assert "magflow-api" in jobs
    api = jobs["magflow-api"]
    assert api["scrape_interval"] == "5s"
    assert api["metrics_path"] == "/metrics"
    assert [static["targets"] for static in api["static_configs"]] == [["host.docker.internal:8000"]]
    assert api["authorization"] == {"type": "Bearer", "credentials_file": "/etc/prometheus/secrets/api-metrics-token"}
    assert config["global"]["external_labels"] == {"environment": "development"}


def test_prometheus_credentials_file_uploaded(dev_run):
    files = uploads(dev_run.named(CONTAINER, prometheus.NAME))
    config = yaml.safe_load(files["/etc/prometheus/prometheus.yml"][1])
    api = next(job for job in config["scrape_configs"] if job["job_name"] == "magflow-api")

    assert api["authorization"]["credentials_file"] in files


def test_prometheus_reaches_host_api(dev_run):
    hosts = dev_run.named(CONTAINER, prometheus.NAME).value("hosts")

    assert {"host": "host.docker.internal", "ip": "host-gateway"} in hosts


def test_prometheus_retention_flags(dev_run):
    settings = stack_settings("dev")
    command = dev_run.named(CONTAINER, prometheus.NAME).value("command")

    assert f"--storage.tsdb.retention.time={settings.prometheus_retention_time}" in command
    assert f"--storage.tsdb.retention.size={settings.prometheus_retention_size // 1024**2}MB" in command


def test_api_token_upload_is_secret(dev_run):
    container = dev_run.named(CONTAINER, prometheus.NAME)
    index, content = uploads(container)["/etc/prometheus/secrets/api-metrics-token"]

    assert content == TEST_API_METRICS_TOKEN
    assert container.is_secret("uploads", index, "content")


def test_plain_config_uploads_not_secret(dev_run):
    # A secret prometheus.yml would hide every config change from `pulumi preview --diff`.
    container = dev_run.named(CONTAINER, prometheus.NAME)
    index, _ = uploads(container)["/etc/prometheus/prometheus.yml"]

    assert not container.is_secret("uploads", index, "content")


def test_no_secret_input_in_plain_text(dev_run):
    secret_values = (TEST_API_METRICS_TOKEN, GENERATED_PASSWORD)
    found = []
    for resource in dev_run.resources:
        for path, text in string_paths(resource.inputs):
            if any(value in text for value in secret_values):
                found.append((resource.type, resource.name))
                assert resource.is_secret(*path), f"{resource.type} {resource.name} shows a secret at {path}"
    assert {(CONTAINER, prometheus.NAME), (CONTAINER, grafana.NAME), (GRAFANA_PROVIDER, "grafana")} <= set(found)


def test_grafana_admin_password_generated(dev_run):
    password = dev_run.named(RANDOM_PASSWORD, "grafana-admin-password")
    container = dev_run.named(CONTAINER, grafana.NAME)
    index, content = uploads(container)["/etc/grafana/secrets/admin-password"]

    assert password.value("length") == 32
    assert content == GENERATED_PASSWORD
    assert container.is_secret("uploads", index, "content")


def test_grafana_admin_password_configured(pulumi_program):
    run = pulumi_program("dev", secrets={"grafanaAdminPassword": TEST_GRAFANA_ADMIN_PASSWORD})
    assert run.error is None
    container = run.named(CONTAINER, grafana.NAME)
    index, content = uploads(container)["/etc/grafana/secrets/admin-password"]

    assert "grafana-admin-password" not in run.names(RANDOM_PASSWORD)
    assert content == TEST_GRAFANA_ADMIN_PASSWORD
    assert container.is_secret("uploads", index, "content")
    assert run.outputs["grafanaAdminPassword"] == TEST_GRAFANA_ADMIN_PASSWORD
    assert "grafanaAdminPassword" in run.secret_outputs


def test_grafana_ini_reads_password_file(dev_run):
    ini = uploads(dev_run.named(CONTAINER, grafana.NAME))["/etc/grafana/grafana.ini"][1]

    assert "admin_password = $__file{/etc/grafana/secrets/admin-password}" in ini
    assert "root_url = https://127.0.0.1:3000/" in ini


def test_grafana_provider(dev_run):
    provider = dev_run.named(GRAFANA_PROVIDER, "grafana")

    assert provider.value("url") == "https://127.0.0.1:3000"
    assert provider.value("auth") == f"admin:{GENERATED_PASSWORD}"
    assert provider.is_secret("auth")


def test_grafana_preferences(dev_run):
    preferences = dev_run.named(GRAFANA_PREFERENCES, "grafana-preferences")
    provider = dev_run.named(GRAFANA_PROVIDER, "grafana")

    assert preferences.value("homeDashboardUid") == grafana.home_dashboard_uid()
    assert preferences.value("homeDashboardUid") == "magflow-api"
    assert preferences.provider.startswith(provider.urn + "::")


def test_grafana_preferences_wait_for_grafana(dev_run):
    preferences = dev_run.named(GRAFANA_PREFERENCES, "grafana-preferences")

    assert dev_run.named(CONTAINER, grafana.NAME).urn in preferences.dependencies


def test_outputs_urls(dev_run):
    expected = {
        "platform": "docker",
        "grafanaUrl": "https://127.0.0.1:3000",
        "prometheusUrl": "https://127.0.0.1:9090",
        "alertmanagerUrl": "https://127.0.0.1:9093",
        "jaegerUrl": "https://127.0.0.1:16686",
        "otlpGrpcEndpoint": "https://127.0.0.1:4317",
        "otlpHttpEndpoint": "https://127.0.0.1:4318",
    }

    for name, value in expected.items():
        assert dev_run.outputs.get(name) == value, name


def test_output_admin_password_secret(dev_run):
    assert dev_run.outputs["grafanaAdminPassword"] == GENERATED_PASSWORD
    assert dev_run.secret_outputs == {"grafanaAdminPassword", "prometheusPassword", "alertmanagerPassword", "jaegerPassword"}


def test_outputs_show_no_secret(dev_run):
    registered = dev_run.registered_outputs
    assert registered

    checked = 0
    for urn, (outputs, secret_paths) in registered.items():
        for path, text in string_paths(outputs):
            if GENERATED_PASSWORD in text or TEST_API_METRICS_TOKEN in text:
                checked += 1
                assert any(path[: len(secret)] == secret for secret in secret_paths), f"{urn} shows a secret at {path}"
    # The stack's and the component's grafanaAdminPassword outputs contain the generated password.
    assert checked >= 2
