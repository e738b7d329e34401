"""Benchmark of the dashboard's and the alerts' PromQL on a production-sized TSDB.

    python -m bench --instances 4 --endpoints 50 --hours 24 --out build/bench

Steps:
1. Generate the API's series (`bench.generate`) and turn them into blocks with
   `promtool tsdb create-blocks-from openmetrics`.
2. Start Debian's Prometheus on 127.0.0.1 over them with raised query limits, and backfill the
   recording rules of `rules/` with `promtool tsdb create-blocks-from rules`. The backfill reads
   only series that already exist in the TSDB, so it runs one dependency level at a time.
3. Restart Prometheus with the default query limits, time every dashboard query and every alert
   expression, and compare each recording rule with its expression.
Results go to `bench.json` and `bench.md` in the output directory.
"""

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench import generate
from components.rendering import REPOSITORY_ROOT
from components.config import stack_file_settings
from components.signals import panel_queries
from tests.live import LOOPBACK, Process, free_port, http_get, start_process, stop_process, wait_until_ready

DASHBOARD = REPOSITORY_ROOT / "dashboards" / "magflow-api.json"
RULE_FILES = ("magflow-api.yml", "magflow-api-slo.yml", "meta.yml")
RANGES = {"1h": 3600, "24h": 86400, "7d": 7 * 86400}
# Grafana's interval rounding (`kbn.round_interval` in @grafana/data), in seconds: an interval
# below the first number becomes the second. Larger intervals than the last do not occur here.
GRAFANA_ROUNDING = ((17.5, 15), (25, 20), (45, 30), (90, 60), (210, 120), (450, 300), (750, 600), (1050, 900), (1500, 1200))
MAX_DATA_POINTS = 1000
# Grafana's Prometheus data source uses the scrape interval as the minimum step.
MIN_STEP = 15
# Relative tolerance of the recorded-against-raw comparison: both sides run the same float
# operations, except that sums may add the same numbers in another order.
TOLERANCE = 1e-9
# Absolute tolerance of ratios over a range computed from recorded rates against raw increase():
# the recorded form samples 5-minute rates at the evaluation interval, so the edges of the range differ.
RANGE_RATIO_TOLERANCE = 0.005
# Runs of a query stop after the first when it took longer than this, to keep the run short.
SLOW_QUERY_SECONDS = 20.0
BACKFILL_QUERY_LIMITS = ("--query.max-samples=2000000000", "--query.timeout=30m")


@dataclass
class Timing:
    """Result of one query run `runs` times: wall-clock milliseconds at the client, and samples read."""

    median_ms: float | None = None
    min_ms: float | None = None
    eval_ms: float | None = None
    """Median of Prometheus' own `evalTotalTime`, without the JSON encoding and transfer of the result."""
    runs: int = 0
    samples: int | None = None
    series: int | None = None
    error: str | None = None


@dataclass
class QueryCase:
    """One dashboard target or alert expression, with its raw-series counterpart if it has one."""

    name: str
    kind: str
    """`panel` (a range query, as Grafana sends it) or `alert` (an instant query, as the rule evaluator runs it)."""
    expr: str
    raw_expr: str | None = None
    reads_raw: bool = False
    """The query itself reads scraped series, not recording rules."""
    instant: bool = False
    """A panel target that Grafana sends as an instant query at the end of the range."""
    max_data_points: int = MAX_DATA_POINTS
    """Points per series that the panel requests (`maxDataPoints`), which set the step of its range query."""
    drill_down: bool = False
    """The panel is in the collapsed drill-down row, which Grafana queries only when a user opens it."""
    results: dict[str, dict[str, Timing]] = field(default_factory=dict)
    """Timings by range name, then by `query` or `raw`."""


# --- Prometheus -----------------------------------------------------------------------------------


