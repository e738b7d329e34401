"""Hardening of both stacks under Pulumi mocks: container security settings, NetworkPolicies and span scrubbing."""

import re

import pytest
import yaml

from components import network_flows
from components.services import alertmanager, blackbox_exporter, endpoints as ep, grafana, jaeger, jaeger_proxy, otel_collector, prometheus
from components.settings import ConfigError, load_settings
from components.stack import SERVICES
from pulumi_harness import ProgramRun, stack_settings

CONTAINER = "docker:index/container:Container"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
SERVICE_NAMES = [service.NAME for service in SERVICES]
TMP_DIRS = {grafana.NAME: ["/tmp"], jaeger.NAME: ["/tmp"], jaeger_proxy.NAME: ["/config", "/data"]}
# Capabilities added back after dropping ALL: Caddy's binary carries cap_net_bind_service=+ep.
ADDED_CAPABILITIES = {jaeger_proxy.NAME: ["NET_BIND_SERVICE"]}


def service_containers(run: ProgramRun) -> list:
    containers = [run.named(CONTAINER, name) for name in SERVICE_NAMES]
    assert containers
    return containers


def pod_spec(run: ProgramRun, name: str) -> dict:
    return run.named(DEPLOYMENT, name).value("spec", "template", "spec")


# --- Docker (dev) ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_docker_drops_capabilities(dev_run, name):
    container = dev_run.named(CONTAINER, name)
    expected = {"drops": ["ALL"]}
    if name in ADDED_CAPABILITIES:
        expected["adds"] = ADDED_CAPABILITIES[name]
    assert container.value("capabilities") == expected


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_docker_no_new_privileges(dev_run, name):
    assert dev_run.named(CONTAINER, name).value("securityOpts") == ["no-new-privileges:true"]


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_docker_numeric_non_root_user(dev_run, name):
    user = dev_run.named(CONTAINER, name).value("user")
    assert user.isdigit()
    assert int(user) > 0


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_docker_tmpfs(dev_run, name):
    container = dev_run.named(CONTAINER, name)
    assert sorted(container.inputs.get("tmpfs", {})) == TMP_DIRS.get(name, [])


def test_docker_uploads_need_writable_root(dev_run):
    # pulumi-docker extracts uploads at "/", which Docker rejects on a read-only root filesystem.
    for container in service_containers(dev_run):
        assert container.value("uploads"), container.name
        assert container.value("readOnly") is False, container.name


def test_volume_owner_minimal_privileges(dev_run):
    owners = [container for container in dev_run.of_type(CONTAINER) if container.name.endswith("-volume-owner")]
    assert owners
    for owner in owners:
        assert owner.value("user") == "0", owner.name
        assert owner.value("capabilities") == {"drops": ["ALL"], "adds": ["CHOWN"]}, owner.name
        assert owner.value("securityOpts") == ["no-new-privileges:true"], owner.name
        assert owner.value("networkMode") == "none", owner.name
        assert owner.value("command")[0] == "chown", owner.name


