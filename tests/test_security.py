"""HTTPS, authentication and secret handling of both stacks, under Pulumi mocks and in rendered files."""

import pytest
import yaml

from components import credentials, tls
from components.config import read_stack_file, render_placeholders
from components.rendering import REPOSITORY_ROOT
from components.rules import rule_documents
from components.services import alertmanager, blackbox_exporter, endpoints as ep, grafana, jaeger, jaeger_proxy, otel_collector, prometheus
from components.settings import ConfigError, load_settings
from components.stack import SERVICES
from components.units import parse_duration
from pulumi_harness import (
    GENERATED_PASSWORD,
    mocked_bcrypt_hash,
    mocked_generated_secrets,
    mocked_pem,
    stack_settings,
    string_paths,
)

CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
SECRET = "kubernetes:core/v1:Secret"
INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"
CONTAINER = "docker:index/container:Container"
CERTIFICATE = "tls:index/locallySignedCert:LocallySignedCert"
CA_CERTIFICATE = "tls:index/selfSignedCert:SelfSignedCert"
CERT_REQUEST = "tls:index/certRequest:CertRequest"
RANDOM_PASSWORD = "random:index/randomPassword:RandomPassword"


def _secret_values(stack: str) -> dict[str, str]:
    """Return the mocked private keys, passwords and hashes: every generated value except certificates."""
    values = {key: value for key, value in mocked_generated_secrets(stack).items() if not key.endswith(".crt")}
    assert values
    return values


def _served_services():
    return [service for service in SERVICES if service.NAME in tls.SERVED]


# --- Certificates ------------------------------------------------------------------------------


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_certificate_per_served_service(pulumi_program, stack):
    run = pulumi_program(stack)
    assert run.error is None

    assert run.names(CERTIFICATE) == {f"tls-{service}" for service in tls.SERVED}
    assert run.named(CA_CERTIFICATE, "tls-ca").value("isCaCertificate") is True


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_certificate_validity_from_settings(pulumi_program, stack):
    run = pulumi_program(stack)
    settings = stack_settings(stack)
    certificates = run.of_type(CERTIFICATE)
    assert certificates

    for certificate in certificates:
        assert certificate.value("validityPeriodHours") == parse_duration(settings.tls_certificate_validity) / 3600
        assert certificate.value("earlyRenewalHours") == parse_duration(settings.tls_early_renewal) / 3600
        assert "server_auth" in certificate.value("allowedUses")


def test_certificate_names_dev(dev_run):
    request = dev_run.named(CERT_REQUEST, f"tls-{prometheus.NAME}")

    assert request.value("dnsNames") == [prometheus.NAME, "localhost"]
    assert request.value("ipAddresses") == ["127.0.0.1"]


def test_certificate_names_prod(prod_run):
    names = prod_run.named(CERT_REQUEST, f"tls-{grafana.NAME}").value("dnsNames")

    assert grafana.NAME in names
    assert f"{grafana.NAME}.magflow-monitoring.svc" in names
    assert f"{grafana.NAME}.magflow-monitoring.svc.cluster.local" in names


def test_private_keys_secret_prod(prod_run):
    for service in _served_services():
        secret = prod_run.named(SECRET, f"{service.NAME}-secrets")
        key = "tls__server.key"
        assert secret.value("stringData", key) == mocked_pem("PRIVATE KEY", f"tls-{service.NAME}-key"), service.NAME
        assert secret.is_secret("stringData", key), service.NAME


def test_ca_certificate_in_config_maps(prod_run):
    for service in _served_services():
        data = prod_run.named(CONFIG_MAP, f"{service.NAME}-config").value("data")
        assert data["tls__ca.crt"] == mocked_pem("CERTIFICATE", "tls-ca"), service.NAME


# --- Secrets never in plain text ---------------------------------------------------------------


def test_config_maps_hold_no_generated_secret(prod_run):
    secrets = _secret_values("prod")
    config_maps = prod_run.of_type(CONFIG_MAP)
    assert config_maps

    for config_map in config_maps:
        for path, text in string_paths(config_map.inputs):
            leaked = sorted(key for key, value in secrets.items() if value in text)
            assert not leaked, f"{config_map.name} at {path} contains {leaked}"