class Prometheus:
    """Debian's Prometheus on 127.0.0.1 over a TSDB directory, stopped by its PID."""

    def __init__(self, data_dir: Path, log_dir: Path, extra_flags: tuple[str, ...] = ()):
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.extra_flags = extra_flags
        self.port = 0
        self.process: Process | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, timeout: float = 300.0) -> None:
        config = self.log_dir / "prometheus.yml"
        # No scrape jobs: the server only runs queries over the blocks in its TSDB.
        config.write_text("global:\n  scrape_interval: 15s\n  evaluation_interval: 15s\n")
        self.port = free_port()
        argv = [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={self.data_dir}",
            f"--web.listen-address={LOOPBACK}:{self.port}",
            *self.extra_flags,
        ]
        self.process = start_process("prometheus", argv, self.log_dir / f"prometheus-{self.port}.log")
        wait_until_ready(f"{self.url}/-/ready", self.process, timeout=timeout)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=120.0)
            self.process = None

    def metric(self, name: str) -> float:
        """Return the value of one of Prometheus' own unlabelled metrics from /metrics."""
        status, body = http_get(f"{self.url}/metrics", timeout=30.0)
        if status != 200:
            raise RuntimeError(f"GET {self.url}/metrics returned {status}")
        for line in body.decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise KeyError(f"metric {name} not found at {self.url}/metrics")

    def wait_for_compaction(self, quiet_seconds: float = 30.0, timeout: float = 900.0) -> None:
        """Wait until the TSDB has compacted the backfilled blocks, so that no compaction runs during the timings.

        Prometheus plans its first compaction one minute after start, and then merges the
        overlapping blocks of the backfill. The block count must stay the same for `quiet_seconds`.
        """
        deadline = time.monotonic() + timeout
        time.sleep(65.0)
        last = (self.metric("prometheus_tsdb_blocks_loaded"), self.metric("prometheus_tsdb_compactions_total"))
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(5.0)
            now = (self.metric("prometheus_tsdb_blocks_loaded"), self.metric("prometheus_tsdb_compactions_total"))
            if now != last:
                last, quiet_since = now, time.monotonic()
            elif time.monotonic() - quiet_since >= quiet_seconds:
                return
        raise TimeoutError(f"Prometheus at {self.url} was still compacting after {timeout}s (blocks, compactions: {last})")

    def query(self, expr: str, start: float, end: float, step: int | None, timeout: float = 600.0) -> tuple[float, dict]:
        """Run a range query (or an instant query at `end` when `step` is None) and return (seconds, JSON body)."""
        if step is None:
            params = {"query": expr, "time": end, "stats": "all"}
            path = "query"
        else:
            params = {"query": expr, "start": start, "end": end, "step": step, "stats": "all"}
            path = "query_range"
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        began = time.perf_counter()
        status, body = http_get(url, timeout=timeout)
        elapsed = time.perf_counter() - began
        document = json.loads(body)
        if status != 200 and "error" not in document:
            raise RuntimeError(f"GET {url} returned {status}: {body[:300]!r}")
        return elapsed, document


# --- Data -----------------------------------------------------------------------------------------


def ingest(scenario: generate.Scenario, work_dir: Path, data_dir: Path, parallel: int) -> dict[str, Any]:
    """Generate the scenario chunk by chunk and turn each chunk into a block, `parallel` promtool runs at a time."""
    generator = generate.Generator(scenario)
    work_dir.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    running: list[tuple[subprocess.Popen, Path]] = []
    samples = 0
    began = time.monotonic()

    def reap(limit: int) -> None:
        while len(running) > limit:
            popen, path = running.pop(0)
            output = popen.communicate()[0]
            if popen.returncode != 0:
                raise RuntimeError(f"promtool tsdb create-blocks-from openmetrics {path} failed:\n{output[-2000:]}")
            path.unlink()

    for index, (start, end) in enumerate(generate.chunk_bounds(scenario)):
        path = work_dir / f"chunk-{index:03d}.om"
        samples += generate.write_openmetrics(generator, start, end, path)
        reap(parallel - 1)
        argv = ["promtool", "tsdb", "create-blocks-from", "--quiet", "openmetrics", str(path), str(data_dir)]
        running.append((subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), path))
        print(f"chunk {index}: {samples} samples so far, {time.monotonic() - began:.0f}s", flush=True)
    reap(0)
    return {"samples": samples, "series": generator.series_count(), "seconds": round(time.monotonic() - began, 1)}


def load_rule_groups() -> list[dict[str, Any]]:
    """Return the groups of every rule file, each with the name of its file under `file`."""
    groups = []
    for name in RULE_FILES:
        for group in yaml.safe_load((REPOSITORY_ROOT / "rules" / name).read_text())["groups"]:
            groups.append({**group, "file": name})
    return groups


def references(expr: str, names: set[str]) -> set[str]:
    """Return the recorded series names that `expr` reads."""
    return {name for name in names if re.search(rf"(?<![\w:]){re.escape(name)}(?![\w:])", expr)}


