"""The prod stack (Kubernetes) under Pulumi mocks: every service's resources and their key inputs."""

import re

import pytest
import yaml

from components.config import render_placeholders
from components.platform.kubernetes import CONFIG_CHECKSUM_ANNOTATION
from components.services import alertmanager, grafana, jaeger, jaeger_proxy, otel_collector, prometheus
from components.stack import SERVICES
from components.units import format_kubernetes_quantity
from pulumi_harness import (
    GENERATED_PASSWORD,
    TEST_API_METRICS_TOKEN,
    TEST_GRAFANA_ADMIN_PASSWORD,
    ProgramRun,
    mocked_generated_secrets,
    stack_settings,
    string_paths,
)

NAMESPACE = "kubernetes:core/v1:Namespace"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SERVICE = "kubernetes:core/v1:Service"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
SECRET = "kubernetes:core/v1:Secret"
CLAIM = "kubernetes:core/v1:PersistentVolumeClaim"
INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"
RANDOM_PASSWORD = "random:index/randomPassword:RandomPassword"
GRAFANA_PROVIDER = "pulumi:providers:grafana"
GRAFANA_PREFERENCES = "grafana:oss/organizationPreferences:OrganizationPreferences"

NAMESPACE_NAME = "magflow-monitoring"
INGRESS_DOMAIN = "monitoring.magflow.example.com"
# Ingress name to the port name of its backend Service.
WEB_UIS = {grafana.NAME: "http", prometheus.NAME: "http", alertmanager.NAME: "http", jaeger.NAME: "https"}
# Ingresses whose backend is another Service: the Jaeger host routes to its basic-auth proxy.
INGRESS_BACKENDS = {jaeger.NAME: jaeger_proxy.NAME}
CORE_SERVICES = {otel_collector.NAME, prometheus.NAME, alertmanager.NAME, jaeger.NAME, grafana.NAME}
SERVICES_WITH_DATA = [prometheus, alertmanager, grafana, jaeger]


def config_key(path: str) -> str:
    # ConfigMap and Secret keys cannot contain "/", so the platform writes "__" in its place.
    return path.replace("/", "__")


def pod_spec(run: ProgramRun, name: str) -> dict:
    return run.named(DEPLOYMENT, name).value("spec", "template", "spec")


def container(run: ProgramRun, name: str) -> dict:
    containers = pod_spec(run, name)["containers"]
    assert len(containers) == 1, name
    return containers[0]


def rendered_files(service) -> dict[str, str]:
    """Return the files a service's pod mounts: every file it renders."""
    return service.render(stack_settings("prod"), render_placeholders())


def test_services_include_core_stack():
    assert CORE_SERVICES <= {service.NAME for service in SERVICES}


def test_no_docker_resources(prod_run):
    assert prod_run.resources
    assert [resource.name for resource in prod_run.resources if resource.type.startswith("docker:")] == []


def test_namespace_single(prod_run):
    namespaces = prod_run.of_type(NAMESPACE)

    assert len(namespaces) == 1
    assert namespaces[0].value("metadata", "name") == NAMESPACE_NAME
    assert namespaces[0].value("metadata", "labels", "magflow.io/stack") == "prod"


def test_resources_in_namespace(prod_run):
    namespaced = [resource for resource in prod_run.resources if resource.type.startswith("kubernetes:") and resource.type != NAMESPACE]
    assert namespaced

    for resource in namespaced:
        assert resource.value("metadata", "namespace") == NAMESPACE_NAME, f"{resource.type} {resource.name}"


def test_deployment_per_service(prod_run):
    assert prod_run.names(DEPLOYMENT) == {service.NAME for service in SERVICES}


@pytest.mark.parametrize("service", SERVICES, ids=lambda service: service.NAME)
def test_deployment_single_replica_recreate(prod_run, service):
    spec = prod_run.named(DEPLOYMENT, service.NAME).value("spec")

    assert spec["replicas"] == 1
    # A ReadWriteOnce claim attaches to one pod only, so the old pod must stop first.
    assert spec["strategy"] == {"type": "Recreate"}
    assert spec["selector"]["matchLabels"] == spec["template"]["metadata"]["labels"]


@pytest.mark.parametrize("service", SERVICES, ids=lambda service: service.NAME)
def test_deployment_image_pinned(prod_run, service):
    image = container(prod_run, service.NAME)["image"]

    assert image == service.IMAGE
    assert not image.endswith(":latest")
    assert ":" in image.rsplit("/", 1)[-1]