# --- Kubernetes (prod) ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_kubernetes_container_security_context(prod_run, name):
    containers = pod_spec(prod_run, name)["containers"]
    assert len(containers) == 1
    context = containers[0]["securityContext"]

    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["runAsNonRoot"] is True
    expected = {"drop": ["ALL"]}
    if name in ADDED_CAPABILITIES:
        expected["add"] = ADDED_CAPABILITIES[name]
    assert context["capabilities"] == expected


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_kubernetes_pod_seccomp(prod_run, name):
    assert pod_spec(prod_run, name)["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_kubernetes_no_service_account_token(prod_run, name):
    assert pod_spec(prod_run, name)["automountServiceAccountToken"] is False


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_kubernetes_tmp_dirs_empty_dir(prod_run, name):
    spec = pod_spec(prod_run, name)
    empty_dirs = {volume["name"] for volume in spec["volumes"] if "emptyDir" in volume}
    mounted = sorted(mount["mountPath"] for mount in spec["containers"][0]["volumeMounts"] if mount["name"] in empty_dirs)
    assert mounted == TMP_DIRS.get(name, [])


def test_grafana_logs_to_console():
    ini = grafana.render_ini(stack_settings("prod"))
    assert "[log]\nmode = console\n" in ini


# --- NetworkPolicies (prod) ----------------------------------------------------------------------


def policy_spec(run: ProgramRun, name: str) -> dict:
    return run.named(NETWORK_POLICY, name).value("spec")


def rule_ports(rule: dict) -> set[int]:
    return {int(port["port"]) for port in rule["ports"]}


def allowed_from(run: ProgramRun, destination: str, source: str) -> set[int]:
    """Return the ports on which the destination's policy admits pods of the stack service `source`."""
    ports = set()
    for rule in policy_spec(run, destination).get("ingress", []):
        for peer in rule.get("from", []):
            if peer.get("podSelector", {}).get("matchLabels") == {"app.kubernetes.io/name": source}:
                ports |= rule_ports(rule)
    return ports


def allowed_to(run: ProgramRun, source: str, destination: str | None) -> set[int]:
    """Return the ports the source's policy lets it connect to; destination None means any address."""
    ports = set()
    for rule in policy_spec(run, source).get("egress", []):
        peers = rule.get("to")
        if destination is None and not peers:
            ports |= rule_ports(rule)
        for peer in peers or []:
            if peer.get("podSelector", {}).get("matchLabels") == {"app.kubernetes.io/name": destination}:
                ports |= rule_ports(rule)
    return ports


def test_default_deny_all(prod_run):
    spec = policy_spec(prod_run, "default-deny")
    assert spec["podSelector"] == {}
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in spec


def test_default_deny_allows_dns_only(prod_run):
    egress = policy_spec(prod_run, "default-deny")["egress"]
    assert len(egress) == 1
    assert "to" not in egress[0]
    assert {(int(port["port"]), port["protocol"]) for port in egress[0]["ports"]} == {(53, "UDP"), (53, "TCP")}


def test_network_policy_per_service(prod_run):
    assert prod_run.names(NETWORK_POLICY) == {"default-deny", *SERVICE_NAMES}


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_network_policy_selects_service(prod_run, name):
    spec = policy_spec(prod_run, name)
    assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == name
    assert spec["policyTypes"] == ["Ingress", "Egress"]


@pytest.mark.parametrize(
    ("name", "port"),
    [
        (grafana.NAME, ep.GRAFANA_PORT),
        (prometheus.NAME, ep.PROMETHEUS_PORT),
        (alertmanager.NAME, ep.ALERTMANAGER_PORT),
        (jaeger_proxy.NAME, ep.JAEGER_PROXY_PORT),
    ],
)
def test_ingress_controller_reaches_web_ui(prod_run, name, port):
    selector = {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}
    rules = [rule for rule in policy_spec(prod_run, name)["ingress"] if {"namespaceSelector": selector} in rule.get("from", [])]
    assert len(rules) == 1
    assert rule_ports(rules[0]) == {port}


def test_ingress_controller_not_to_collector(prod_run):
    sources = [peer for rule in policy_spec(prod_run, otel_collector.NAME)["ingress"] for peer in rule["from"]]
    assert sources
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}} not in sources


def test_otlp_clients_any_namespace(prod_run):
    rules = policy_spec(prod_run, otel_collector.NAME)["ingress"]
    otlp = [rule for rule in rules if rule["from"] == [{"namespaceSelector": {}}]]
    assert len(otlp) == 1
    assert rule_ports(otlp[0]) == {ep.OTLP_GRPC_PORT, ep.OTLP_HTTP_PORT}


def test_otlp_clients_namespace_setting(pulumi_program):
    run = pulumi_program("prod", config={"otlpClientNamespace": "magflow"})
    assert run.error is None
    sources = [rule["from"] for rule in policy_spec(run, otel_collector.NAME)["ingress"]]
    assert [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "magflow"}}}] in sources
    assert [{"namespaceSelector": {}}] not in sources


def test_collector_to_jaeger_otlp(prod_run):
    assert allowed_to(prod_run, otel_collector.NAME, jaeger.NAME) == {ep.OTLP_GRPC_PORT}
    assert allowed_from(prod_run, jaeger.NAME, otel_collector.NAME) == {ep.OTLP_GRPC_PORT}


SCRAPE_TARGETS = {
    otel_collector.NAME: {ep.COLLECTOR_TELEMETRY_PORT, ep.COLLECTOR_PROMETHEUS_EXPORTER_PORT},
    alertmanager.NAME: {ep.ALERTMANAGER_PORT},
    grafana.NAME: {ep.GRAFANA_PORT},
    jaeger.NAME: {ep.JAEGER_TELEMETRY_PORT},
    blackbox_exporter.NAME: {ep.BLACKBOX_EXPORTER_PORT},
}


@pytest.mark.parametrize("target", sorted(SCRAPE_TARGETS))
def test_prometheus_scrapes_target(prod_run, target):
    assert allowed_to(prod_run, prometheus.NAME, target) == SCRAPE_TARGETS[target]
    assert allowed_from(prod_run, target, prometheus.NAME) == SCRAPE_TARGETS[target]


def test_prometheus_scrape_ports_match_config():
    # Every component target in prometheus.yml is covered by a flow, so no scrape is blocked.
    config = prometheus.render_config(stack_settings("prod"))
    # Probe jobs list the blackbox exporter's probe targets, which the exporter connects to, not Prometheus.
    scraped_jobs = [job for job in config["scrape_configs"] if job.get("metrics_path") != "/probe"]
    targets = [target for job in scraped_jobs for static in job.get("static_configs", []) for target in static["targets"]]
    component_targets = {target for target in targets if target.split(":")[0] in SCRAPE_TARGETS}
    assert component_targets
    for target in component_targets:
        host, port = target.split(":")
        assert int(port) in SCRAPE_TARGETS[host], target