def rule_levels(groups: list[dict[str, Any]]) -> dict[int, list[tuple[tuple[str, str], dict[str, Any]]]]:
    """Sort the recording rules into levels: level 0 reads only scraped series, level n reads level n-1 and below."""
    rules = [((group["file"], group["name"]), rule) for group in groups for rule in group["rules"] if "record" in rule]
    names = {rule["record"] for _, rule in rules}
    level: dict[str, int] = {}
    remaining = list(rules)
    while remaining:
        progress = []
        for group_name, rule in remaining:
            needed = references(rule["expr"], names)
            if all(name in level for name in needed):
                rule_level = 1 + max((level[name] for name in needed), default=-1)
                progress.append((group_name, rule, rule_level))
        if not progress:
            raise ValueError(f"recording rules with cyclic references: {[rule['record'] for _, rule in remaining]}")
        for group_name, rule, rule_level in progress:
            # Rules recorded under one name with several label sets share the highest level.
            level[rule["record"]] = max(level.get(rule["record"], 0), rule_level)
        done = {id(rule) for _, rule, _ in progress}
        remaining = [(group_name, rule) for group_name, rule in remaining if id(rule) not in done]

    levels: dict[int, list[tuple[tuple[str, str], dict[str, Any]]]] = {}
    for group_name, rule in rules:
        levels.setdefault(level[rule["record"]], []).append((group_name, rule))
    return dict(sorted(levels.items()))


def backfill_rules(
    prometheus: Prometheus,
    scenario: generate.Scenario,
    work_dir: Path,
    intervals: dict[str, str],
    only: set[str] | None = None,
) -> list[dict[str, Any]]:
    """Backfill the recording rules level by level, restarting Prometheus so it reads the previous level's blocks.

    `only` limits the backfill to the rules recorded under these names. Their inputs must already be in the TSDB.
    """
    report = []
    for level, rules in rule_levels(load_rule_groups()).items():
        if only is not None:
            rules = [(group_name, rule) for group_name, rule in rules if rule["record"] in only]
            if not rules:
                continue
        # Prometheus shifts a group's evaluation times by an offset hashed from the group and file
        # names, so every level keeps both names. A rule of level n then reads level n-1 series
        # recorded at its own evaluation time, as in one group of the running server.
        files: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for (file_name, group_name), rule in rules:
            files.setdefault(file_name, {}).setdefault(group_name, []).append(rule)
        rule_dir = work_dir / "backfill-rules"
        shutil.rmtree(rule_dir, ignore_errors=True)
        rule_dir.mkdir(parents=True)
        for file_name, grouped in files.items():
            document = {
                "groups": [
                    {"name": name, "interval": intervals.get(name, intervals["default"]), "rules": group_rules}
                    for name, group_rules in grouped.items()
                ]
            }
            (rule_dir / file_name).write_text(yaml.safe_dump(document, sort_keys=False))
        output_dir = work_dir / f"level-{level}-blocks"
        shutil.rmtree(output_dir, ignore_errors=True)

        began = time.monotonic()
        argv = [
            "promtool", "tsdb", "create-blocks-from", "--quiet", "rules",
            f"--url={prometheus.url}", f"--start={scenario.start}", f"--end={scenario.end}",
            f"--output-dir={output_dir}", *(str(rule_dir / name) for name in files),
        ]
        completed = subprocess.run(argv, capture_output=True, text=True)
        if completed.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{completed.stdout[-2000:]}{completed.stderr[-2000:]}")
        blocks = [path for path in output_dir.iterdir() if (path / "meta.json").exists()]
        seconds = round(time.monotonic() - began, 1)
        print(f"rule level {level}: {len(rules)} rules, {len(blocks)} blocks, {seconds}s", flush=True)
        report.append({"level": level, "rules": [rule["record"] for _, rule in rules], "blocks": len(blocks), "seconds": seconds})

        # Prometheus loads blocks that appear in its directory only at its next reload, so restart it.
        prometheus.stop()
        for block in blocks:
            shutil.move(str(block), prometheus.data_dir / block.name)
        prometheus.start()
    return report


def missing_records(prometheus: Prometheus) -> set[str]:
    """Return the names of the recording rules in `rules/` that have no series in the TSDB."""
    status, body = http_get(f"{prometheus.url}/api/v1/label/__name__/values", timeout=120.0)
    if status != 200:
        raise RuntimeError(f"GET {prometheus.url}/api/v1/label/__name__/values returned {status}: {body[:300]!r}")
    stored = set(json.loads(body)["data"])
    records = {rule["record"] for group in load_rule_groups() for rule in group["rules"] if "record" in rule}
    return records - stored