def test_docker_uploads_of_secrets_are_secret(dev_run):
    secrets = _secret_values("dev")
    checked = 0
    for container in dev_run.of_type(CONTAINER):
        for index, upload in enumerate(container.inputs.get("uploads", [])):
            if any(value in upload["content"] for value in secrets.values()):
                checked += 1
                assert container.is_secret("uploads", index, "content"), f"{container.name}: {upload['file']}"
    assert checked >= len(tls.SERVED), "too few uploads with a private key or password were checked"


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_outputs_show_no_generated_secret(pulumi_program, stack):
    run = pulumi_program(stack)
    secrets = _secret_values(stack)
    registered = run.registered_outputs
    assert registered

    for urn, (outputs, secret_paths) in registered.items():
        for path, text in string_paths(outputs):
            if any(value in text for value in secrets.values()):
                assert any(path[: len(secret)] == secret for secret in secret_paths), f"{urn} shows a secret at {path}"


def test_outputs_ca_certificate_public(dev_run):
    assert dev_run.outputs["caCertificate"] == mocked_pem("CERTIFICATE", "tls-ca")
    assert "caCertificate" not in dev_run.secret_outputs


def test_outputs_passwords_secret(prod_run):
    for name in ("prometheusPassword", "alertmanagerPassword", "otlpBearerToken"):
        assert prod_run.outputs[name] == GENERATED_PASSWORD, name
        assert name in prod_run.secret_outputs, name


def test_rendered_secret_files_cover_keys():
    placeholders = render_placeholders()
    for service in _served_services():
        files = service.render(stack_settings("prod"), placeholders)
        assert tls.KEY_FILE in files, service.NAME
        assert tls.KEY_FILE in service.SECRET_FILES, service.NAME


# --- Prometheus, Alertmanager and the blackbox exporter ------------------------------------------


@pytest.mark.parametrize("service", [prometheus, alertmanager])
def test_web_config_basic_auth(service):
    values = mocked_generated_secrets("dev")
    files = service.render(stack_settings("dev"), {**render_placeholders(), **values})
    web = yaml.safe_load(files[service.WEB_CONFIG_FILE])

    assert web["basic_auth_users"] == {credentials.BASIC_AUTH_USER: mocked_bcrypt_hash(f"{service.NAME}-basic-auth-password")}
    assert web["tls_server_config"]["key_file"] == f"{service.CONFIG_DIR}/{tls.KEY_FILE}"
    assert service.WEB_CONFIG_FILE in service.SECRET_FILES
    assert f"--web.config.file={service.CONFIG_DIR}/{service.WEB_CONFIG_FILE}" in service.workload(stack_settings("dev"), files).args


def test_blackbox_serves_tls():
    files = blackbox_exporter.render(stack_settings("dev"), render_placeholders())
    web = yaml.safe_load(files[blackbox_exporter.WEB_CONFIG_FILE])

    assert "basic_auth_users" not in web
    assert web["tls_server_config"]["cert_file"] == f"{blackbox_exporter.CONFIG_DIR}/{tls.CERT_FILE}"


def _prometheus_config() -> dict:
    return yaml.safe_load(prometheus.render(stack_settings("dev"), render_placeholders())["prometheus.yml"])


def test_prometheus_jobs_https_to_stack():
    jobs = {job["job_name"]: job for job in _prometheus_config()["scrape_configs"]}
    https = [prometheus.NAME, alertmanager.NAME, grafana.NAME, blackbox_exporter.NAME, "magflow-api-health", "tls-certificates"]

    for name in https:
        assert jobs[name]["scheme"] == "https", name
        assert jobs[name]["tls_config"]["ca_file"] == f"{prometheus.CONFIG_DIR}/{tls.CA_FILE}", name


@pytest.mark.parametrize("job_name", [prometheus.NAME, alertmanager.NAME])
def test_prometheus_jobs_basic_auth(job_name):
    job = next(job for job in _prometheus_config()["scrape_configs"] if job["job_name"] == job_name)

    assert job["basic_auth"]["username"] == credentials.BASIC_AUTH_USER
    assert job["basic_auth"]["password_file"] == f"{prometheus.CONFIG_DIR}/secrets/{job_name}-password"


def test_prometheus_alerting_https_auth():
    target = _prometheus_config()["alerting"]["alertmanagers"][0]

    assert target["scheme"] == "https"
    assert target["tls_config"]["server_name"] == alertmanager.NAME
    assert target["basic_auth"]["password_file"] == f"{prometheus.CONFIG_DIR}/secrets/alertmanager-password"


def test_tls_probe_targets_served_endpoints():
    job = next(job for job in _prometheus_config()["scrape_configs"] if job["job_name"] == blackbox_exporter.TLS_PROBE_JOB)
    targets = job["static_configs"][0]["targets"]

    assert job["params"]["module"] == [blackbox_exporter.TLS_MODULE]
    assert {target.split(":")[0] for target in targets} == set(tls.SERVED) - {blackbox_exporter.NAME}


