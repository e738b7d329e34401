"""Small run of the query benchmark (`python -m bench`) against Debian's Prometheus on 127.0.0.1.

One instance, five endpoints and two hours of data go through the same steps as the full
benchmark: OpenMetrics backfill, recording-rule backfill, then every dashboard query and alert
expression at Prometheus' default query limits. The run skips the wait for compaction, so it
checks results and samples read, not latency.
"""

import shutil
from pathlib import Path
from typing import Any

import pytest

from bench import run as bench

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Return the report of one small benchmark run. `bench.run` stops each Prometheus it starts by its PID."""
    if shutil.which("prometheus") is None or shutil.which("promtool") is None:
        pytest.skip("Debian's prometheus package (prometheus and promtool) is not installed: run scripts/test.sh")
    out: Path = tmp_path_factory.mktemp("bench")
    options = bench.parse_args(
        ["--instances", "1", "--endpoints", "5", "--hours", "2", "--ranges", "1h", "--no-compaction-wait", "--out", str(out)]
    )
    return bench.run(options)


def panels(report: dict[str, Any]) -> list[dict[str, Any]]:
    cases = [case for case in report["cases"] if case["kind"] == "panel"]
    assert cases, "the benchmark timed no dashboard panel"
    return cases


def test_benchmark_panels_succeed(report):
    for case in panels(report):
        timing = case["results"]["1h"]["query"]
        assert timing["error"] is None, f"panel {case['name']!r} failed: {timing['error']}"


def test_benchmark_panels_return_series(report):
    # The generated data contains every series that a panel reads, so an empty result is a broken query.
    for case in panels(report):
        timing = case["results"]["1h"]["query"]
        assert timing["series"], f"panel {case['name']!r} returned no series: {case['expr']}"


def test_benchmark_alerts_succeed(report):
    alerts = [case for case in report["cases"] if case["kind"] == "alert"]
    assert alerts, "the benchmark timed no alert expression"
    for case in alerts:
        timing = case["results"]["instant"]["query"]
        assert timing["error"] is None, f"alert {case['name']!r} failed: {timing['error']}"


def test_benchmark_rules_match_expressions(report):
    checks = report["rule_checks"]
    assert checks, "the benchmark checked no recording rule"
    for check in checks:
        assert check["series"], f"recording rule {check['rule']} has no series at {check['time']}"
        assert check["mismatch_count"] == 0, f"recording rule {check['rule']} differs from its expression: {check['mismatches']}"


def test_benchmark_recorded_panels_match_raw(report):
    checks = report["panel_checks"]
    assert checks, "the benchmark compared no panel with its raw form"
    for check in checks:
        assert check["series"], f"panel {check['panel']} has no series at {check['time']}"
        assert check["mismatch_count"] == 0, f"panel {check['panel']} differs from its raw form: {check['mismatches']}"


def test_benchmark_recorded_reads_fewer_samples(report):
    pairs = [case for case in panels(report) if case["raw_expr"]]
    assert pairs, "no panel has a raw or recorded counterpart"
    for case in pairs:
        results = case["results"]["1h"]
        # The latency panels read raw buckets, so their counterpart is the recorded form.
        recorded, raw = (results["raw"], results["query"]) if case["reads_raw"] else (results["query"], results["raw"])
        assert raw["error"] is None, f"raw form of {case['name']!r} failed: {raw['error']}"
        assert recorded["samples"] < raw["samples"], (
            f"panel {case['name']!r}: recorded form read {recorded['samples']} samples, raw form {raw['samples']}"
        )
