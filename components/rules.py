"""Generation of Prometheus' recording and alerting rules from the metric contract and stack settings.

    python -m components.rules --stack dev   # rewrites rules/*.yml; a test fails when they are stale

The API rules read only the names of `components.contract`, and record the series that
`components.signals` hands to the dashboard. SLOs are expanded in the multi-window,
multi-burn-rate form that Sloth also generates. Error ratios are recorded over each burn-rate
window. Alerts page at 14.4 times the budget rate (1h and 5m) or 6 times (6h and 30m), and open a
ticket at 3 times (1d and 2h) or once (3d and 6h).
Prometheus deploys the output rendered for its own stack. The files in `rules/` are the dev
stack's output, committed so that reviews show every rule change.
"""

import argparse
import sys
from pathlib import Path
from typing import Any

from components import signals as sig
from components.config import stack_file_settings
from components.contract import MetricContract, contract_from_settings
from components.rendering import REPOSITORY_ROOT, to_yaml
from components.services import blackbox_exporter
from components.services import endpoints as ep
from components.settings import ConfigError, StackSettings
from components.units import format_duration, parse_duration

RULES_DIR = REPOSITORY_ROOT / "rules"
RUNBOOKS_DIR = "docs/runbooks"

API_FILE = "magflow-api.yml"
SLO_FILE = "magflow-api-slo.yml"
META_FILE = "meta.yml"

API = f'job="{sig.API_JOB}"'
# Labels of the per-job series: `environment` is a target label, so it survives every `sum by (job, ...)`.
JOB_LEVEL = f"job, {sig.ENVIRONMENT_LABEL}"

# Burn-rate alerts for a 30-day SLO window: (severity, factor, long window, short window).
BURN_RATE_ALERTS = (
    ("critical", 14.4, "1h", "5m"),
    ("critical", 6, "6h", "30m"),
    ("warning", 3, "1d", "2h"),
    ("warning", 1, "3d", "6h"),
)


def _number(value: float) -> str:
    # Six significant digits hide float noise such as 1 - 0.995 = 0.0050000000000000044.
    return f"{value:.6g}"


def _percent(ratio: float) -> str:
    return f"{ratio * 100:.6g}%"


