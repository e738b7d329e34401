"""Retention, persistence and cardinality limits: settings checks, rendered configs and volume resources."""

import configparser
import re
from typing import Any

import pytest

from components.config import placeholder_secrets, read_stack_file
from components.rendering import REPOSITORY_ROOT
from components.services import alertmanager, grafana, jaeger, otel_collector, prometheus
from components.settings import ConfigError, StackSettings, load_settings
from components.units import parse_duration

PVC = "kubernetes:core/v1:PersistentVolumeClaim"
NAMESPACE = "kubernetes:core/v1:Namespace"
DOCKER_VOLUME = "docker:index/volume:Volume"

DEFAULT_DROPPED_LABELS = ["url", "http_url", "http_target", "user_id", "request_id", "trace_id", "session_id"]
STATEFUL_SERVICES = ["prometheus", "alertmanager", "grafana", "jaeger"]


def settings_for(stack: str, **overrides: Any) -> StackSettings:
    """Return the settings of a committed stack file with `overrides` (config keys) on top."""
    raw = {**read_stack_file(REPOSITORY_ROOT / f"Pulumi.{stack}.yaml"), **placeholder_secrets(), **overrides}
    return load_settings(raw)


def config_error(stack: str, **overrides: Any) -> str:
    """Return the ConfigError message that loading the stack with `overrides` raises."""
    with pytest.raises(ConfigError) as raised:
        settings_for(stack, **overrides)
    return str(raised.value)


