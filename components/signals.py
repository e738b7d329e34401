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
# Service-level rates without `instance`: a panel over 24 hours stays fast only when it reads
# about one stored series per line it draws (see docs/performance.md).
REQUESTS_BY_JOB_ENDPOINT_METHOD = "job_endpoint_method:http_requests:rate5m"
REQUESTS_BY_JOB_ENDPOINT = "job_endpoint:http_requests:rate5m"
REQUESTS_BY_INSTANCE = "job_instance:http_requests:rate5m"
ERRORS_BY_INSTANCE = "job_instance:http_requests_errors:rate5m"
REQUESTS_BY_JOB = "job:http_requests:rate5m"
ERRORS_BY_JOB = "job:http_requests_errors:rate5m"
ERROR_RATIO_BY_JOB = "job:http_requests_errors:ratio_rate5m"

# Latency quantiles are recorded in seconds whatever the histogram's unit.
LATENCY_P95_BY_JOB = "job:http_request_duration_seconds:p95_rate5m"
LATENCY_P99_BY_JOB = "job:http_request_duration_seconds:p99_rate5m"
LATENCY_P95_BY_JOB_ENDPOINT = "job_endpoint:http_request_duration_seconds:p95_rate5m"
LATENCY_P99_BY_JOB_ENDPOINT = "job_endpoint:http_request_duration_seconds:p99_rate5m"
LATENCY_P95_BY_INSTANCE = "job_instance:http_request_duration_seconds:p95_rate5m"

# SLO series carry an `slo` label (availability or latency). The windows are those of the burn-rate alerts.
SLO_LABEL = "slo"
SLO_AVAILABILITY = "availability"
SLO_LATENCY = "latency"
SLO_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
SLO_BUDGET_REMAINING = "job:slo_error_budget:remaining_ratio"


def bucket_rate_by_endpoint(contract: MetricContract) -> str:
    """Return the name of the recorded per-endpoint bucket rates, which keep the histogram's unit."""
    return f"job_instance_endpoint_le:http_request_duration_{contract.request_duration_unit}_bucket:rate5m"


def bucket_rate_by_job_endpoint(contract: MetricContract) -> str:
    """Return the name of the recorded service-level bucket rates per endpoint, which keep the histogram's unit."""
    return f"job_endpoint_le:http_request_duration_{contract.request_duration_unit}_bucket:rate5m"


def bucket_rate_by_instance(contract: MetricContract) -> str:
    """Return the name of the recorded per-instance bucket rates, which keep the histogram's unit."""
    return f"job_instance_le:http_request_duration_{contract.request_duration_unit}_bucket:rate5m"


def bucket_rate_by_job(contract: MetricContract) -> str:
    """Return the name of the recorded per-job bucket rates, which keep the histogram's unit."""
    return f"job_le:http_request_duration_{contract.request_duration_unit}_bucket:rate5m"


def slo_error_ratio(window: str) -> str:
    """Return the name of the recorded SLO error ratio over `window`, such as 1h or the SLO window."""
    return f"job:slo_errors:ratio_rate{window}"


def api_selector(job: str = API_JOB) -> str:
    """Return the label matchers that every panel query applies: the job and the dashboard variables."""
    return f'job="{job}", instance=~"{INSTANCE_VARIABLE}", {ENVIRONMENT_LABEL}=~"{ENVIRONMENT_VARIABLE}"'


def service_selector(job: str = API_JOB) -> str:
    """Return the label matchers of service-level queries, which ignore the instance variable."""
    return f'job="{job}", {ENVIRONMENT_LABEL}=~"{ENVIRONMENT_VARIABLE}"'


@dataclass(frozen=True)
class PanelQueries:
    """PromQL of every API panel. Latencies are in seconds and ratios in 0..1.

    Each query reads recording rules where one exists. The `raw_*` variants compute the same value
    from the scraped series, for ranges that start before the recording rules have history.
    The queries named in `SERVICE_LEVEL_QUERIES` read per-job series, which have no `instance`
    label, so they ignore the instance variable. An SLO is met or missed by the whole service, and
    the other service-level panels stay fast because they read one stored series per drawn line.
    """

    request_rate_by_endpoint: str
    request_rate_by_endpoint_method: str
    request_rate_by_instance: str
    latency_p95_by_endpoint: str
    latency_p99_by_endpoint: str
    latency_p95_by_instance: str
    error_ratio: str
    instance_up: str
    probe_success: str
    availability_ratio: str
    slo_availability_budget_remaining: str
    slo_latency_budget_remaining: str
    endpoint_label: str
    method_label: str
    status_code_label: str
    raw_request_rate_by_endpoint: str
    raw_request_rate_by_endpoint_method: str
    raw_latency_p95_by_endpoint: str
    raw_latency_p99_by_endpoint: str
    raw_error_ratio: str
    raw_availability_ratio: str


