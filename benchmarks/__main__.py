"""The benchmark suite, one command (`make bench`):

    python -m benchmarks [--quick]

Runs each benchmark alone, one after the other, each in a process of its own (the machine
should be otherwise idle): the compressor against sharp and simplejpeg
(`benchmarks.compressor`), WebP, AVIF and a 1200 px box against sharp and Pillow's plain
resize (`benchmarks.formats`), a re-submitted job's reused outputs against the first
run (`benchmarks.reuse`), the whole pipeline against the bare compressor
(`benchmarks.pipeline`), a small job of one tenant beside another tenant's batch
(`benchmarks.fairness`), each Lambda function's unzipped size and cold-start imports
(`benchmarks.cold_start`), and a job of 1,000, 10,000 and 100,000 rows (`benchmarks.scale`;
the largest with `ROWS_PER_CHUNK=50`, see docs/performance.md). Their output is shown as it
comes; at the end every target is listed again with its verdict, the scale ones computed
from the sizes measured. `--quick` runs the quick variants and stops the scale benchmark at 10,000
rows. How long it takes, and the figures of past runs: docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FLAT_RSS = 1.25  # peak RSS at the largest size, at most this times the smallest
STATUS_PAGE = 2.0  # median status page latency at the largest size, at most this times
VERDICT = re.compile(r"\b(PASS|FAIL|MISS)\b|^\s*RATIO ")  # compressor, formats, scale; pipeline
FUNCTIONS = ("ingest", "worker", "finalize")


def run(module: str, args: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
    """Run `python -m module args`, echoing its output; returns its lines."""
    command = [sys.executable, "-m", module, *args]
    print(f"\n$ {' '.join(['python', '-m', module, *args])}", flush=True)
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
        command,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith('{"_aws"'):  # the functions' metric lines (EMF)
            continue
        print(line, end="", flush=True)
        lines.append(line.rstrip("\n"))
    if process.wait() != 0:
        raise RuntimeError(f"{module} failed (exit {process.returncode})")
    return lines


def verdicts(lines: Sequence[str]) -> list[str]:
    """The target lines of a benchmark's output."""
    return [line.strip() for line in lines if VERDICT.search(line)]


def _median_status(result: Mapping[str, Any]) -> float:
    keys = ("status_start", "status_middle", "status_end")
    return float(statistics.median(float(ms) for key in keys for ms in result[key]))


def scale_verdicts(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """Memory flat and status pages costing the page: the largest size against the smallest."""
    if len(results) < 2:
        return ["scale: one size only, nothing to compare"]
    by_rows = sorted(results, key=lambda r: int(r["rows"]))
    small, large = by_rows[0], by_rows[-1]
    span = f"{int(small['rows']):,} -> {int(large['rows']):,} rows"
    out = []
    for function in FUNCTIONS:
        before, after = small[function]["rss_peak"], large[function]["rss_peak"]
        growth = after / before
        verdict = "PASS" if growth <= FLAT_RSS else "MISS"
        out.append(
            f"{function} peak RSS {before / 2**20:.0f} -> {after / 2**20:.0f} MB ({span}): "
            f"{growth:.2f}x <= {FLAT_RSS}x  {verdict}"
        )
    before, after = _median_status(small), _median_status(large)
    growth = after / before
    verdict = "PASS" if growth <= STATUS_PAGE else "MISS"
    out.append(
        f"status page median {before * 1000:.0f} -> {after * 1000:.0f} ms ({span}): "
        f"{growth:.2f}x <= {STATUS_PAGE}x  {verdict}"
    )
    return out


def scale(rows: str, env: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "scale.json"
        run("benchmarks.scale", ["--rows", rows, "--json", str(path)], env)
        results: list[dict[str, Any]] = json.loads(path.read_text())
        return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="quick variants, scale to 10,000")
    args = parser.parse_args(argv)
    quick = ["--quick"] if args.quick else []
    started = time.monotonic()
    summary = verdicts(run("benchmarks.compressor", quick))
    summary += verdicts(run("benchmarks.formats", quick))
    summary += verdicts(run("benchmarks.pipeline", quick))
    summary += verdicts(run("benchmarks.reuse", quick))
    summary += verdicts(run("benchmarks.fairness", quick))
    summary += verdicts(run("benchmarks.cold_start", quick))
    results = scale("1000,10000")
    if not args.quick:
        results += scale("100000", {"ROWS_PER_CHUNK": "50"})
    summary += scale_verdicts(results)
    print(f"\nthe suite's targets ({time.monotonic() - started:.0f} s in all):")
    for line in summary:
        print(f"  {line}")
    missed = sum(1 for line in summary if "MISS" in line or "FAIL" in line)
    print("  all met" if not missed else f"  {missed} missed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
