"""Stack config validation: every bad value stops the program before it declares any resource.

Each case runs the whole program under Pulumi mocks, so the tests cover the path a real
`pulumi up` takes: config as the CLI passes it, `load_stack`, then the resources.
"""

import pytest

from components.settings import ConfigError, load_settings
from components.units import (
    format_duration,
    format_kubernetes_quantity,
    format_prometheus_size,
    parse_byte_size,
    parse_duration,
)
from pulumi_harness import TEST_API_METRICS_TOKEN, ProgramRun

PLAIN_PASSWORD = "plain-text-password-93b1"


def failed_run(pulumi_program, stack: str = "dev", **changes) -> str:
    """Run the program with config changes; return the ConfigError message after checking that nothing was declared."""
    run: ProgramRun = pulumi_program(stack, **changes)

    assert isinstance(run.error, ConfigError), f"expected ConfigError, got {run.error!r}"
    assert run.resources == []
    assert run.outputs == {}
    return str(run.error)


def test_program_valid_config_declares_resources(pulumi_program):
    # The failure cases below assert an empty resource list; this shows the harness records resources.
    run = pulumi_program("dev")

    assert run.error is None
    assert run.resources


def test_unknown_platform(pulumi_program):
    message = failed_run(pulumi_program, config={"platform": "nomad"})

    assert "magflow-monitoring:platform='nomad' is invalid" in message
    assert "docker" in message
    assert "kubernetes" in message
    assert "pulumi config set platform <value>" in message


def test_malformed_duration(pulumi_program):
    message = failed_run(pulumi_program, config={"apiScrapeInterval": "5 seconds"})

    assert "magflow-monitoring:apiScrapeInterval='5 seconds' is invalid" in message
    assert "such as 30s, 5m, 12h or 15d" in message
    assert "pulumi config set apiScrapeInterval <value>" in message


def test_zero_duration(pulumi_program):
    message = failed_run(pulumi_program, config={"prometheusRetentionTime": "0s"})

    assert "prometheusRetentionTime='0s'" in message
    assert "longer than zero" in message


def test_malformed_byte_size(pulumi_program):
    message = failed_run(pulumi_program, config={"prometheusVolumeSize": "50 gigs"})

    assert "magflow-monitoring:prometheusVolumeSize='50 gigs' is invalid" in message
    assert "such as 512Mi, 20Gi or 40GB" in message
    assert "pulumi config set prometheusVolumeSize <value>" in message


def test_port_out_of_range(pulumi_program):
    message = failed_run(pulumi_program, config={"grafanaPort": 70000})

    assert "magflow-monitoring:grafanaPort='70000' is invalid" in message
    assert "from 1 to 65535" in message
    assert "pulumi config set grafanaPort <value>" in message


def test_port_not_a_number(pulumi_program):
    message = failed_run(pulumi_program, config={"prometheusPort": "ninety"})

    assert "prometheusPort='ninety'" in message
    assert "whole number" in message


def test_required_secret_missing(pulumi_program):
    message = failed_run(pulumi_program, remove=("apiMetricsToken",), secrets={})

    assert "magflow-monitoring:apiMetricsToken is missing" in message
    assert "pulumi config set --secret apiMetricsToken <value>" in message


def test_unknown_key_suggests_close_match(pulumi_program):
    message = failed_run(pulumi_program, stack="prod", config={"prometheusRetentionTme": "15d"})

    assert "magflow-monitoring:prometheusRetentionTme is not a known key" in message
    assert "Did you mean prometheusRetentionTime?" in message
    assert "pulumi config rm prometheusRetentionTme" in message


def test_secret_in_plain_text(pulumi_program):
    message = failed_run(pulumi_program, plain={"grafanaAdminPassword": PLAIN_PASSWORD})

    assert "grafanaAdminPassword must be encrypted" in message
    assert "pulumi config set --secret grafanaAdminPassword <value>" in message


def test_secret_in_plain_text_not_echoed(pulumi_program):
    message = failed_run(pulumi_program, plain={"grafanaAdminPassword": PLAIN_PASSWORD})

    assert PLAIN_PASSWORD not in message


def test_required_secret_in_plain_text(pulumi_program):
    message = failed_run(pulumi_program, plain={"apiMetricsToken": TEST_API_METRICS_TOKEN})

    assert "apiMetricsToken must be encrypted" in message
    assert TEST_API_METRICS_TOKEN not in message


def test_receiver_without_settings(pulumi_program):
    message = failed_run(pulumi_program, config={"alertDefaultReceiver": "slack"})

    assert "magflow-monitoring:alertSlackWebhookUrl is missing, but the slack receiver is selected" in message
    assert "pulumi config set --secret alertSlackWebhookUrl <value>" in message
    assert "magflow-monitoring:alertSlackChannel is missing" in message
    assert "pulumi config set alertSlackChannel <value>" in message


def test_email_receiver_without_settings(pulumi_program):
    message = failed_run(pulumi_program, config={"alertCriticalReceiver": "email", "alertEmailTo": "oncall@example.com"})

    assert "alertEmailFrom is missing, but the email receiver is selected" in message
    assert "alertEmailSmarthost is missing" in message
    assert "alertEmailTo is missing" not in message


def test_unknown_receiver(pulumi_program):
    message = failed_run(pulumi_program, config={"alertDefaultReceiver": "pager"})

    assert "alertDefaultReceiver='pager' is invalid" in message
    assert "pulumi config set alertDefaultReceiver <value>" in message


