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


def test_benchmark_other_forms_succeed(report):
    pairs = [case for case in panels(report) if case["raw_expr"]]
    assert pairs, "no panel has a raw or recorded counterpart"
    for case in pairs:
        timing = case["results"]["1h"]["raw"]
        assert timing["error"] is None, f"other form of {case['name']!r} failed: {timing['error']}"


def test_benchmark_covers_drill_down(report):
    # The drill-down row is collapsed, so its panels sit inside the row in the dashboard JSON.
    drill_down = [case for case in panels(report) if case["drill_down"]]
    assert drill_down, "the benchmark timed no panel of the collapsed drill-down row"
    assert any(case["reads_raw"] for case in drill_down), "no raw drill-down panel was timed"


def test_benchmark_default_panels_read_recorded(report):
    # Outside the drill-down row, only the per-instance `up` and `probe_success` series may be read raw.
    default = [case for case in panels(report) if not case["drill_down"]]
    assert default
    for case in default:
        if case["reads_raw"]:
            assert "up{" in case["expr"] or "probe_success{" in case["expr"], f"panel {case['name']!r} reads raw series"


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
        # The drill-down latency panels read raw buckets, so their counterpart is the recorded form.
        recorded, raw = (results["raw"], results["query"]) if case["reads_raw"] else (results["query"], results["raw"])
        assert raw["error"] is None, f"raw form of {case['name']!r} failed: {raw['error']}"
        assert recorded["samples"] < raw["samples"], (
            f"panel {case['name']!r}: recorded form read {recorded['samples']} samples, raw form {raw['samples']}"
        )
