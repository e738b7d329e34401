"""PromQL of the API's signals: recording rule names and the queries that dashboard panels run.

The rule generator (`components.rules`) records the series named here and the dashboard reads
them through `panel_queries`, so a panel cannot ask for a series that no rule writes. Names follow
Prometheus' `level:metric:operations` convention. The level lists the labels kept besides
`environment`, which every series keeps because it is a scrape-time constant of the API job.
"""

from dataclasses import dataclass

from components.contract import MetricContract, contract_from_settings
from components.settings import StackSettings

API_JOB = "magflow-api"
HEALTH_JOB = "magflow-api-health"
ENVIRONMENT_LABEL = "environment"

# Grafana template variables that every panel query filters on.
INSTANCE_VARIABLE = "$instance"
ENVIRONMENT_VARIABLE = "$environment"

# Recording rules of the request counter, at falling levels of detail.
REQUESTS_BY_STATUS = "job_instance_endpoint_method_status:http_requests:rate5m"
REQUESTS_BY_ENDPOINT_METHOD = "job_instance_endpoint_method:http_requests:rate5m"
REQUESTS_BY_INSTANCE = "job_instance:http_requests:rate5m"
ERRORS_BY_INSTANCE = "job_instance:http_requests_errors:rate5m"
REQUESTS_BY_JOB = "job:http_requests:rate5m"
ERRORS_BY_JOB = "job:http_requests_errors:rate5m"
ERROR_RATIO_BY_JOB = "job:http_requests_errors:ratio_rate5m"

# Latency quantiles are recorded in seconds whatever the histogram's unit.
LATENCY_P95_BY_JOB = "job:http_request_duration_seconds:p95_rate5m"
LATENCY_P99_BY_JOB = "job:http_request_duration_seconds:p99_rate5m"

# SLO series carry an `slo` label (availability or latency). The windows are those of the burn-rate alerts.
SLO_LABEL = "slo"
SLO_AVAILABILITY = "availability"
SLO_LATENCY = "latency"
SLO_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
SLO_BUDGET_REMAINING = "job:slo_error_budget:remaining_ratio"


def bucket_rate_by_endpoint(contract: MetricContract) -> str:
    """Return the name of the recorded per-endpoint bucket rates, which keep the histogram's unit."""
    return f"job_instance_endpoint_le:http_request_duration_{contract.request_duration_unit}_bucket:rate5m"


def bucket_rate_by_job(contract: MetricContract) -> str:
    """Return the name of the recorded per-job bucket rates, which keep the histogram's unit."""
    return f"job_le:http_request_duration_{contract.request_duration_unit}_bucket:rate5m"


def slo_error_ratio(window: str) -> str:
    """Return the name of the recorded SLO error ratio over `window`, such as 1h or the SLO window."""
    return f"job:slo_errors:ratio_rate{window}"


def api_selector(job: str = API_JOB) -> str:
    """Return the label matchers that every panel query applies: the job and the dashboard variables."""
    return f'job="{job}", instance=~"{INSTANCE_VARIABLE}", {ENVIRONMENT_LABEL}=~"{ENVIRONMENT_VARIABLE}"'


@dataclass(frozen=True)
class PanelQueries:
    """PromQL of every API panel. Latencies are in seconds and ratios in 0..1.

    Each query reads recording rules where one exists. The `raw_*` variants compute the same value
    from the scraped series, for ranges that start before the recording rules have history.
    The SLO budget queries read per-job series, which have no `instance` label: an SLO is met or
    missed by the whole service, so they ignore the instance variable.
    """

    request_rate_by_endpoint_method: str
    latency_p95_by_endpoint: str
    latency_p99_by_endpoint: str
    error_ratio: str
    instance_up: str
    probe_success: str
    availability_ratio: str
    slo_availability_budget_remaining: str
    slo_latency_budget_remaining: str
    endpoint_label: str
    method_label: str
    status_code_label: str
    raw_request_rate_by_endpoint_method: str
    raw_latency_p95_by_endpoint: str
    raw_latency_p99_by_endpoint: str
    raw_error_ratio: str
    raw_availability_ratio: str