def test_certificate_expiry_alert():
    settings = stack_settings("dev")
    rules = [rule for group in rule_documents(settings)["meta.yml"]["groups"] for rule in group["rules"]]
    alert = next(rule for rule in rules if rule.get("alert") == "CertificateExpiringSoon")

    assert "probe_ssl_earliest_cert_expiry" in alert["expr"]
    assert alert["expr"].endswith(f"< {int(parse_duration(settings.alert_certificate_expiry))}")
    assert (REPOSITORY_ROOT / "docs" / "runbooks" / "CertificateExpiringSoon.md").exists()


# --- Grafana, Jaeger and the collector -----------------------------------------------------------


def test_grafana_ini_security():
    raw = read_stack_file(REPOSITORY_ROOT / "Pulumi.dev.yaml")
    settings = load_settings({**raw, "apiMetricsToken": "set", "corsAllowedOrigins": ["https://portal.example.com"]})
    ini = grafana.render_ini(settings)

    assert "protocol = https" in ini
    assert "cookie_secure = true" in ini
    assert "cookie_samesite = lax" in ini
    assert "csrf_trusted_origins = portal.example.com" in ini
    assert "allow_sign_up = false" in ini


def test_grafana_datasources_tls_auth():
    sources = yaml.safe_load(grafana.render(stack_settings("dev"), render_placeholders())["provisioning/datasources/datasources.yaml"])
    by_type = {source["type"]: source for source in sources["datasources"]}
    assert by_type

    for source in by_type.values():
        assert source["url"].startswith("https://"), source["name"]
        assert source["jsonData"]["tlsAuthWithCACert"] is True, source["name"]
        assert source["secureJsonData"]["tlsCACert"] == f"$__file{{{grafana.CONFIG_DIR}/{tls.CA_FILE}}}", source["name"]
    for kind in ("prometheus", "alertmanager"):
        assert by_type[kind]["basicAuth"] is True
        assert by_type[kind]["secureJsonData"]["basicAuthPassword"] == f"$__file{{{grafana.CONFIG_DIR}/secrets/{kind}-password}}"


def test_jaeger_query_tls():
    config = jaeger.render_config(stack_settings("dev"))

    assert config["extensions"]["jaeger_query"]["http"]["tls"]["cert_file"] == f"{jaeger.CONFIG_DIR}/{tls.CERT_FILE}"
    assert config["receivers"]["otlp"]["protocols"]["grpc"]["tls"]["key_file"] == f"{jaeger.CONFIG_DIR}/{tls.KEY_FILE}"


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_collector_receivers_tls(stack):
    config = otel_collector.render_config(stack_settings(stack))
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols

    for name, protocol in protocols.items():
        assert protocol["tls"]["cert_file"] == f"{otel_collector.CONFIG_DIR}/{tls.CERT_FILE}", name
    assert config["exporters"]["otlp/jaeger"]["tls"] == {"ca_file": f"{otel_collector.CONFIG_DIR}/{tls.CA_FILE}"}


def test_collector_bearer_token_prod():
    config = otel_collector.render_config(stack_settings("prod"))
    protocols = config["receivers"]["otlp"]["protocols"]

    for name, protocol in protocols.items():
        assert protocol["auth"] == {"authenticator": otel_collector.BEARER_AUTH}, name
    assert config["extensions"][otel_collector.BEARER_AUTH] == {"filename": f"{otel_collector.CONFIG_DIR}/{otel_collector.TOKEN_FILE}"}
    assert otel_collector.BEARER_AUTH in config["service"]["extensions"]


def test_collector_no_token_dev():
    config = otel_collector.render_config(stack_settings("dev"))

    assert all("auth" not in protocol for protocol in config["receivers"]["otlp"]["protocols"].values())


def test_otlp_token_generated_prod(prod_run):
    assert "otlp-bearer-token" in prod_run.names(RANDOM_PASSWORD)


def test_otlp_token_from_config(pulumi_program):
    run = pulumi_program("prod", secrets={"otlpBearerToken": "configured-otlp-token-3b9d"})
    secret = run.named(SECRET, f"{otel_collector.NAME}-secrets")

    assert run.error is None
    assert "otlp-bearer-token" not in run.names(RANDOM_PASSWORD)
    assert secret.value("stringData", "secrets__otlp-bearer-token") == "configured-otlp-token-3b9d"


# --- Ingress -----------------------------------------------------------------------------------