def _alert(
    settings: StackSettings,
    name: str,
    expr: str,
    severity: str,
    summary: str,
    description: str,
    duration: str | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": name, "expr": expr}
    if duration:
        rule["for"] = duration
    rule["labels"] = {"severity": severity, **(labels or {})}
    rule["annotations"] = {
        "summary": summary,
        "description": description,
        "runbook_url": f"{settings.runbook_base_url.rstrip('/')}/{RUNBOOKS_DIR}/{name}.md",
    }
    return rule


def _record(name: str, expr: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"record": name, "expr": expr}
    if labels:
        rule["labels"] = labels
    return rule


# --- API recording rules -----------------------------------------------------------------------


def api_recording_rules(contract: MetricContract) -> list[dict[str, Any]]:
    """Return the request-rate, error and latency recording rules, ordered so each reads only earlier ones."""
    endpoint, method, status = contract.endpoint_label, contract.method_label, contract.status_code_label
    instance_level = f"job, instance, {sig.ENVIRONMENT_LABEL}"
    seconds = contract.seconds_per_unit

    def quantile(q: float, buckets: str) -> str:
        expression = f"histogram_quantile({q}, {buckets})"
        # Quantiles of a millisecond histogram come out in milliseconds, but the recorded name says seconds.
        return expression if seconds == 1 else f"{expression} * {_number(seconds)}"

    by_instance_endpoint = sig.bucket_rate_by_endpoint(contract)
    by_job_endpoint = sig.bucket_rate_by_job_endpoint(contract)
    by_instance = sig.bucket_rate_by_instance(contract)
    by_job = sig.bucket_rate_by_job(contract)
    return [
        _record(
            sig.REQUESTS_BY_STATUS,
            f"sum by ({instance_level}, {endpoint}, {method}, {status}) (rate({contract.requests}{{{API}}}[5m]))",
        ),
        _record(sig.REQUESTS_BY_ENDPOINT_METHOD, f"sum without ({status}) ({sig.REQUESTS_BY_STATUS})"),
        # Service-level rates for the dashboard's default panels, one series per line they draw.
        _record(sig.REQUESTS_BY_JOB_ENDPOINT_METHOD, f"sum by ({JOB_LEVEL}, {endpoint}, {method}) ({sig.REQUESTS_BY_ENDPOINT_METHOD})"),
        _record(sig.REQUESTS_BY_JOB_ENDPOINT, f"sum by ({JOB_LEVEL}, {endpoint}) ({sig.REQUESTS_BY_JOB_ENDPOINT_METHOD})"),
        _record(sig.REQUESTS_BY_INSTANCE, f"sum by ({instance_level}) ({sig.REQUESTS_BY_ENDPOINT_METHOD})"),
        # The `or ... * 0` branch records 0 for instances without any 5xx, so ratios read 0 instead of no data.
        _record(
            sig.ERRORS_BY_INSTANCE,
            f'sum by ({instance_level}) ({sig.REQUESTS_BY_STATUS}{{{status}=~"5.."}})\n'
            f"  or\n{sig.REQUESTS_BY_INSTANCE} * 0",
        ),
        _record(sig.REQUESTS_BY_JOB, f"sum by ({JOB_LEVEL}) ({sig.REQUESTS_BY_INSTANCE})"),
        _record(sig.ERRORS_BY_JOB, f"sum by ({JOB_LEVEL}) ({sig.ERRORS_BY_INSTANCE})"),
        _record(sig.ERROR_RATIO_BY_JOB, f"{sig.ERRORS_BY_JOB}\n  /\n{sig.REQUESTS_BY_JOB}"),
        _record(
            by_instance_endpoint,
            f"sum by ({instance_level}, {endpoint}, le) (rate({contract.bucket}{{{API}}}[5m]))",
        ),
        _record(by_job_endpoint, f"sum by ({JOB_LEVEL}, {endpoint}, le) ({by_instance_endpoint})"),
        _record(by_instance, f"sum by ({instance_level}, le) ({by_instance_endpoint})"),
        _record(by_job, f"sum by ({JOB_LEVEL}, le) ({by_job_endpoint})"),
        _record(sig.LATENCY_P95_BY_JOB, quantile(0.95, by_job)),
        _record(sig.LATENCY_P99_BY_JOB, quantile(0.99, by_job)),
        # histogram_quantile() over every endpoint's buckets took about 2 s per 24-hour panel at
        # production size, so the dashboard reads these recorded quantiles instead.
        _record(sig.LATENCY_P95_BY_JOB_ENDPOINT, quantile(0.95, by_job_endpoint)),
        _record(sig.LATENCY_P99_BY_JOB_ENDPOINT, quantile(0.99, by_job_endpoint)),
        _record(sig.LATENCY_P95_BY_INSTANCE, quantile(0.95, by_instance)),
    ]


# --- API alerts --------------------------------------------------------------------------------


def api_alerts(settings: StackSettings) -> list[dict[str, Any]]:
    """Return the alerts on the API's errors, latency, traffic and reachability."""
    min_rate = _number(settings.alert_min_request_rate)
    traffic_guard = f"and on ({JOB_LEVEL})\n  {sig.REQUESTS_BY_JOB}{{{API}}} > {min_rate}"
    latency_threshold = parse_duration(settings.alert_latency_p95_threshold)

    # Last week's rate comes from the recorded per-job rate: the raw counter one week back selected
    # every request series and took about 150 ms per evaluation at production size.
    # NOTE: the alerts stay silent for one week after this rule first records, because the guard
    # needs last week's recorded rate.
    last_week = f"{sig.REQUESTS_BY_JOB}{{{API}}} offset 1w"
    traffic_ratio = f"{sig.REQUESTS_BY_JOB}{{{API}}}\n  / on ({JOB_LEVEL})\n{last_week}"
    last_week_guard = f"and on ({JOB_LEVEL})\n  {last_week} > {min_rate}"

    return [
        _alert(
            settings,
            "HighErrorRate",
            f"{sig.ERROR_RATIO_BY_JOB}{{{API}}} > {_number(settings.alert_error_rate_threshold)}\n{traffic_guard}",
            "critical",
            "High 5xx error rate on {{ $labels.job }} ({{ $labels.environment }})",
            "{{ $value | humanizePercentage }} of the requests to {{ $labels.job }} failed with a 5xx status "
            f"over the last 5 minutes (threshold: {_percent(settings.alert_error_rate_threshold)}, "
            f"for {settings.alert_error_rate_for}).",
            settings.alert_error_rate_for,
        ),
        _alert(
            settings,
            "HighLatency",
            f"{sig.LATENCY_P95_BY_JOB}{{{API}}} > {_number(latency_threshold)}\n{traffic_guard}",
            "warning",
            "High p95 latency on {{ $labels.job }} ({{ $labels.environment }})",
            "The 95th percentile latency of {{ $labels.job }} is {{ $value | humanizeDuration }} over the last "
            f"5 minutes (threshold: {settings.alert_latency_p95_threshold}, for {settings.alert_latency_for}).",
            settings.alert_latency_for,
        ),
        _alert(
            settings,
            "MagflowApiTrafficDrop",
            f"(\n{traffic_ratio}\n) < {_number(settings.alert_traffic_drop_ratio)}\n{last_week_guard}",
            "warning",
            "Traffic to {{ $labels.job }} ({{ $labels.environment }}) dropped against last week",
            "{{ $labels.job }} receives {{ $value | humanizePercentage }} of its request rate at the same time "
            f"one week earlier (threshold: {_percent(settings.alert_traffic_drop_ratio)}).",
            "15m",
        ),
        _alert(
            settings,
            "MagflowApiTrafficSurge",
            f"(\n{traffic_ratio}\n) > {_number(settings.alert_traffic_surge_factor)}\n{last_week_guard}",
            "warning",
            "Traffic to {{ $labels.job }} ({{ $labels.environment }}) surged against last week",
            "{{ $labels.job }} receives {{ $value | humanize }} times its request rate at the same time one "
            f"week earlier (threshold: {_number(settings.alert_traffic_surge_factor)} times).",
            "15m",
        ),
        _alert(
            settings,
            "MagflowApiDown",
            f"up{{{API}}} == 0",
            "critical",
            "MagFlow API instance {{ $labels.instance }} is down",
            "Prometheus has failed to scrape {{ $labels.instance }} of {{ $labels.job }} "
            "({{ $labels.environment }}) for 2 minutes.",
            "2m",
        ),
        _alert(
            settings,
            "MagflowApiHealthCheckFailing",
            f'probe_success{{job="{sig.HEALTH_JOB}"}} == 0',
            "critical",
            "Health check of MagFlow API instance {{ $labels.instance }} is failing",
            "The blackbox exporter's probe of {{ $labels.instance }} (job {{ $labels.job }}) has failed "
            "for 2 minutes: the health endpoint does not answer 200.",
            "2m",
        ),
    ]


# --- SLOs --------------------------------------------------------------------------------------


def _le_matcher(threshold_seconds: float, contract: MetricContract) -> str:
    """Return a regex that matches the `le` label of the bucket at the latency threshold.

    Client libraries write bounds differently (`0.5`, `0.50`, `500`, `500.0`), so the regex
    accepts trailing zeros after the decimal point.
    """
    bound = threshold_seconds / contract.seconds_per_unit
    text = f"{bound:.6f}".rstrip("0").rstrip(".")
    if "." in text:
        return f'le=~"{text.replace(".", "[.]")}0*"'
    return f'le=~"{text}([.]0*)?"'


def slo_error_ratio_exprs(settings: StackSettings, contract: MetricContract, window: str) -> dict[str, str]:
    """Return the error-ratio expression of each SLO over `window`, by SLO name."""
    status = contract.status_code_label
    requests = f"sum by ({JOB_LEVEL}) (rate({contract.requests}{{{API}}}[{window}]))"
    errors = f'sum by ({JOB_LEVEL}) (rate({contract.requests}{{{API}, {status}=~"5.."}}[{window}]))'
    le = _le_matcher(parse_duration(settings.slo_latency_threshold), contract)
    fast = f"sum by ({JOB_LEVEL}) (rate({contract.bucket}{{{API}, {le}}}[{window}]))"
    total = f"sum by ({JOB_LEVEL}) (rate({contract.count}{{{API}}}[{window}]))"
    return {
        sig.SLO_AVAILABILITY: f"(\n  {errors}\n    or\n  {requests} * 0\n)\n  /\n{requests}",
        sig.SLO_LATENCY: f"1 - (\n  {fast}\n    /\n  {total}\n)",
    }


def slo_objectives(settings: StackSettings) -> dict[str, float]:
    return {sig.SLO_AVAILABILITY: settings.slo_availability_objective, sig.SLO_LATENCY: settings.slo_latency_objective}


def slo_recording_rules(settings: StackSettings, contract: MetricContract) -> list[dict[str, Any]]:
    """Return the SLO error ratios over every burn-rate window and the SLO window, and the budget left."""
    rules = []
    for window in sig.SLO_WINDOWS:
        for slo, expr in slo_error_ratio_exprs(settings, contract, window).items():
            rules.append(_record(sig.slo_error_ratio(window), expr, {sig.SLO_LABEL: slo}))

    # Averaging the recorded 5m ratios over the SLO window avoids one rate() over 30 days of raw samples.
    # NOTE: the average weighs quiet and busy 5-minute steps alike, so it approximates the request-weighted ratio.
    period = format_duration(parse_duration(settings.slo_window))
    period_ratio = sig.slo_error_ratio(period)
    if period not in sig.SLO_WINDOWS:
        short = sig.slo_error_ratio("5m")
        rules.append(_record(period_ratio, f"sum_over_time({short}[{period}])\n  /\ncount_over_time({short}[{period}])"))

    for slo, objective in slo_objectives(settings).items():
        budget = _number(1 - objective)
        rules.append(
            _record(sig.SLO_BUDGET_REMAINING, f'1 - {period_ratio}{{{sig.SLO_LABEL}="{slo}"}} / {budget}', {sig.SLO_LABEL: slo})
        )
    return rules


def slo_alerts(settings: StackSettings) -> list[dict[str, Any]]:
    """Return the page (critical) and ticket (warning) burn-rate alerts of each SLO."""
    names = {sig.SLO_AVAILABILITY: "MagflowApiAvailabilityBudgetBurn", sig.SLO_LATENCY: "MagflowApiLatencyBudgetBurn"}
    meaning = {
        sig.SLO_AVAILABILITY: "failed with a 5xx status",
        sig.SLO_LATENCY: f"took longer than {settings.slo_latency_threshold}",
    }
    alerts = []
    for slo, objective in slo_objectives(settings).items():
        budget = 1 - objective
        for severity in ("critical", "warning"):
            clauses = []
            for clause_severity, factor, long, short in BURN_RATE_ALERTS:
                if clause_severity != severity:
                    continue
                limit = _number(factor * budget)
                match = f'{sig.SLO_LABEL}="{slo}", {API}'
                clauses.append(
                    f"(\n  {sig.slo_error_ratio(long)}{{{match}}} > {limit}\n    and\n"
                    f"  {sig.slo_error_ratio(short)}{{{match}}} > {limit}\n)"
                )
            windows = "1h or 6h" if severity == "critical" else "1d or 3d"
            alerts.append(
                _alert(
                    settings,
                    names[slo],
                    "\n  or\n".join(clauses),
                    severity,
                    f"{{{{ $labels.job }}}} ({{{{ $labels.environment }}}}) burns its {slo} error budget fast"
                    if severity == "critical"
                    else f"{{{{ $labels.job }}}} ({{{{ $labels.environment }}}}) burns its {slo} error budget",
                    f"{{{{ $value | humanizePercentage }}}} of the requests {meaning[slo]} over the last {windows}, "
                    f"against an error budget of {_percent(budget)} over {settings.slo_window} "
                    f"(objective {_percent(objective)}).",
                    labels={sig.SLO_LABEL: slo},
                )
            )
    return alerts


# --- Meta-monitoring ---------------------------------------------------------------------------


def _collector_rate(metric: str, by: str, signal: str) -> str:
    # Collector versions name these counters with or without a `_total` suffix, depending on how
    # they export their internal telemetry, so the regex matches both names.
    series = f'{{__name__=~"{metric}(_total)?"}}'
    return f'label_replace(sum by (job, instance, {by}) (rate({series}[5m])), "signal", "{signal}", "", "") > 0'


def meta_alerts(settings: StackSettings) -> list[dict[str, Any]]:
    """Return the alerts on the monitoring stack itself."""
    retention = settings.prometheus_retention_size
    prometheus = f'job="{ep.PROMETHEUS}"'
    return [
        _alert(
            settings,
            "Watchdog",
            "vector(1)",
            "none",
            "Alerting pipeline is working",
            "This alert always fires. Its absence means Prometheus, Alertmanager or the route between them is broken.",
        ),
        _alert(
            settings,
            "OtelCollectorRefusingTelemetry",
            _collector_rate("otelcol_receiver_refused_spans", "receiver", "spans")
            + "\n  or\n"
            + _collector_rate("otelcol_receiver_refused_metric_points", "receiver", "metric points"),
            "warning",
            "OpenTelemetry Collector {{ $labels.instance }} refuses {{ $labels.signal }}",
            "Receiver {{ $labels.receiver }} refuses {{ $value | humanize }} {{ $labels.signal }} per second, "
            "so senders get errors and may drop the telemetry.",
            "5m",
        ),
        _alert(
            settings,
            "OtelCollectorExportFailing",
            _collector_rate("otelcol_exporter_send_failed_spans", "exporter", "spans")
            + "\n  or\n"
            + _collector_rate("otelcol_exporter_send_failed_metric_points", "exporter", "metric points"),
            "warning",
            "OpenTelemetry Collector {{ $labels.instance }} fails to export {{ $labels.signal }}",
            "Exporter {{ $labels.exporter }} fails to send {{ $value | humanize }} {{ $labels.signal }} per second. "
            "They are lost once its retry queue is full.",
            "5m",
        ),
        _alert(
            settings,
            "PrometheusRuleEvaluationFailures",
            "sum by (job, instance, rule_group) (increase(prometheus_rule_evaluation_failures_total[5m])) > 0",
            "warning",
            "Prometheus {{ $labels.instance }} fails to evaluate rules",
            "{{ $value | humanize }} rule evaluations of group {{ $labels.rule_group }} failed in the last 5 minutes, "
            "so its recording rules have gaps and its alerts may not fire.",
        ),
        _alert(
            settings,
            "PrometheusNotificationErrors",
            "sum by (job, instance, alertmanager) (rate(prometheus_notifications_errors_total[5m]))\n  /\n"
            "sum by (job, instance, alertmanager) (rate(prometheus_notifications_sent_total[5m]))\n  > 0.01",
            "warning",
            "Prometheus {{ $labels.instance }} fails to send alerts to Alertmanager",
            "{{ $value | humanizePercentage }} of the alert notifications from {{ $labels.instance }} to "
            "{{ $labels.alertmanager }} failed over the last 5 minutes (threshold: 1%).",
            "15m",
        ),
        _alert(
            settings,
            "PrometheusStorageFillingUp",
            f"max by (job, instance) (prometheus_tsdb_storage_blocks_bytes{{{prometheus}}}) / {retention} > 0.9",
            "warning",
            "Prometheus {{ $labels.instance }} storage is close to its retention size",
            "Blocks use {{ $value | humanizePercentage }} of the retention size "
            f"({settings.prometheus_retention_size} bytes). At 100% Prometheus deletes the oldest blocks "
            f"before the retention time of {settings.prometheus_retention_time} has passed.",
            "30m",
        ),
        _alert(
            settings,
            "CertificateExpiringSoon",
            f'min by (job, instance) (probe_ssl_earliest_cert_expiry{{job="{blackbox_exporter.TLS_PROBE_JOB}"}}) - time()'
            f" < {int(parse_duration(settings.alert_certificate_expiry))}",
            "warning",
            "The certificate served at {{ $labels.instance }} expires soon",
            "The certificate chain served at {{ $labels.instance }} expires in {{ $value | humanizeDuration }} "
            f"(threshold: {settings.alert_certificate_expiry}). `pulumi up` replaces certificates once less than "
            f"{settings.tls_early_renewal} of their validity is left.",
            "10m",
        ),
        _alert(
            settings,
            "AlertmanagerNotificationsFailing",
            "sum by (job, instance, integration) (rate(alertmanager_notifications_failed_total[5m])) > 0",
            "critical",
            "Alertmanager {{ $labels.instance }} fails to send {{ $labels.integration }} notifications",
            "{{ $value | humanize }} {{ $labels.integration }} notifications per second failed over the last "
            "5 minutes, so alerts do not reach that receiver.",
            "10m",
        ),
    ]


# --- Files -------------------------------------------------------------------------------------


def rule_documents(settings: StackSettings) -> dict[str, dict[str, Any]]:
    """Return each rule file as data, by file name."""
    contract = contract_from_settings(settings)
    return {
        API_FILE: {
            "groups": [
                {"name": "magflow-api-recording", "rules": api_recording_rules(contract)},
                {"name": "magflow-api-alerts", "rules": api_alerts(settings)},
            ]
        },
        SLO_FILE: {
            "groups": [
                {"name": "magflow-api-slo-recording", "rules": slo_recording_rules(settings, contract)},
                {"name": "magflow-api-slo-alerts", "rules": slo_alerts(settings)},
            ]
        },
        META_FILE: {"groups": [{"name": "meta", "rules": meta_alerts(settings)}]},
    }


def render_rule_files(settings: StackSettings) -> dict[str, str]:
    """Return the text of each rule file, by file name."""
    header = "# Generated by `python -m components.rules` from the stack settings: edit components/rules.py instead.\n"
    return {name: header + to_yaml(document) for name, document in rule_documents(settings).items()}


def write_rule_files(settings: StackSettings, directory: Path) -> list[Path]:
    """Write the rule files into `directory`, remove stale generated ones, and return the written paths."""
    files = render_rule_files(settings)
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.yml"):
        if old.name not in files:
            old.unlink()
    written = []
    for name, text in files.items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.rules", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", default="dev", help="stack name whose Pulumi.<stack>.yaml is read (default: dev)")
    parser.add_argument("--out", type=Path, default=RULES_DIR, help="output directory (default: rules/)")
    options = parser.parse_args(argv)

    try:
        written = write_rule_files(stack_file_settings(options.stack), options.out)
    except (ConfigError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