def backfill_missing(options: argparse.Namespace, report: dict[str, Any], scenario: generate.Scenario) -> None:
    """Backfill the recording rules that an earlier run's TSDB lacks, with that run's evaluation intervals.

    A rule whose expression changed but whose name did not keeps its old series; the rule checks
    then compare those series with the new expression.
    """
    data_dir, work_dir = options.out / "data", options.out / "work"
    work_dir.mkdir(parents=True, exist_ok=True)
    earlier = report.get("options", {})
    intervals = {
        "default": earlier.get("eval_interval", options.eval_interval),
        "magflow-api-slo-recording": earlier.get("slo_eval_interval", options.slo_eval_interval),
    }
    server = Prometheus(data_dir, work_dir, BACKFILL_QUERY_LIMITS)
    server.start()
    try:
        missing = missing_records(server)
        print(f"recording rules without series: {sorted(missing)}", flush=True)
        report["backfill_missing"] = backfill_rules(server, scenario, work_dir, intervals, only=missing) if missing else []
    finally:
        server.stop()
    report["tsdb"] = tsdb_size(data_dir)


def tsdb_size(data_dir: Path) -> dict[str, int]:
    """Return the bytes of the blocks in `data_dir` and their series count, from each block's meta.json."""
    total, series, blocks = 0, 0, 0
    for meta in data_dir.glob("*/meta.json"):
        blocks += 1
        series += json.loads(meta.read_text())["stats"]["numSeries"]
        total += sum(path.stat().st_size for path in meta.parent.rglob("*") if path.is_file())
    return {"bytes": total, "block_series": series, "blocks": blocks}


# --- Queries --------------------------------------------------------------------------------------


def grafana_step(range_seconds: int, max_data_points: int = MAX_DATA_POINTS) -> int:
    """Return the step Grafana picks for a range: range / max data points, rounded as Grafana rounds, at least 15 s."""
    interval = range_seconds / max_data_points
    for upper, step in GRAFANA_ROUNDING:
        if interval < upper:
            return max(step, MIN_STEP)
    raise ValueError(f"range of {range_seconds}s is longer than the ranges the benchmark supports (up to 7d)")


def substitute(expr: str, range_name: str) -> str:
    """Replace Grafana's variables as the dashboard's "All" selection and the given time range would."""
    for variable, value in (("$__rate_interval", "1m"), ("$__interval", "1m"), ("$__range", range_name)):
        expr = expr.replace(variable, value)
    return expr.replace("$instance", ".*").replace("$environment", ".*")


def dashboard_panels(dashboard: dict[str, Any]) -> list[tuple[dict[str, Any], bool]]:
    """Return every panel with a query and whether it sits in a collapsed row, whose panels are nested in the row."""
    panels = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            panels += [(nested, bool(panel.get("collapsed"))) for nested in panel.get("panels") or []]
        else:
            panels.append((panel, False))
    return panels


def dashboard_cases() -> list[QueryCase]:
    """Return one case per dashboard target, paired with its raw-series or recorded form from `components.signals`."""
    queries = panel_queries(stack_file_settings("dev"))
    raw_forms = {
        queries.request_rate_by_endpoint: queries.raw_request_rate_by_endpoint,
        queries.request_rate_by_endpoint_method: queries.raw_request_rate_by_endpoint_method,
        queries.latency_p95_by_endpoint: queries.raw_latency_p95_by_endpoint,
        queries.latency_p99_by_endpoint: queries.raw_latency_p99_by_endpoint,
        queries.error_ratio: queries.raw_error_ratio,
        queries.availability_ratio: queries.raw_availability_ratio,
    }
    # The drill-down latency panels read raw buckets for their exemplars, so their counterpart is the recorded form.
    recorded_forms = {raw: recorded for recorded, raw in raw_forms.items() if "bucket" in raw}
    dashboard = json.loads(DASHBOARD.read_text())
    cases = []
    for panel, drill_down in dashboard_panels(dashboard):
        for target in panel.get("targets", []):
            name = f"{panel['title']} ({target['refId']})" if len(panel["targets"]) > 1 else panel["title"]
            expr = target["expr"]
            case = QueryCase(
                name,
                "panel",
                expr,
                instant=bool(target.get("instant")),
                max_data_points=int(panel.get("maxDataPoints") or MAX_DATA_POINTS),
                drill_down=drill_down,
            )
            if expr in recorded_forms:
                case.raw_expr, case.reads_raw = recorded_forms[expr], True
            else:
                case.raw_expr, case.reads_raw = raw_forms.get(expr), ":" not in expr
            cases.append(case)
    return cases


