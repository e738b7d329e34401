"""Synthetic MagFlow API metrics in OpenMetrics text, for `promtool tsdb create-blocks-from openmetrics`.

The series follow the `magflow` metric contract (`components.contract`): the request duration
histogram (`_bucket`, `_count`, `_sum`) and the request counter, labelled by method, endpoint and
status code, plus `up` and the health probe's `probe_success`. Every series carries job
`magflow-api` (the probe: `magflow-api-health`), `instance` and `environment`, as the scrape
configuration of `components.services.prometheus` writes them.

The window contains two events that dashboards and alerts must show:
- a fault storm: 5xx bursts and slow responses on some endpoints for one hour, at 60 % of the window;
- an instance restart: instance 0 is down for two scrapes at 30 % of the window, and its counters
  restart from zero (a counter reset that `rate()` must handle).

Samples are written one file per two-hour window, aligned like Prometheus' blocks, so each file
becomes one block and no file has to hold the whole range.
"""

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, TextIO

import numpy as np

from components.contract import PRESETS

CONTRACT = PRESETS["magflow"]
JOB = "magflow-api"
HEALTH_JOB = "magflow-api-health"
ENVIRONMENT = "production"
SCRAPE_INTERVAL = 15
CHUNK_SECONDS = 2 * 3600

METHODS = ("GET", "POST", "PUT", "DELETE")
METHOD_SHARES = (0.6, 0.25, 0.1, 0.05)
# Status codes of each endpoint and method: five always, 503 on every second one, so
# 5.5 codes on average. Shares are of that endpoint's requests.
STATUS_SHARES = {"200": 0.9094, "400": 0.04, "401": 0.02, "404": 0.03, "500": 0.0004, "503": 0.0002}
BASE_CODES = ("200", "400", "401", "404", "500")

# Bucket bounds in seconds: the Prometheus client defaults, which include the SLO's 0.5 s threshold.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LATENCY_SIGMA = 0.6

# Requests per second of one instance at the daily mean; the daily cycle swings it by +-50 %.
INSTANCE_RATE = 100.0
STORM_ERROR_SHARE = 0.3
STORM_SLOWDOWN = 4.0
RESTART_GAP_SCRAPES = 2