def test_prometheus_reaches_api(prod_run):
    assert allowed_to(prod_run, prometheus.NAME, None) == {8000}


def test_blackbox_reaches_api(prod_run):
    assert allowed_to(prod_run, blackbox_exporter.NAME, None) == {8000}


@pytest.mark.parametrize(("target", "port"), [(prometheus.NAME, ep.PROMETHEUS_PORT), (alertmanager.NAME, ep.ALERTMANAGER_PORT), (jaeger.NAME, ep.JAEGER_UI_PORT)])
def test_grafana_reaches_datasource(prod_run, target, port):
    assert allowed_to(prod_run, grafana.NAME, target) == {port}
    assert allowed_from(prod_run, target, grafana.NAME) == {port}


def test_alertmanager_reaches_receivers(prod_run):
    assert allowed_to(prod_run, alertmanager.NAME, None) == {443, 587}


def test_receiver_ports_smarthost():
    settings = stack_settings("prod").model_copy(update={"alert_email_smarthost": "smtp.example.com:465"})
    assert network_flows.receiver_ports(settings) == (443, 465, 587)


@pytest.mark.parametrize("name", [jaeger.NAME, otel_collector.NAME])
def test_no_egress_beyond_flows(prod_run, name):
    # Jaeger sends nothing; the collector sends only to Jaeger.
    expected = [{"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": jaeger.NAME}}}]}] if name == otel_collector.NAME else []
    egress = [{"to": rule["to"]} for rule in policy_spec(prod_run, name).get("egress", [])]
    assert egress == expected


def test_dev_has_no_network_policies(dev_run):
    assert dev_run.of_type(NETWORK_POLICY) == []


# --- Span attribute scrubbing ---------------------------------------------------------------------


@pytest.fixture(params=["dev", "prod"])
def collector_config(request) -> dict:
    return yaml.safe_load(otel_collector.render(stack_settings(request.param), {})["config.yaml"])


def deleted_keys(config: dict) -> list[str]:
    actions = config["processors"][otel_collector.SCRUB_PROCESSOR]["actions"]
    assert actions
    assert {action["action"] for action in actions} == {"delete"}
    return [action["key"] for action in actions if "key" in action]


@pytest.mark.parametrize(
    "key",
    ["http.request.header.authorization", "http.request.header.cookie", "http.response.header.set-cookie", "user.email", "enduser.id"],
)
def test_scrub_deletes_key(collector_config, key):
    assert key in deleted_keys(collector_config)


def test_scrub_pattern_old_names(collector_config):
    actions = collector_config["processors"][otel_collector.SCRUB_PROCESSOR]["actions"]
    patterns = [action["pattern"] for action in actions if "pattern" in action]
    assert len(patterns) == 1
    # Python's re reads this pattern as Go's regexp does: (?i), anchors, groups and classes only.
    pattern = re.compile(patterns[0])
    for key in ["http.request.headers.Authorization", "http.request.header.proxy_authorization", "http.response.header.Set_Cookie", "HTTP.REQUEST.HEADER.COOKIE"]:
        assert pattern.search(key), key
    for key in ["http.request.header.content-type", "http.request.method", "http.request.header.cookie-consent"]:
        assert not pattern.search(key), key


def test_scrub_in_traces_pipeline(collector_config):
    processors = collector_config["service"]["pipelines"]["traces"]["processors"]
    assert processors[0] == "memory_limiter"
    assert processors[1] == otel_collector.SCRUB_PROCESSOR
    assert processors[-1] == "batch"


def test_scrub_setting_keys(pulumi_program):
    run = pulumi_program("prod", config={"sensitiveSpanAttributes": ["customer.tax_id"]})
    assert run.error is None
    config = yaml.safe_load(run.named("kubernetes:core/v1:ConfigMap", f"{otel_collector.NAME}-config").value("data", "config.yaml"))
    keys = deleted_keys(config)
    assert "customer.tax_id" in keys
    assert "http.request.header.authorization" in keys
    assert "user.email" not in keys


def test_scrub_setting_rejects_space():
    with pytest.raises(ConfigError, match="sensitiveSpanAttributes"):
        load_settings({"platform": "docker", "environment": "development", "apiMetricsToken": "x", "sensitiveSpanAttributes": ["user email"]})


def test_ingress_controller_not_to_jaeger(prod_run):
    selector = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    sources = [peer for rule in policy_spec(prod_run, jaeger.NAME)["ingress"] for peer in rule["from"]]
    assert sources
    assert selector not in sources


def test_jaeger_proxy_reaches_jaeger_ui(prod_run):
    assert allowed_to(prod_run, jaeger_proxy.NAME, jaeger.NAME) == {ep.JAEGER_UI_PORT}
    assert allowed_from(prod_run, jaeger.NAME, jaeger_proxy.NAME) == {ep.JAEGER_UI_PORT}