def seconds(text: str) -> float:
    """Return the seconds in a Go duration such as 336h or 1h30m, as written in rendered files."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+)(ms|h|m|s)", text)
    assert "".join(number + unit for number, unit in parts) == text, f"{text!r} is not a Go duration"
    return sum(int(number) * units[unit] for number, unit in parts)


# --- settings: retention per environment -----------------------------------------------------


@pytest.mark.parametrize(
    "key", ["jaegerSpanTtl", "alertmanagerDataRetention", "grafanaAnnotationMaxAge"]
)
def test_retention_defaults_longer_in_prod(key):
    dev = settings_for("dev").model_dump(by_alias=True)[key]
    prod = settings_for("prod").model_dump(by_alias=True)[key]

    assert parse_duration(dev) <= 7 * 86400, f"dev {key}={dev} should be short"
    assert parse_duration(prod) >= 14 * 86400, f"prod {key}={prod} should be weeks"


def test_dashboard_versions_more_in_prod():
    assert settings_for("prod").grafana_dashboard_versions_to_keep > settings_for("dev").grafana_dashboard_versions_to_keep


# --- settings: invalid combinations ------------------------------------------------------------


def test_retention_size_above_volume_rejected():
    message = config_error("dev", prometheusRetentionSize="5GiB", prometheusVolumeSize="5Gi")

    assert "prometheusRetentionSize" in message
    assert "90%" in message


def test_retention_size_at_90_percent_accepted():
    settings = settings_for("dev", prometheusRetentionSize="9GiB", prometheusVolumeSize="10Gi")

    assert settings.prometheus_retention_size == 9 * 1024**3


@pytest.mark.parametrize("retention", ["3d", "7d", "1w1h"])
def test_retention_time_below_traffic_offset_rejected(retention):
    message = config_error("dev", prometheusRetentionTime=retention, sloWindow="1d")

    assert f"prometheusRetentionTime={retention!r}" in message
    assert "1w1h" in message


def test_retention_time_below_slo_window_rejected():
    message = config_error("prod", prometheusRetentionTime="20d", sloWindow="28d")

    assert "prometheusRetentionTime='20d'" in message
    assert "sloWindow='28d'" in message


def test_retention_time_equal_slo_window_accepted():
    settings = settings_for("prod", prometheusRetentionTime="28d", sloWindow="28d")

    assert settings.prometheus_retention_time == "28d"


def test_retention_time_defaults_cover_windows():
    for stack in ("dev", "prod"):
        settings = settings_for(stack)
        retention = parse_duration(settings.prometheus_retention_time)

        assert retention > parse_duration("1w1h"), stack
        assert retention >= parse_duration(settings.slo_window), stack


@pytest.mark.parametrize("ratio", ["0", "-0.1", "1.5", "many"])
def test_sampling_ratio_outside_range_rejected(ratio):
    message = config_error("prod", traceSamplingRatio=ratio)

    assert f"traceSamplingRatio={ratio!r}" in message


@pytest.mark.parametrize("ratio", ["1", "0.001"])
def test_sampling_ratio_inside_range_accepted(ratio):
    assert settings_for("prod", traceSamplingRatio=ratio).trace_sampling_ratio == float(ratio)


@pytest.mark.parametrize("key", ["scrapeSampleLimit", "scrapeLabelLimit"])
@pytest.mark.parametrize("value", ["0", "-5", "lots"])
def test_scrape_limit_invalid_rejected(key, value):
    message = config_error("dev", **{key: value})

    assert f"{key}={value!r}" in message


@pytest.mark.parametrize("label", ["le", "job", "instance", "http.url", "1st"])
def test_dropped_label_invalid_rejected(label):
    message = config_error("dev", droppedMetricLabels=["user_id", label])

    assert "droppedMetricLabels" in message
    assert repr(label) in message


@pytest.mark.parametrize("key", ["jaegerSpanTtl", "alertmanagerDataRetention", "grafanaAnnotationMaxAge", "traceSlowThreshold"])
def test_retention_duration_invalid_rejected(key):
    message = config_error("dev", **{key: "2 days"})

    assert f"{key}='2 days'" in message


# --- rendered retention ------------------------------------------------------------------------


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_jaeger_ttl_from_settings(stack):
    settings = settings_for(stack)
    badger = jaeger.render_config(settings)["extensions"]["jaeger_storage"]["backends"]["main_store"]["badger"]

    assert seconds(badger["ttl"]["spans"]) == parse_duration(settings.jaeger_span_ttl)


def test_jaeger_ttl_override_rendered():
    badger = jaeger.render_config(settings_for("dev", jaegerSpanTtl="1w"))["extensions"]["jaeger_storage"]["backends"]["main_store"]["badger"]

    assert badger["ttl"]["spans"] == "168h"


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_alertmanager_retention_flag(stack):
    settings = settings_for(stack)
    flags = [arg for arg in alertmanager.workload(settings, {}).args if arg.startswith("--data.retention=")]

    assert len(flags) == 1
    assert seconds(flags[0].split("=", 1)[1]) == parse_duration(settings.alertmanager_data_retention)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_grafana_ini_retention(stack):
    settings = settings_for(stack)
    ini = configparser.ConfigParser()
    ini.read_string(grafana.render_ini(settings))
    max_age = parse_duration(settings.grafana_annotation_max_age)

    assert ini["dashboards"]["versions_to_keep"] == str(settings.grafana_dashboard_versions_to_keep)
    assert seconds(ini["annotations.dashboard"]["max_age"]) == max_age
    assert seconds(ini["annotations.api"]["max_age"]) == max_age


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_prometheus_retention_flags(stack):
    settings = settings_for(stack)
    args = prometheus.args(settings)

    assert f"--storage.tsdb.retention.time={settings.prometheus_retention_time}" in args
    assert any(arg.startswith("--storage.tsdb.retention.size=") for arg in args)


# --- rendered cardinality guards ---------------------------------------------------------------


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_job_has_limits(stack):
    settings = settings_for(stack)
    jobs = prometheus.render_config(settings)["scrape_configs"]

    assert jobs
    for job in jobs:
        assert job["sample_limit"] == settings.scrape_sample_limit, job["job_name"]
        assert job["label_limit"] == settings.scrape_label_limit, job["job_name"]


def test_every_job_drops_labels():
    jobs = prometheus.render_config(settings_for("prod"))["scrape_configs"]

    assert jobs
    for job in jobs:
        drops = [rule for rule in job["metric_relabel_configs"] if rule["action"] == "labeldrop"]
        assert len(drops) == 1, job["job_name"]
        # Prometheus anchors relabel regexes at both ends.
        for label in DEFAULT_DROPPED_LABELS:
            assert re.fullmatch(drops[0]["regex"], label), (job["job_name"], label)
        for kept in ("endpoint", "method", "status_code", "le", "job", "instance", "http_url_template"):
            assert not re.fullmatch(drops[0]["regex"], kept), (job["job_name"], kept)


def test_dropped_labels_configurable():
    settings = settings_for("dev", droppedMetricLabels=["tenant_id", "path"])
    job = prometheus.render_config(settings)["scrape_configs"][0]

    assert job["metric_relabel_configs"] == [{"action": "labeldrop", "regex": "tenant_id|path"}]


def test_dropped_labels_from_cli_json():
    # The Pulumi CLI passes a list to the program as JSON text.
    settings = settings_for("dev", droppedMetricLabels='["tenant_id"]')

    assert settings.dropped_metric_labels == ["tenant_id"]


def test_scrape_limits_configurable():
    settings = settings_for("dev", scrapeSampleLimit="1000", scrapeLabelLimit="20")
    job = prometheus.render_config(settings)["scrape_configs"][0]

    assert job["sample_limit"] == 1000
    assert job["label_limit"] == 20


# --- trace sampling ----------------------------------------------------------------------------


def test_dev_head_sampling():
    config = otel_collector.render_config(settings_for("dev", traceSamplingRatio="0.5"))

    assert config["service"]["pipelines"]["traces"]["processors"] == ["memory_limiter", "attributes/scrub", "probabilistic_sampler", "batch"]
    assert config["processors"]["probabilistic_sampler"] == {"sampling_percentage": 50.0}
    assert "tail_sampling" not in config["processors"]


def test_prod_tail_sampling_replaces_head():
    config = otel_collector.render_config(settings_for("prod"))

    assert config["service"]["pipelines"]["traces"]["processors"] == ["memory_limiter", "attributes/scrub", "tail_sampling", "batch"]
    assert "probabilistic_sampler" not in config["processors"]


def test_prod_metrics_pipeline_unsampled():
    config = otel_collector.render_config(settings_for("prod"))

    assert config["service"]["pipelines"]["metrics"]["processors"] == ["memory_limiter", "batch"]


def test_tail_sampling_policies():
    settings = settings_for("prod", traceSamplingRatio="0.25", traceSlowThreshold="1500ms")
    policies = {policy["type"]: policy for policy in otel_collector.render_config(settings)["processors"]["tail_sampling"]["policies"]}

    assert set(policies) == {"status_code", "latency", "probabilistic"}
    assert policies["status_code"]["status_code"] == {"status_codes": ["ERROR"]}
    assert policies["latency"]["latency"] == {"threshold_ms": 1500}
    assert policies["probabilistic"]["probabilistic"] == {"sampling_percentage": 25.0}


@pytest.mark.parametrize("threshold", ["2s", "30s"])
def test_tail_decision_wait_covers_threshold(threshold):
    tail = otel_collector.render_config(settings_for("prod", traceSlowThreshold=threshold))["processors"]["tail_sampling"]

    assert parse_duration(tail["decision_wait"]) > parse_duration(threshold)


# --- volumes: nothing but name, size and class replaces them -----------------------------------


def changed_paths(before: Any, after: Any, path: tuple = ()) -> list[tuple]:
    """Return the paths of every value that differs between two nested dicts and lists."""
    if isinstance(before, dict) and isinstance(after, dict):
        paths = []
        for key in sorted(set(before) | set(after), key=str):
            paths.extend(changed_paths(before.get(key), after.get(key), (*path, key)))
        return paths
    return [] if before == after else [path]


# Config changes that rewrite files, flags and processors but must leave every volume as it is.
UNRELATED_CHANGES = {
    "prometheusRetentionTime": "45d",
    "jaegerSpanTtl": "3d",
    "alertmanagerDataRetention": "3d",
    "grafanaAnnotationMaxAge": "30d",
    "grafanaDashboardVersionsToKeep": "5",
    "scrapeSampleLimit": "1000",
    "droppedMetricLabels": '["user_id"]',
    "traceSamplingRatio": "0.5",
}


def test_prod_claims_ignore_config(prod_run, pulumi_program):
    changed = pulumi_program("prod", config={**UNRELATED_CHANGES, "prometheusRetentionSize": "70GiB"})
    assert changed.error is None, changed.error

    assert prod_run.names(PVC) == {f"{service}-data" for service in STATEFUL_SERVICES}
    for service in STATEFUL_SERVICES:
        before = prod_run.named(PVC, f"{service}-data")
        after = changed.named(PVC, f"{service}-data")
        assert changed_paths(before.inputs, after.inputs) == [], service


def test_prod_claim_resize_in_place(prod_run, pulumi_program):
    resized = pulumi_program("prod", config={"prometheusVolumeSize": "200Gi", "prometheusRetentionSize": "160GiB"})
    assert resized.error is None, resized.error

    before = prod_run.named(PVC, "prometheus-data")
    after = resized.named(PVC, "prometheus-data")
    # pulumi-kubernetes 4.x replaces a claim for accessModes, selector, storageClassName or
    # volumeName changes only; the storage request is updated in place.
    assert changed_paths(before.inputs, after.inputs) == [("spec", "resources", "requests", "storage")]
    assert after.value("spec", "resources", "requests", "storage") == "200Gi"
    assert after.value("metadata", "name") == before.value("metadata", "name")


def test_prod_claims_protected(prod_run):
    claims = prod_run.of_type(PVC)

    assert claims
    for claim in claims:
        assert claim.protect, claim.name
        assert claim.retain_on_delete, claim.name
        assert claim.value("spec", "storageClassName") == "standard", claim.name


def test_prod_namespace_protected(prod_run):
    assert prod_run.named(NAMESPACE, "namespace").protect


def test_dev_volumes_ignore_config(dev_run, pulumi_program):
    changed = pulumi_program("dev", config={**UNRELATED_CHANGES, "prometheusRetentionSize": "3GiB"})
    assert changed.error is None, changed.error

    volumes = dev_run.of_type(DOCKER_VOLUME)
    assert {volume.name for volume in volumes} == {f"{service}-data" for service in STATEFUL_SERVICES}
    for volume in volumes:
        assert changed_paths(volume.inputs, changed.named(DOCKER_VOLUME, volume.name).inputs) == [], volume.name


def test_dev_volumes_unprotected(dev_run):
    volumes = dev_run.of_type(DOCKER_VOLUME)

    assert volumes
    assert not any(volume.protect for volume in volumes)


def test_production_docker_volumes_protected(pulumi_program):
    run = pulumi_program("prod", config={"platform": "docker"})
    assert run.error is None, run.error
    volumes = run.of_type(DOCKER_VOLUME)

    assert volumes
    for volume in volumes:
        assert volume.protect, volume.name