def alert_cases() -> list[QueryCase]:
    cases = []
    for group in load_rule_groups():
        for rule in group["rules"]:
            if "alert" in rule:
                label = rule.get("labels", {}).get("severity", "")
                cases.append(QueryCase(f"{rule['alert']} ({label})", "alert", rule["expr"], reads_raw=":" not in rule["expr"]))
                # Data shorter than a week gives `offset 1w` nothing to read, which would hide the cost
                # of the raw selector, so such alerts are also timed with an offset inside the data.
                if "offset 1w" in rule["expr"]:
                    shifted = rule["expr"].replace("offset 1w", "offset 1h")
                    cases.append(QueryCase(f"{rule['alert']} ({label}), offset 1h in place of 1w", "alert", shifted))
    return cases


def time_query(prometheus: Prometheus, expr: str, start: int, end: int, step: int | None, runs: int) -> Timing:
    durations, evaluations = [], []
    timing = Timing()
    for _ in range(runs):
        seconds, document = prometheus.query(expr, start, end, step)
        if document.get("status") != "success":
            timing.error = f"{document.get('errorType')}: {document.get('error')}"
            timing.median_ms = round(seconds * 1000, 1)
            timing.runs = 1
            return timing
        durations.append(seconds)
        evaluations.append(document["data"].get("stats", {}).get("timings", {}).get("evalTotalTime", 0.0))
        timing.samples = document["data"].get("stats", {}).get("samples", {}).get("totalQueryableSamples")
        timing.series = len(document["data"]["result"]) if isinstance(document["data"]["result"], list) else 1
        if seconds > SLOW_QUERY_SECONDS:
            break
    timing.median_ms = round(statistics.median(durations) * 1000, 1)
    timing.min_ms = round(min(durations) * 1000, 1)
    timing.eval_ms = round(statistics.median(evaluations) * 1000, 1)
    timing.runs = len(durations)
    return timing


INSTANT = "instant"


def run_queries(prometheus: Prometheus, cases: list[QueryCase], end: int, ranges: list[str], runs: int) -> None:
    """Time panels as range queries over each range, and alerts once as instant queries at `end`."""
    plan = [(range_name, case) for range_name in ranges for case in cases if case.kind == "panel"]
    plan += [(INSTANT, case) for case in cases if case.kind == "alert"]
    for range_name, case in plan:
        range_seconds = RANGES.get(range_name, 0)
        step = None if case.kind == "alert" or case.instant else grafana_step(range_seconds, case.max_data_points)
        expr_range = range_name if case.kind == "panel" else "1h"
        results = {"query": time_query(prometheus, substitute(case.expr, expr_range), end - range_seconds, end, step, runs)}
        if case.raw_expr:
            raw_expr = substitute(case.raw_expr, expr_range)
            results["raw"] = time_query(prometheus, raw_expr, end - range_seconds, end, step, runs)
        case.results[range_name] = results
        print(f"{range_name} {case.name}: {results['query'].median_ms} ms", flush=True)


# --- Checks ---------------------------------------------------------------------------------------


def _vector(document: dict, added: dict[str, str] | None = None) -> dict[tuple, float]:
    if document.get("status") != "success":
        raise RuntimeError(f"query failed: {document.get('error')}")
    result = document["data"]["result"]
    return {
        tuple(sorted({**{k: v for k, v in item["metric"].items() if k != "__name__"}, **(added or {})}.items())): float(
            item["value"][1]
        )
        for item in result
    }


def _same(left: float, right: float, abs_tol: float) -> bool:
    if math.isnan(left) or math.isnan(right):
        return math.isnan(left) and math.isnan(right)
    return math.isclose(left, right, rel_tol=TOLERANCE, abs_tol=abs_tol)