@dataclass(frozen=True)
class Scenario:
    """Size of the generated data and the times of its events, in Unix seconds."""

    instances: int
    endpoints: int
    start: int
    end: int
    seed: int = 1

    @property
    def storm_start(self) -> int:
        return self._align(self.start + 0.6 * (self.end - self.start))

    @property
    def storm_end(self) -> int:
        return min(self.storm_start + 3600, self.end - SCRAPE_INTERVAL)

    @property
    def restart_time(self) -> int:
        return self._align(self.start + 0.3 * (self.end - self.start))

    @property
    def storm_endpoints(self) -> list[str]:
        """Endpoints that fail during the storm: the 10 % with the least traffic, at least one."""
        count = max(1, self.endpoints // 10)
        return [endpoint_name(index) for index in range(self.endpoints - count, self.endpoints)]

    def _align(self, moment: float) -> int:
        return int(moment) // SCRAPE_INTERVAL * SCRAPE_INTERVAL


def endpoint_name(index: int) -> str:
    return f"/api/v1/resource-{index:03d}"


def instance_name(index: int) -> str:
    return f"magflow-api-{index}:8000"


@dataclass
class Combinations:
    """One entry per (instance, endpoint, method, status code) label set, as parallel arrays."""

    instance: np.ndarray
    endpoint: np.ndarray
    method: np.ndarray
    codes: list[str]
    rate: np.ndarray
    """Mean requests per second."""
    median: np.ndarray
    """Median latency in seconds."""
    prefixes: list[str]
    """Label set text without braces, shared by every series of the combination."""

    def __len__(self) -> int:
        return len(self.codes)


def build_combinations(scenario: Scenario) -> Combinations:
    rng = np.random.default_rng(scenario.seed)
    endpoint_weights = 1.0 / np.arange(1, scenario.endpoints + 1) ** 0.8
    endpoint_weights /= endpoint_weights.sum()
    endpoint_medians = np.exp(rng.uniform(math.log(0.01), math.log(0.12), scenario.endpoints))

    instance, endpoint, method, codes, rate, median, prefixes = [], [], [], [], [], [], []
    for i in range(scenario.instances):
        for e in range(scenario.endpoints):
            for m, method_name in enumerate(METHODS):
                endpoint_codes = BASE_CODES + (("503",) if (e + m) % 2 == 0 else ())
                for code in endpoint_codes:
                    instance.append(i)
                    endpoint.append(e)
                    method.append(m)
                    codes.append(code)
                    rate.append(INSTANCE_RATE * endpoint_weights[e] * METHOD_SHARES[m] * STATUS_SHARES[code])
                    median.append(endpoint_medians[e])
                    prefixes.append(
                        f'job="{JOB}",instance="{instance_name(i)}",environment="{ENVIRONMENT}",'
                        f'{CONTRACT.endpoint_label}="{endpoint_name(e)}",{CONTRACT.method_label}="{method_name}",'
                        f'{CONTRACT.status_code_label}="{code}"'
                    )
    return Combinations(
        np.array(instance), np.array(endpoint), np.array(method), codes, np.array(rate), np.array(median), prefixes
    )


def chunk_bounds(scenario: Scenario) -> Iterator[tuple[int, int]]:
    """Yield [start, end) of each two-hour window that contains samples, aligned to multiples of two hours."""
    first = scenario.start // CHUNK_SECONDS * CHUNK_SECONDS
    for chunk_start in range(first, scenario.end, CHUNK_SECONDS):
        yield max(chunk_start, scenario.start), min(chunk_start + CHUNK_SECONDS, scenario.end)


class Generator:
    """Writes the scenario's samples chunk by chunk, carrying the counters from one chunk to the next."""

    def __init__(self, scenario: Scenario):
        self.scenario = scenario
        self.combinations = build_combinations(scenario)
        self.rng = np.random.default_rng(scenario.seed + 1)
        size = len(self.combinations)
        self.count = np.zeros(size, dtype=np.int64)
        self.buckets = np.zeros((size, len(BUCKETS)), dtype=np.int64)
        self.sum = np.zeros(size)
        storm = {int(name.rsplit("-", 1)[1]) for name in scenario.storm_endpoints}
        self.in_storm = np.isin(self.combinations.endpoint, list(storm))
        self.restarted = False
        self.is_5xx = np.array([code.startswith("5") for code in self.combinations.codes])

    def series_count(self) -> int:
        """Return the number of series written: histogram and counter per combination, plus up and probe_success."""
        return len(self.combinations) * (len(BUCKETS) + 4) + 2 * self.scenario.instances

    def write_chunk(self, start: int, end: int, out: TextIO) -> int:
        """Write the samples of [start, end) and return the number of samples written."""
        scenario, combos = self.scenario, self.combinations
        times = np.arange(start, end, SCRAPE_INTERVAL)
        if len(times) == 0:
            return 0

        # Requests in each scrape interval: Poisson around the rate, with a daily cycle.
        cycle = 1.0 + 0.5 * np.sin(2 * math.pi * (times % 86400) / 86400)
        storming = (times >= scenario.storm_start) & (times < scenario.storm_end)
        mean = combos.rate[:, None] * cycle[None, :] * SCRAPE_INTERVAL
        storm_cells = self.in_storm[:, None] & storming[None, :]
        # During the storm each 5xx code of a storm endpoint gets half of STORM_ERROR_SHARE of its traffic.
        storm_mean = mean / np.array([STATUS_SHARES[c] for c in combos.codes])[:, None] * STORM_ERROR_SHARE / 2
        mean = np.where(storm_cells & self.is_5xx[:, None], storm_mean, mean)
        requests = self.rng.poisson(mean)

        medians = combos.median[:, None] * np.where(storm_cells, STORM_SLOWDOWN, 1.0)
        # Share of requests at or under each bound: a log-normal latency distribution.
        z = (np.log(np.array(BUCKETS))[None, None, :] - np.log(medians)[:, :, None]) / (LATENCY_SIGMA * math.sqrt(2))
        shares = 0.5 * (1.0 + _erf(z))
        bucket_increments = np.floor(requests[:, :, None] * shares).astype(np.int64)
        sum_increments = requests * medians * math.exp(LATENCY_SIGMA**2 / 2)

        counts = self.count[:, None] + np.cumsum(requests, axis=1)
        buckets = self.buckets[:, None, :] + np.cumsum(bucket_increments, axis=1)
        sums = self.sum[:, None] + np.cumsum(sum_increments, axis=1)

        # The restart: instance 0 misses scrapes, then its counters count only requests from then on.
        back_up = scenario.restart_time + RESTART_GAP_SCRAPES * SCRAPE_INTERVAL
        down = (times >= scenario.restart_time) & (times < back_up)
        if not self.restarted and times[-1] >= back_up:
            self.restarted = True
            first = int(np.argmax(times >= back_up))
            reset = combos.instance == 0
            if first == 0:
                counts[reset] -= self.count[reset, None]
                buckets[reset] -= self.buckets[reset, None, :]
                sums[reset] -= self.sum[reset, None]
            else:
                counts[reset, first:] -= counts[reset, first - 1 : first]
                buckets[reset, first:] -= buckets[reset, first - 1 : first]
                sums[reset, first:] -= sums[reset, first - 1 : first]

        self.count, self.buckets, self.sum = counts[:, -1].copy(), buckets[:, -1, :].copy(), sums[:, -1].copy()
        return self._write(times, down, counts, buckets, sums, out)

    def _write(self, times, down, counts, buckets, sums, out: TextIO) -> int:
        combos = self.combinations
        suffixes = [f" {t}\n" for t in times.tolist()]
        all_indices = list(range(len(times)))
        up_indices = [k for k in all_indices if not down[k]]
        written = 0

        def series(prefix: str, values: list, indices: list[int]) -> None:
            nonlocal written
            out.write("".join([f"{prefix}{values[k]}{suffixes[k]}" for k in indices]))
            written += len(indices)

        duration, requests = CONTRACT.request_duration, CONTRACT.requests
        for c, labels in enumerate(combos.prefixes):
            indices = up_indices if combos.instance[c] == 0 else all_indices
            count = counts[c].tolist()
            for b, bound in enumerate(BUCKETS):
                series(f'{duration}_bucket{{{labels},le="{bound:g}"}} ', buckets[c, :, b].tolist(), indices)
            series(f'{duration}_bucket{{{labels},le="+Inf"}} ', count, indices)
            series(f"{duration}_count{{{labels}}} ", count, indices)
            series(f"{duration}_sum{{{labels}}} ", np.round(sums[c], 3).tolist(), indices)
            series(f"{requests}{{{labels}}} ", count, indices)

        for i in range(self.scenario.instances):
            up = [0 if (i == 0 and d) else 1 for d in down.tolist()]
            series(f'up{{job="{JOB}",instance="{instance_name(i)}",environment="{ENVIRONMENT}"}} ', up, all_indices)
            series(
                f'probe_success{{job="{HEALTH_JOB}",instance="{instance_name(i)}",environment="{ENVIRONMENT}"}} ',
                up,
                all_indices,
            )
        return written


def _erf(values: np.ndarray) -> np.ndarray:
    # Abramowitz and Stegun 7.1.26, absolute error below 1.5e-7: numpy has no erf and SciPy is not a dependency.
    sign = np.sign(values)
    x = np.abs(values)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-x * x))


def write_openmetrics(generator: Generator, start: int, end: int, path: Path) -> int:
    """Write one chunk as an OpenMetrics file ending in `# EOF`, and return its sample count."""
    with path.open("w", buffering=1 << 22) as out:
        samples = generator.write_chunk(start, end, out)
        out.write("# EOF\n")
    return samples