def test_ingress_tls_issuer(prod_run):
    ingresses = prod_run.of_type(INGRESS)
    assert ingresses

    for ingress in ingresses:
        annotations = ingress.value("metadata", "annotations")
        host = ingress.value("spec", "rules", 0, "host")
        assert annotations["cert-manager.io/cluster-issuer"] == "letsencrypt-prod", ingress.name
        assert annotations["nginx.ingress.kubernetes.io/force-ssl-redirect"] == "true", ingress.name
        assert annotations["nginx.ingress.kubernetes.io/backend-protocol"] == "HTTPS", ingress.name
        assert ingress.value("spec", "tls") == [{"hosts": [host], "secretName": f"{ingress.name}-ingress-tls"}]


def test_ingress_tls_existing_secret(pulumi_program):
    run = pulumi_program("prod", config={"ingressTlsSecret": "monitoring-wildcard-tls"})
    ingress = run.named(INGRESS, grafana.NAME)

    assert run.error is None
    assert ingress.value("spec", "tls", 0, "secretName") == "monitoring-wildcard-tls"
    assert "cert-manager.io/cluster-issuer" not in ingress.value("metadata", "annotations")


# --- Settings ----------------------------------------------------------------------------------


def test_settings_alert_after_renewal_rejected():
    raw = read_stack_file(REPOSITORY_ROOT / "Pulumi.dev.yaml")
    with pytest.raises(ConfigError, match="alertCertificateExpiry"):
        load_settings({**raw, "apiMetricsToken": "set", "alertCertificateExpiry": "40d"})


def test_settings_kubernetes_needs_ingress_tls():
    raw = read_stack_file(REPOSITORY_ROOT / "Pulumi.prod.yaml")
    raw.pop("ingressTlsIssuer")
    with pytest.raises(ConfigError, match="ingressTlsIssuer"):
        load_settings({**raw, "apiMetricsToken": "set"})


def test_jaeger_ingress_no_nginx_auth(prod_run):
    annotations = prod_run.named(INGRESS, jaeger.NAME).value("metadata", "annotations")

    assert annotations
    assert not [key for key in annotations if key.startswith("nginx.ingress.kubernetes.io/auth-")]
    assert f"{jaeger.NAME}-ingress-auth" not in prod_run.names(SECRET)


def test_jaeger_proxy_caddyfile_secret(prod_run):
    secret = prod_run.named(SECRET, f"{jaeger_proxy.NAME}-secrets")
    caddyfile = secret.value("stringData", jaeger_proxy.CADDYFILE)

    assert f"\t\t{credentials.BASIC_AUTH_USER} {mocked_bcrypt_hash('jaeger-basic-auth-password')}\n" in caddyfile
    assert secret.is_secret("stringData", jaeger_proxy.CADDYFILE)
    assert f"{jaeger_proxy.NAME}-config" in prod_run.names(CONFIG_MAP)
    assert jaeger_proxy.CADDYFILE not in prod_run.named(CONFIG_MAP, f"{jaeger_proxy.NAME}-config").value("data")


@pytest.mark.parametrize("run_name", ["dev_run", "prod_run"])
def test_jaeger_password_output(request, run_name):
    run = request.getfixturevalue(run_name)

    assert "jaeger-basic-auth-password" in run.names(RANDOM_PASSWORD)
    assert run.outputs["jaegerPassword"] == GENERATED_PASSWORD
    assert "jaegerPassword" in run.secret_outputs


def test_jaeger_url_is_proxy(dev_run, prod_run):
    assert dev_run.outputs["jaegerUrl"] == "https://127.0.0.1:16686"
    assert prod_run.outputs["jaegerUrl"] == f"https://jaeger.{stack_settings('prod').ingress_domain}"


def test_jaeger_proxy_caddyfile_routes():
    placeholders = render_placeholders()
    caddyfile = jaeger_proxy.render(stack_settings("dev"), placeholders)[jaeger_proxy.CADDYFILE]

    assert caddyfile == jaeger_proxy.render_caddyfile(placeholders[credentials.hash_key(jaeger.NAME)])
    assert "\tbasicauth {\n" in caddyfile
    assert f"\ttls {jaeger_proxy.CONFIG_DIR}/{tls.CERT_FILE} {jaeger_proxy.CONFIG_DIR}/{tls.KEY_FILE} {{\n" in caddyfile
    assert f"\treverse_proxy https://{jaeger.NAME}:{ep.JAEGER_UI_PORT} {{\n" in caddyfile
    assert f"\t\t\ttls_trusted_ca_certs {jaeger_proxy.CONFIG_DIR}/{tls.CA_FILE}\n" in caddyfile
    assert f"\t\t\ttls_server_name {jaeger.NAME}\n" in caddyfile


def test_jaeger_proxy_needs_hash():
    # A proxy without basic auth must not be rendered.
    assert jaeger_proxy.CADDYFILE not in jaeger_proxy.render(stack_settings("dev"), {})