def compare(
    prometheus: Prometheus, left: str, right: str, moment: float, abs_tol: float = 1e-12, added: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run two instant queries at `moment` and compare their series by label set.

    `added` are the labels that a recording rule sets on its output, which `right` lacks.
    """
    recorded = _vector(prometheus.query(left, moment, moment, None)[1])
    raw = _vector(prometheus.query(right, moment, moment, None)[1], added or {})
    mismatches = [
        {"labels": dict(labels), "recorded": recorded.get(labels), "raw": raw.get(labels)}
        for labels in sorted(set(recorded) | set(raw))
        if labels not in recorded or labels not in raw or not _same(recorded[labels], raw[labels], abs_tol)
    ]
    return {"series": len(recorded), "raw_series": len(raw), "mismatches": mismatches[:5], "mismatch_count": len(mismatches)}


def evaluation_time(prometheus: Prometheus, selector: str, moment: int) -> float:
    """Return the time of the last sample of `selector` at or before `moment`.

    The backfill evaluates each rule group at Prometheus' own times, which are shifted by an
    offset derived from the group, so a comparison must use a time at which the rule ran.
    """
    result = _vector(prometheus.query(f"max(timestamp({selector}))", moment, moment, None)[1])
    if not result:
        raise RuntimeError(f"no samples of {selector} at or before {moment}: the backfill did not record it")
    return next(iter(result.values()))


def check_rules(prometheus: Prometheus, moments: list[int]) -> list[dict[str, Any]]:
    """Compare each recording rule's stored series with its expression evaluated at the same instants."""
    checks = []
    for group in load_rule_groups():
        for rule in group["rules"]:
            if "record" not in rule:
                continue
            matchers = ", ".join(f'{key}="{value}"' for key, value in rule.get("labels", {}).items())
            stored = f"{rule['record']}{{{matchers}}}" if matchers else rule["record"]
            for moment in moments:
                at = evaluation_time(prometheus, stored, moment)
                checks.append({"rule": stored, "time": at, "tolerance": TOLERANCE, **compare(prometheus, stored, rule["expr"], at, added=rule.get("labels"))})
    return checks


def check_panels(prometheus: Prometheus, cases: list[QueryCase], moments: list[int]) -> list[dict[str, Any]]:
    """Compare each panel that has a raw or recorded counterpart with it at the given instants.

    The availability panel sums recorded 5-minute rates over the range, while its raw form divides
    two `increase()` results, so the two agree only within RANGE_RATIO_TOLERANCE.
    """
    checks = []
    for case in cases:
        if not case.raw_expr:
            continue
        recorded_expr = case.raw_expr if case.reads_raw else case.expr
        recorded_name = re.search(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", recorded_expr).group(0)
        abs_tol = RANGE_RATIO_TOLERANCE if "sum_over_time" in recorded_expr else 1e-12
        for moment in moments:
            at = evaluation_time(prometheus, recorded_name, moment)
            result = compare(prometheus, substitute(case.expr, "1h"), substitute(case.raw_expr, "1h"), at, abs_tol)
            tolerance = f"{abs_tol:g} absolute" if abs_tol > 1e-12 else f"{TOLERANCE:g} relative"
            checks.append({"panel": case.name, "time": at, "tolerance": tolerance, **result})
    return checks


# --- Report ---------------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
        "unknown",
    )
    memory = subprocess.run(["free", "-h"], capture_output=True, text=True).stdout
    return {"nproc": str(os.cpu_count()), "cpu": cpu, "free": memory.strip()}


def _cell(timing: Timing | None) -> tuple[str, str, str, str, str]:
    if timing is None:
        return "", "", "", "", ""
    if timing.error:
        verdict = "refused" if "too many samples" in timing.error else "failed"
        return f"{verdict} after {timing.median_ms:g}", "", "", "", str(timing.runs)
    samples = f"{timing.samples:,}" if timing.samples is not None else ""
    evaluation = f"{timing.eval_ms:g}" if timing.eval_ms is not None else ""
    return f"{timing.median_ms:g}", f"{timing.min_ms:g}", evaluation, samples, str(timing.runs)


def _rows(cases: list[QueryCase], range_name: str) -> list[str]:
    lines = [
        "| Query | Reads | Median ms | Min ms | Eval ms | Samples | Runs | Other form | Median ms | Samples |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for case in cases:
        if range_name not in case.results:
            continue
        results = case.results[range_name]
        median, minimum, evaluation, samples, runs = _cell(results.get("query"))
        other_median, _, _, other_samples, _ = _cell(results.get("raw"))
        other = ""
        if case.raw_expr:
            other = "recorded" if case.reads_raw else "raw"
        reads = "raw" if case.reads_raw else "recorded"
        if case.instant:
            reads += ", instant"
        if case.drill_down:
            reads += ", drill-down"
        lines.append(
            f"| {case.name} | {reads} | {median} | {minimum} | {evaluation} | {samples} | {runs} | {other} | {other_median} | {other_samples} |"
        )
    return lines


def markdown_table(cases: list[QueryCase], ranges: list[str]) -> str:
    """Return one table per range for the panels and one for the alerts, in milliseconds at the client."""
    lines = []
    for range_name in ranges:
        lines += [f"#### Dashboard over {range_name} (step {grafana_step(RANGES[range_name])} s)", ""]
        lines += _rows(cases, range_name) + [""]
    lines += ["#### Alert expressions (instant queries at the end of the data)", ""]
    lines += _rows(cases, INSTANT) + [""]
    return "\n".join(lines)


# --- Main -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__.split("\n\n")[0],
        epilog="The defaults are the reference size, which takes about 25 minutes on 2 cores. "
        "A quick run: python -m bench --instances 1 --endpoints 5 --hours 2 --runs 1",
    )
    parser.add_argument("--instances", type=int, default=4, help="API instances (default: 4)")
    parser.add_argument("--endpoints", type=int, default=50, help="endpoints per instance (default: 50)")
    parser.add_argument("--hours", type=int, default=24, help="hours of data, ending at the last full two hours (default: 24)")
    parser.add_argument("--scrape-interval", type=int, default=15, help="seconds between generated samples (default: 15)")
    parser.add_argument("--eval-interval", default="60s", help="backfill step of the API recording rules (default: 60s)")
    parser.add_argument("--slo-eval-interval", default="5m", help="backfill step of the SLO recording rules (default: 5m)")
    parser.add_argument("--ranges", default="", help="comma-separated query ranges out of 1h,24h,7d (default: those within --hours)")
    parser.add_argument("--runs", type=int, default=5, help="runs of each query (default: 5)")
    parser.add_argument("--parallel", type=int, default=2, help="promtool processes that ingest at once (default: 2)")
    parser.add_argument(
        "--no-compaction-wait",
        action="store_true",
        help="time the queries at once instead of after Prometheus has compacted the backfilled blocks",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="time the queries again over the TSDB and bench.json of an earlier run in --out, without generating data",
    )
    parser.add_argument(
        "--backfill-missing",
        action="store_true",
        help="with --reuse: first backfill the recording rules of rules/ that the TSDB has no series of",
    )
    parser.add_argument("--out", type=Path, default=REPOSITORY_ROOT / "build" / "bench", help="output directory (default: build/bench)")
    options = parser.parse_args(argv)
    if options.backfill_missing and not options.reuse:
        parser.error("--backfill-missing needs --reuse: a run without --reuse backfills every recording rule")

    for name in ("instances", "endpoints", "hours", "runs", "parallel", "scrape_interval"):
        if getattr(options, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(options, name)}")

    if options.ranges:
        options.range_list = options.ranges.split(",")
        unknown = [name for name in options.range_list if name not in RANGES]
        if unknown:
            parser.error(f"unknown range(s) {unknown} in --ranges: use 1h, 24h or 7d")
    else:
        options.range_list = [name for name, seconds in RANGES.items() if seconds <= options.hours * 3600]
    return options


def run(options: argparse.Namespace) -> dict[str, Any]:
    """Run the whole benchmark and return the report that `main` writes as JSON."""
    out: Path = options.out
    data_dir, work_dir = out / "data", out / "work"
    began = time.monotonic()
    if options.reuse:
        report, scenario = reuse_report(out, options)
        if options.backfill_missing:
            backfill_missing(options, report, scenario)
    else:
        report, scenario = build_tsdb(options, data_dir, work_dir)
    end = scenario.end

    # The benchmark server has Prometheus' default query limits: 50,000,000 samples and a 2 min timeout.
    server = Prometheus(data_dir, work_dir)
    server.start()
    try:
        if not options.no_compaction_wait:
            server.wait_for_compaction()
        report["compacted_tsdb"] = tsdb_size(data_dir)
        cases = dashboard_cases() + alert_cases()
        run_queries(server, cases, end, options.range_list, options.runs)

        # One instant in the fault storm and one near the end, where the restart's reset is in the past.
        moments = sorted({scenario.storm_start + 600, end - 300})
        report["rule_checks"] = check_rules(server, moments)
        report["panel_checks"] = check_panels(server, cases, moments)
    finally:
        server.stop()

    report["seconds" if not options.reuse else "query_seconds"] = round(time.monotonic() - began, 1)
    report["cases"] = [
        {**{k: v for k, v in asdict(case).items() if k != "results"},
         "results": {r: {k: asdict(t) for k, t in res.items()} for r, res in case.results.items()}}
        for case in cases
    ]
    report["table"] = markdown_table(cases, options.range_list)
    return report


def build_tsdb(options: argparse.Namespace, data_dir: Path, work_dir: Path) -> tuple[dict[str, Any], generate.Scenario]:
    """Generate the data, ingest it and backfill the recording rules; return the report so far and the scenario."""
    shutil.rmtree(data_dir, ignore_errors=True)
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True, exist_ok=True)

    generate.SCRAPE_INTERVAL = options.scrape_interval
    end = int(time.time()) // generate.CHUNK_SECONDS * generate.CHUNK_SECONDS
    scenario = generate.Scenario(options.instances, options.endpoints, end - options.hours * 3600, end)
    report: dict[str, Any] = {"options": {k: str(v) for k, v in vars(options).items()}, "machine": machine()}
    report["scenario"] = {
        **asdict(scenario),
        "storm_start": scenario.storm_start,
        "storm_end": scenario.storm_end,
        "storm_endpoints": scenario.storm_endpoints,
        "restart_time": scenario.restart_time,
    }

    report["ingest"] = ingest(scenario, work_dir, data_dir, options.parallel)
    report["raw_tsdb"] = tsdb_size(data_dir)

    backfill_server = Prometheus(data_dir, work_dir, BACKFILL_QUERY_LIMITS)
    backfill_server.start()
    try:
        intervals = {"default": options.eval_interval, "magflow-api-slo-recording": options.slo_eval_interval}
        report["backfill"] = backfill_rules(backfill_server, scenario, work_dir, intervals)
    finally:
        backfill_server.stop()
    report["tsdb"] = tsdb_size(data_dir)
    return report, scenario