@pytest.mark.parametrize("service", SERVICES, ids=lambda service: service.NAME)
def test_deployment_probes(prod_run, service):
    spec = container(prod_run, service.NAME)

    check = service.workload(stack_settings("prod"), {}).check
    for probe in ("readinessProbe", "livenessProbe"):
        assert probe in spec, f"{service.NAME} has no {probe}"
        # A path behind basic auth gets a TCP probe, because a probe would need the password in the pod spec.
        if check.authenticated:
            assert spec[probe]["tcpSocket"]["port"] in {port["containerPort"] for port in spec["ports"]}
            continue
        assert spec[probe]["httpGet"]["path"].startswith("/")
        assert spec[probe]["httpGet"]["port"] in {port["containerPort"] for port in spec["ports"]}
        assert spec[probe]["httpGet"]["scheme"] == check.scheme


@pytest.mark.parametrize("service", SERVICES, ids=lambda service: service.NAME)
def test_deployment_resources(prod_run, service):
    resources = container(prod_run, service.NAME)["resources"]

    assert set(resources["requests"]) == {"cpu", "memory"}
    assert set(resources["limits"]) == {"cpu", "memory"}


@pytest.mark.parametrize("service", SERVICES, ids=lambda service: service.NAME)
def test_deployment_non_root(prod_run, service):
    context = pod_spec(prod_run, service.NAME)["securityContext"]

    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] > 0
    assert context["fsGroup"] == context["runAsUser"]


@pytest.mark.parametrize("service", SERVICES, ids=lambda service: service.NAME)
def test_deployment_checksum_annotation(prod_run, service):
    annotations = prod_run.named(DEPLOYMENT, service.NAME).value("spec", "template", "metadata", "annotations")

    assert re.fullmatch(r"[0-9a-f]{64}", annotations.get(CONFIG_CHECKSUM_ANNOTATION, ""))


@pytest.mark.parametrize("service", SERVICES, ids=lambda service: service.NAME)
def test_deployment_mounts_every_file(prod_run, service):
    sources = pod_spec(prod_run, service.NAME)["volumes"][0]["projected"]["sources"]
    mounted = {item["path"] for source in sources for kind in ("configMap", "secret") if kind in source for item in source[kind]["items"]}
    mount = container(prod_run, service.NAME)["volumeMounts"][0]

    assert mounted == set(rendered_files(service))
    assert mount == {"name": "config", "mountPath": service.CONFIG_DIR, "readOnly": True}


def test_service_per_deployment(prod_run):
    assert prod_run.names(SERVICE) == prod_run.names(DEPLOYMENT)


@pytest.mark.parametrize("service", SERVICES, ids=lambda service: service.NAME)
def test_service_matches_pods(prod_run, service):
    spec = prod_run.named(SERVICE, service.NAME).value("spec")
    pod_labels = prod_run.named(DEPLOYMENT, service.NAME).value("spec", "template", "metadata", "labels")
    container_ports = {port["name"]: port["containerPort"] for port in container(prod_run, service.NAME)["ports"]}

    assert spec["selector"] == pod_labels
    assert {port["name"]: port["port"] for port in spec["ports"]} == container_ports
    assert all(port["targetPort"] == port["name"] for port in spec["ports"])


@pytest.mark.parametrize("service", SERVICES, ids=lambda service: service.NAME)
def test_config_matches_rendered_files(prod_run, service):
    secrets = {
        "apiMetricsToken": TEST_API_METRICS_TOKEN,
        "grafanaAdminPassword": GENERATED_PASSWORD,
        **mocked_generated_secrets("prod"),
    }
    rendered = service.render(stack_settings("prod"), secrets)
    stored = {}
    if f"{service.NAME}-config" in prod_run.names(CONFIG_MAP):
        stored.update(prod_run.named(CONFIG_MAP, f"{service.NAME}-config").value("data"))
    if f"{service.NAME}-secrets" in prod_run.names(SECRET):
        stored.update(prod_run.named(SECRET, f"{service.NAME}-secrets").value("stringData"))

    assert stored == {config_key(path): text for path, text in rendered.items()}


def test_prometheus_config_map(prod_run):
    data = prod_run.named(CONFIG_MAP, f"{prometheus.NAME}-config").value("data")
    config = yaml.safe_load(data["prometheus.yml"])
    api = next((job for job in config["scrape_configs"] if job["job_name"] == "magflow-api"), None)

    assert api is not None
    assert api["scrape_interval"] == "5s"
    assert [static["targets"] for static in api["static_configs"]] == [["magflow-api.magflow.svc:8000"]]
    assert api["authorization"]["credentials_file"] == "/etc/prometheus/secrets/api-metrics-token"
    assert config["global"]["external_labels"] == {"environment": "production"}