def _to_seconds(expression: str, contract: MetricContract) -> str:
    # A millisecond histogram's quantiles are in milliseconds: scale them so every panel shows seconds.
    if contract.seconds_per_unit == 1:
        return expression
    return f"({expression}) * {contract.seconds_per_unit:g}"


def _quantile_by_endpoint(quantile: float, series: str, contract: MetricContract) -> str:
    expression = f"histogram_quantile({quantile}, sum by ({contract.endpoint_label}, le) ({series}))"
    return _to_seconds(expression, contract)


def _errors_matcher(contract: MetricContract) -> str:
    return f'{contract.status_code_label}=~"5.."'


def panel_queries(settings: StackSettings) -> PanelQueries:
    """Return the dashboard's PromQL for the stack's metric contract."""
    contract = contract_from_settings(settings)
    selector = api_selector()
    endpoint, method = contract.endpoint_label, contract.method_label

    raw_requests = f"rate({contract.requests}{{{selector}}}[5m])"
    raw_errors = f"rate({contract.requests}{{{selector}, {_errors_matcher(contract)}}}[5m])"
    raw_buckets = f"rate({contract.bucket}{{{selector}}}[5m])"
    recorded_buckets = f"{bucket_rate_by_endpoint(contract)}{{{selector}}}"

    def budget(slo: str) -> str:
        service_selector = f'job="{API_JOB}", {ENVIRONMENT_LABEL}=~"{ENVIRONMENT_VARIABLE}"'
        return f'{SLO_BUDGET_REMAINING}{{{service_selector}, {SLO_LABEL}="{slo}"}}'

    return PanelQueries(
        request_rate_by_endpoint_method=f"sum by ({endpoint}, {method}) ({REQUESTS_BY_ENDPOINT_METHOD}{{{selector}}})",
        latency_p95_by_endpoint=_quantile_by_endpoint(0.95, recorded_buckets, contract),
        latency_p99_by_endpoint=_quantile_by_endpoint(0.99, recorded_buckets, contract),
        error_ratio=(
            f"sum by (job) ({ERRORS_BY_INSTANCE}{{{selector}}})\n/\nsum by (job) ({REQUESTS_BY_INSTANCE}{{{selector}}})"
        ),
        instance_up=f"up{{{selector}}}",
        probe_success=f"probe_success{{{api_selector(HEALTH_JOB)}}}",
        availability_ratio=(
            f"1 - (\n  sum(sum_over_time({ERRORS_BY_INSTANCE}{{{selector}}}[$__range]))\n  /\n"
            f"  sum(sum_over_time({REQUESTS_BY_INSTANCE}{{{selector}}}[$__range]))\n)"
        ),
        slo_availability_budget_remaining=budget(SLO_AVAILABILITY),
        slo_latency_budget_remaining=budget(SLO_LATENCY),
        endpoint_label=endpoint,
        method_label=method,
        status_code_label=contract.status_code_label,
        raw_request_rate_by_endpoint_method=f"sum by ({endpoint}, {method}) ({raw_requests})",
        raw_latency_p95_by_endpoint=_quantile_by_endpoint(0.95, raw_buckets, contract),
        raw_latency_p99_by_endpoint=_quantile_by_endpoint(0.99, raw_buckets, contract),
        raw_error_ratio=f"sum by (job) ({raw_errors} or {raw_requests} * 0)\n/\nsum by (job) ({raw_requests})",
        raw_availability_ratio=(
            f"1 - (\n  sum(increase({contract.requests}{{{selector}, {_errors_matcher(contract)}}}[$__range]) or "
            f"increase({contract.requests}{{{selector}}}[$__range]) * 0)\n  /\n"
            f"  sum(increase({contract.requests}{{{selector}}}[$__range]))\n)"
        ),
    )