def reuse_report(out: Path, options: argparse.Namespace) -> tuple[dict[str, Any], generate.Scenario]:
    """Return the report of the earlier run in `out`, without its timings, and its scenario."""
    path = out / "bench.json"
    if not path.exists() or not (out / "data").is_dir():
        raise FileNotFoundError(f"{path} or {out / 'data'} not found: run the benchmark without --reuse first")
    report = json.loads(path.read_text())
    fields = {name: report["scenario"][name] for name in ("instances", "endpoints", "start", "end", "seed")}
    if not options.ranges:
        span = fields["end"] - fields["start"]
        options.range_list = [name for name, seconds in RANGES.items() if seconds <= span]
    report["reuse_options"] = {"runs": options.runs, "ranges": options.range_list, "compaction_wait": not options.no_compaction_wait}
    for stale in ("cases", "table", "rule_checks", "panel_checks"):
        report.pop(stale, None)
    return report, generate.Scenario(**fields)


def summary(report: dict[str, Any]) -> str:
    days = int(report["scenario"]["end"] - report["scenario"]["start"]) / 86400
    raw = report["raw_tsdb"]
    series = report["ingest"]["series"]
    mismatched_rules = [check for check in report["rule_checks"] if check["mismatch_count"]]
    mismatched_panels = [check for check in report["panel_checks"] if check["mismatch_count"]]
    lines = [
        "# Benchmark of the MagFlow API dashboard and alerts",
        "",
        f"Command options: {report['options']}",
        "",
        f"Machine: {report['machine']['nproc']} CPUs, {report['machine']['cpu']}",
        "",
        "```\n" + report["machine"]["free"] + "\n```",
        "",
        f"Data: {series:,} scraped series, {report['ingest']['samples']:,} samples over {days:g} days, "
        f"ingested in {report['ingest']['seconds']} s. Raw blocks: {raw['bytes']:,} bytes, "
        f"{raw['bytes'] / series / days:.0f} bytes per series per day.",
        f"Compacted TSDB with the recording rules: {report['compacted_tsdb']['bytes']:,} bytes in "
        f"{report['compacted_tsdb']['blocks']} blocks. Whole run: {report['seconds']} s.",
        *(
            [f"Query timings from a second pass over the same TSDB: {report['reuse_options']}", ""]
            if "reuse_options" in report
            else [""]
        ),
        f"Recording rules that differ from their expression at the same instant (tolerance {TOLERANCE:g}): "
        f"{len(mismatched_rules)} of {len(report['rule_checks'])} checks.",
        f"Panels whose recorded and raw forms differ: {len(mismatched_panels)} of {len(report['panel_checks'])} checks.",
        "",
        report["table"],
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    try:
        report = run(options)
    except (RuntimeError, TimeoutError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "bench.json").write_text(json.dumps(report, indent=2))
    (options.out / "bench.md").write_text(summary(report) + "\n")
    print(options.out / "bench.md")
    return 0