def test_retention_size_above_volume(pulumi_program):
    message = failed_run(pulumi_program, config={"prometheusRetentionSize": "5GiB", "prometheusVolumeSize": "5Gi"})

    assert "magflow-monitoring:prometheusRetentionSize='5Gi' is above 90% of prometheusVolumeSize='5Gi'" in message
    assert "Lower prometheusRetentionSize or raise prometheusVolumeSize" in message


def test_invalid_scrape_target(pulumi_program):
    message = failed_run(pulumi_program, config={"apiTargets": ["magflow api:8000"]})

    assert "invalid scrape target 'magflow api:8000'" in message
    assert "pulumi config set --path 'apiTargets[0]' <value>" in message


def test_kubernetes_without_ingress_domain(pulumi_program):
    message = failed_run(pulumi_program, stack="prod", config={"ingressDomain": ""})

    assert "magflow-monitoring:ingressDomain is missing" in message
    assert "pulumi config set ingressDomain" in message


def test_errors_reported_together(pulumi_program):
    message = failed_run(pulumi_program, config={"platform": "nomad", "grafanaPort": 0, "apiScrapeInterval": "soon"})

    assert "platform='nomad'" in message
    assert "grafanaPort='0'" in message
    assert "apiScrapeInterval='soon'" in message


def test_load_settings_rejects_unknown_key_without_match():
    with pytest.raises(ConfigError) as caught:
        load_settings({"platform": "docker", "environment": "development", "apiMetricsToken": "x", "zzz": "1"})

    assert "magflow-monitoring:zzz is not a known key." in str(caught.value)
    assert "Did you mean" not in str(caught.value)


def test_load_settings_empty_means_default():
    settings = load_settings({"platform": "docker", "environment": "development", "apiMetricsToken": "x", "grafanaPort": ""})

    assert settings.grafana_port == 3000


def test_load_settings_list_from_json_text():
    settings = load_settings(
        {"platform": "docker", "environment": "development", "apiMetricsToken": "x", "apiTargets": '["api-1:8000", "api-2:8000"]'}
    )

    assert settings.api_targets == ["api-1:8000", "api-2:8000"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h30m", 5400), ("15d", 15 * 86400), ("2w", 14 * 86400), ("1y", 365 * 86400), ("500ms", 0.5)],
)
def test_parse_duration_valid(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", " ", "5", "5 seconds", "1.5h", "-1s", "30S", "1m1h", "0s", "0d0h"])
def test_parse_duration_invalid(text):
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [(5400, "1h30m"), (0.5, "500ms"), (15 * 86400, "15d"), (90061, "1d1h1m1s"), (0, "0s")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("text", ["1h30m", "15d", "250ms", "2d3h"])
def test_format_duration_round_trip(text):
    assert format_duration(parse_duration(text)) == text


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("50Gi", 50 * 1024**3),
        ("40GB", 40 * 1000**3),
        ("512MiB", 512 * 1024**2),
        ("1.5Gi", 1536 * 1024**2),
        ("1024", 1024),
        ("64 Ki", 64 * 1024),
        ("2T", 2 * 1000**4),
    ],
)
def test_parse_byte_size_valid(text, size):
    assert parse_byte_size(text) == size


def test_parse_byte_size_integer():
    assert parse_byte_size(4096) == 4096


@pytest.mark.parametrize("text", ["", "Gi", "50 gigs", "-1Gi", "5XB", "1,5Gi", "50gi"])
def test_parse_byte_size_invalid(text):
    with pytest.raises(ValueError, match="invalid byte size"):
        parse_byte_size(text)


@pytest.mark.parametrize("text", ["0", "0Gi", "0.0001"])
def test_parse_byte_size_zero(text):
    with pytest.raises(ValueError, match="larger than zero"):
        parse_byte_size(text)


@pytest.mark.parametrize(
    ("size", "text"),
    [(100 * 1024**3, "100Gi"), (1024**4, "1Ti"), (256 * 1024**2, "256Mi"), (3 * 1024, "3Ki"), (1000, "1000")],
)
def test_format_kubernetes_quantity(size, text):
    assert format_kubernetes_quantity(size) == text


def test_format_prometheus_size_mebibytes():
    assert format_prometheus_size(4 * 1024**3) == "4096MB"


def test_format_prometheus_size_not_rounded_to_zero():
    # 0MB would turn size-based retention off; Prometheus reads a B suffix as bytes.
    assert format_prometheus_size(512 * 1024) == "524288B"


def test_unknown_environment_reported_alone():
    with pytest.raises(ConfigError) as raised:
        load_settings({"platform": "docker", "environment": "staging", "apiMetricsToken": "token"})

    message = str(raised.value)
    assert "magflow-monitoring:environment='staging'" in message
    assert "'development' or 'production'" in message
    assert "is missing" not in message


def test_render_rejects_malformed_stack_file(tmp_path):
    from components.config import read_stack_file

    stack_file = tmp_path / "Pulumi.broken.yaml"
    stack_file.write_text("config:\n  magflow-monitoring:platform: [docker\n")

    with pytest.raises(ConfigError) as raised:
        read_stack_file(stack_file)

    assert "Pulumi.broken.yaml" in str(raised.value)
    assert "not valid YAML" in str(raised.value)
