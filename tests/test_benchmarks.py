"""`make bench` keeps working: each benchmark that needs nothing beyond the dev install runs small.

The figures themselves are not checked (they belong to docs/performance.md); what is checked is
that a change to the schema or the API has not broken a benchmark, as migration 14's never-twice
trigger once broke bench_dashboard's synthetic log without any test noticing.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("script, args, says", [
    ("bench_dashboard.py", ["--rows", "3000", "--recipients", "400", "--days", "40", "--repeat", "1"],
     "first view, all its queries"),
    ("bench_import.py", ["--rows", "2000"], "ours / baseline:"),
    ("bench_claim.py", ["--recipients", "400", "--rounds", "1", "--per-round", "5"], "claim with the company check"),
    ("bench_run.py", ["--messages", "20"], "ratio (ours / bare):"),
], ids=["dashboard", "import", "claim", "run"])
def test_a_benchmark_runs_to_its_figures(script, args, says, tmp_path):
    assert says in run_benchmark(script, args, tmp_path)


def run_benchmark(script: str, args: list[str], folder: Path) -> str:
    """What the benchmark prints, once it has exited 0."""
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], cwd=folder, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("chromium"), reason="no chromium on PATH (Debian: apt-get install chromium)")
def test_the_dashboards_render_benchmark_runs_to_its_figures(tmp_path):
    pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")
    printed = run_benchmark("bench_dashboard_render.py", ["--rows", "2000", "--recipients", "300", "--replies", "20",
                                                          "--rounds", "1"], tmp_path)
    assert "ours - floor:" in printed
    assert all(f"\n  {tab} " in printed for tab in ("Recipients", "Replies", "Deliverability", "Admin", "Campaigns"))