def test_prometheus_rules_in_config_map(prod_run):
    data = prod_run.named(CONFIG_MAP, f"{prometheus.NAME}-config").value("data")
    rule_keys = [key for key in data if key.startswith("rules__")]

    assert rule_keys
    for key in rule_keys:
        assert yaml.safe_load(data[key])["groups"], key


@pytest.mark.parametrize("service", SERVICES, ids=lambda service: service.NAME)
def test_secret_files_only_in_secrets(prod_run, service):
    files = rendered_files(service)
    plain = {config_key(path) for path in files if path not in service.SECRET_FILES}
    secret = {config_key(path) for path in files if path in service.SECRET_FILES}

    if plain:
        assert set(prod_run.named(CONFIG_MAP, f"{service.NAME}-config").value("data")) == plain
    else:
        assert f"{service.NAME}-config" not in prod_run.names(CONFIG_MAP)
    if secret:
        assert set(prod_run.named(SECRET, f"{service.NAME}-secrets").value("stringData")) == secret
    else:
        assert f"{service.NAME}-secrets" not in prod_run.names(SECRET)


def test_secrets_hold_expected_files(prod_run):
    assert "secrets__api-metrics-token" in prod_run.named(SECRET, f"{prometheus.NAME}-secrets").value("stringData")
    assert "alertmanager.yml" in prod_run.named(SECRET, f"{alertmanager.NAME}-secrets").value("stringData")
    assert "secrets__admin-password" in prod_run.named(SECRET, f"{grafana.NAME}-secrets").value("stringData")


def test_api_token_secret(prod_run):
    secret = prod_run.named(SECRET, f"{prometheus.NAME}-secrets")

    assert secret.value("stringData", "secrets__api-metrics-token") == TEST_API_METRICS_TOKEN
    assert secret.is_secret("stringData", "secrets__api-metrics-token")


def test_config_maps_hold_no_secret(prod_run):
    config_maps = prod_run.of_type(CONFIG_MAP)
    assert config_maps

    for config_map in config_maps:
        for path, text in string_paths(config_map.inputs):
            assert TEST_API_METRICS_TOKEN not in text, f"{config_map.name} at {path}"
            assert GENERATED_PASSWORD not in text, f"{config_map.name} at {path}"


def test_no_secret_input_in_plain_text(prod_run):
    secret_values = (TEST_API_METRICS_TOKEN, GENERATED_PASSWORD)
    found = []
    for resource in prod_run.resources:
        for path, text in string_paths(resource.inputs):
            if any(value in text for value in secret_values):
                found.append((resource.type, resource.name))
                assert resource.is_secret(*path), f"{resource.type} {resource.name} shows a secret at {path}"
    assert {(SECRET, f"{prometheus.NAME}-secrets"), (SECRET, f"{grafana.NAME}-secrets"), (GRAFANA_PROVIDER, "grafana")} <= set(found)


@pytest.mark.parametrize("service", SERVICES_WITH_DATA, ids=lambda service: service.NAME)
def test_claim_protected(prod_run, service):
    claim = prod_run.named(CLAIM, f"{service.NAME}-data")

    assert claim.protect is True
    assert claim.retain_on_delete is True


@pytest.mark.parametrize("service", SERVICES_WITH_DATA, ids=lambda service: service.NAME)
def test_claim_size_and_class(prod_run, service):
    settings = stack_settings("prod")
    size_bytes = getattr(settings, f"{service.NAME}_volume_size")
    spec = prod_run.named(CLAIM, f"{service.NAME}-data").value("spec")

    assert spec["resources"]["requests"]["storage"] == format_kubernetes_quantity(size_bytes)
    assert spec["accessModes"] == ["ReadWriteOnce"]
    assert spec["storageClassName"] == "standard"


def test_claim_sizes_of_prod_defaults(prod_run):
    storage = {claim.name: claim.value("spec", "resources", "requests", "storage") for claim in prod_run.of_type(CLAIM)}

    assert storage[f"{prometheus.NAME}-data"] == "100Gi"
    assert storage[f"{jaeger.NAME}-data"] == "50Gi"


@pytest.mark.parametrize("service", SERVICES_WITH_DATA, ids=lambda service: service.NAME)
def test_claim_mounted(prod_run, service):
    volumes = {volume["name"]: volume for volume in pod_spec(prod_run, service.NAME)["volumes"]}
    mounts = {mount["name"]: mount["mountPath"] for mount in container(prod_run, service.NAME)["volumeMounts"]}

    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == f"{service.NAME}-data"
    assert mounts["data"] == service.DATA_DIR


def test_claims_only_for_stateful_services(prod_run):
    assert prod_run.names(CLAIM) == {f"{service.NAME}-data" for service in SERVICES_WITH_DATA}