# Fields of `PanelQueries` whose queries ignore the instance variable.
SERVICE_LEVEL_QUERIES = frozenset(
    {
        "request_rate_by_endpoint",
        "request_rate_by_endpoint_method",
        "latency_p95_by_endpoint",
        "latency_p99_by_endpoint",
        "slo_availability_budget_remaining",
        "slo_latency_budget_remaining",
        "raw_request_rate_by_endpoint",
        "raw_request_rate_by_endpoint_method",
    }
)


def _to_seconds(expression: str, contract: MetricContract) -> str:
    # A millisecond histogram's quantiles are in milliseconds: scale them so every panel shows seconds.
    if contract.seconds_per_unit == 1:
        return expression
    return f"({expression}) * {contract.seconds_per_unit:g}"


def _quantile_by_endpoint(quantile: float, series: str, contract: MetricContract) -> str:
    # The job and environment labels stay, so the result has the labels of the recorded quantiles.
    expression = f"histogram_quantile({quantile}, sum by (job, {ENVIRONMENT_LABEL}, {contract.endpoint_label}, le) ({series}))"
    return _to_seconds(expression, contract)


def _errors_matcher(contract: MetricContract) -> str:
    return f'{contract.status_code_label}=~"5.."'


def panel_queries(settings: StackSettings) -> PanelQueries:
    """Return the dashboard's PromQL for the stack's metric contract."""
    contract = contract_from_settings(settings)
    selector, service = api_selector(), service_selector()
    endpoint, method = contract.endpoint_label, contract.method_label
    job_level = f"job, {ENVIRONMENT_LABEL}"

    raw_requests = f"rate({contract.requests}{{{selector}}}[5m])"
    raw_service_requests = f"rate({contract.requests}{{{service}}}[5m])"
    raw_errors = f"rate({contract.requests}{{{selector}, {_errors_matcher(contract)}}}[5m])"
    raw_buckets = f"rate({contract.bucket}{{{selector}}}[5m])"

    def budget(slo: str) -> str:
        return f'{SLO_BUDGET_REMAINING}{{{service}, {SLO_LABEL}="{slo}"}}'

    return PanelQueries(
        request_rate_by_endpoint=f"{REQUESTS_BY_JOB_ENDPOINT}{{{service}}}",
        request_rate_by_endpoint_method=f"{REQUESTS_BY_JOB_ENDPOINT_METHOD}{{{service}}}",
        request_rate_by_instance=f"{REQUESTS_BY_INSTANCE}{{{selector}}}",
        latency_p95_by_endpoint=f"{LATENCY_P95_BY_JOB_ENDPOINT}{{{service}}}",
        latency_p99_by_endpoint=f"{LATENCY_P99_BY_JOB_ENDPOINT}{{{service}}}",
        latency_p95_by_instance=f"{LATENCY_P95_BY_INSTANCE}{{{selector}}}",
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
        raw_request_rate_by_endpoint=f"sum by ({job_level}, {endpoint}) ({raw_service_requests})",
        raw_request_rate_by_endpoint_method=f"sum by ({job_level}, {endpoint}, {method}) ({raw_service_requests})",
        raw_latency_p95_by_endpoint=_quantile_by_endpoint(0.95, raw_buckets, contract),
        raw_latency_p99_by_endpoint=_quantile_by_endpoint(0.99, raw_buckets, contract),
        raw_error_ratio=f"sum by (job) ({raw_errors} or {raw_requests} * 0)\n/\nsum by (job) ({raw_requests})",
        raw_availability_ratio=(
            f"1 - (\n  sum(increase({contract.requests}{{{selector}, {_errors_matcher(contract)}}}[$__range]) or "
            f"increase({contract.requests}{{{selector}}}[$__range]) * 0)\n  /\n"
            f"  sum(increase({contract.requests}{{{selector}}}[$__range]))\n)"
        ),
    )