def test_claim_unprotected_outside_production(pulumi_program):
    run = pulumi_program("prod", config={"environment": "development"})
    assert run.error is None
    claims = run.of_type(CLAIM)
    assert claims

    for claim in claims:
        assert claim.protect is False, claim.name
        assert claim.retain_on_delete is True, claim.name


def test_ingress_per_web_ui(prod_run):
    assert prod_run.names(INGRESS) == set(WEB_UIS)


@pytest.mark.parametrize("name", sorted(WEB_UIS))
def test_ingress_routes_to_service(prod_run, name):
    spec = prod_run.named(INGRESS, name).value("spec")
    rule = spec["rules"][0]
    backend = rule["http"]["paths"][0]["backend"]["service"]

    assert len(spec["rules"]) == 1
    assert spec["ingressClassName"] == "nginx"
    assert rule["host"] == f"{name}.{INGRESS_DOMAIN}"
    assert backend == {"name": INGRESS_BACKENDS.get(name, name), "port": {"name": WEB_UIS[name]}}


def test_grafana_admin_password_generated(prod_run):
    password = prod_run.named(RANDOM_PASSWORD, "grafana-admin-password")
    secret = prod_run.named(SECRET, f"{grafana.NAME}-secrets")

    assert password.value("length") == 32
    assert secret.value("stringData", "secrets__admin-password") == GENERATED_PASSWORD
    assert secret.is_secret("stringData", "secrets__admin-password")


def test_grafana_admin_password_configured(pulumi_program):
    run = pulumi_program("prod", secrets={"grafanaAdminPassword": TEST_GRAFANA_ADMIN_PASSWORD})
    assert run.error is None
    secret = run.named(SECRET, f"{grafana.NAME}-secrets")

    assert "grafana-admin-password" not in run.names(RANDOM_PASSWORD)
    assert secret.value("stringData", "secrets__admin-password") == TEST_GRAFANA_ADMIN_PASSWORD
    assert secret.is_secret("stringData", "secrets__admin-password")
    assert run.outputs["grafanaAdminPassword"] == TEST_GRAFANA_ADMIN_PASSWORD
    assert "grafanaAdminPassword" in run.secret_outputs


def test_grafana_provider(prod_run):
    provider = prod_run.named(GRAFANA_PROVIDER, "grafana")

    assert provider.value("url") == f"https://grafana.{INGRESS_DOMAIN}"
    assert provider.value("auth") == f"admin:{GENERATED_PASSWORD}"
    assert provider.is_secret("auth")


def test_grafana_preferences(prod_run):
    preferences = prod_run.named(GRAFANA_PREFERENCES, "grafana-preferences")
    provider = prod_run.named(GRAFANA_PROVIDER, "grafana")

    assert preferences.value("homeDashboardUid") == grafana.home_dashboard_uid()
    assert preferences.provider.startswith(provider.urn + "::")
    assert prod_run.named(DEPLOYMENT, grafana.NAME).urn in preferences.dependencies


def test_outputs_urls(prod_run):
    expected = {
        "platform": "kubernetes",
        "grafanaUrl": f"https://grafana.{INGRESS_DOMAIN}",
        "prometheusUrl": f"https://prometheus.{INGRESS_DOMAIN}",
        "alertmanagerUrl": f"https://alertmanager.{INGRESS_DOMAIN}",
        "jaegerUrl": f"https://jaeger.{INGRESS_DOMAIN}",
        "otlpGrpcEndpoint": f"https://otel-collector.{NAMESPACE_NAME}.svc:4317",
        "otlpHttpEndpoint": f"https://otel-collector.{NAMESPACE_NAME}.svc:4318",
    }

    for name, value in expected.items():
        assert prod_run.outputs.get(name) == value, name


def test_output_admin_password_secret(prod_run):
    assert prod_run.outputs["grafanaAdminPassword"] == GENERATED_PASSWORD
    assert prod_run.secret_outputs == {
        "grafanaAdminPassword",
        "prometheusPassword",
        "alertmanagerPassword",
        "jaegerPassword",
        "otlpBearerToken",
    }


def test_outputs_show_no_secret(prod_run):
    registered = prod_run.registered_outputs
    assert registered

    checked = 0
    for urn, (outputs, secret_paths) in registered.items():
        for path, text in string_paths(outputs):
            if GENERATED_PASSWORD in text or TEST_API_METRICS_TOKEN in text:
                checked += 1
                assert any(path[: len(secret)] == secret for secret in secret_paths), f"{urn} shows a secret at {path}"
    # The stack's and the component's grafanaAdminPassword outputs contain the generated password.
    assert checked >= 2

