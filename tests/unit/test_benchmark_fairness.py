"""The fairness benchmark's report: beta's time alone and beside alpha's batch, how far the
batch had got, the status reads' percentiles, and its two targets' verdicts; its `--served`
stack."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from chalicelib import observability

from benchmarks import __main__ as suite
from benchmarks import fairness
from benchmarks._api import auth
from benchmarks.fairness import (
    SLOWER_BY,
    STATUS_P99_MS,
    Busy,
    functions_output,
    percentile,
    report,
)


def targets(lines: list[str]) -> list[str]:
    return lines[lines.index("targets:") + 1 :]


def test_the_report_gives_beta_alone_and_beside_the_batch_and_the_status_percentiles() -> None:
    reads = [10.0] * 98 + [40.0, 900.0]  # p99 is the 99th of 100: 40 ms
    busy = [Busy(0.9, 0.08, 30.0, reads), Busy(1.3, 0.12, 31.0, ())]
    lines = report([0.3, 0.25, 0.35], busy, 10, 100)
    assert lines[0].startswith("tenant alpha: 10 jobs of 100 rows; then tenant beta: 5 rows")
    assert "beta alone:" in lines[1] and "0.30 s (median of 3)" in lines[1]
    assert "1.10 s (3.7x alone; runs: 0.90, 1.30)" in lines[2]
    assert "8% done, 12% done; the batch took 30.0, 31.0 s" in lines[3]
    assert "p50 10.0 ms, p99 40.0 ms (100 reads)" in lines[4]
    slower, status = targets(lines)
    assert slower.endswith("PASS") and f"+0.80 s against alone (within {SLOWER_BY:g} s)" in slower
    assert status.endswith("PASS") and f"40.0 ms <= {STATUS_P99_MS:g} ms" in status
    assert suite.verdicts(lines) == [line.strip() for line in targets(lines)]


def test_a_small_job_held_up_or_slow_status_reads_miss() -> None:
    busy = [Busy(13.6, 1.0, 14.0, [30.0] * 50 + [80.0] * 50)]
    slower, status = targets(report([0.27], busy, 10, 100))
    assert slower.endswith("MISS") and "+13.33 s" in slower
    assert status.endswith("MISS") and "80.0 ms" in status


def test_percentiles_are_nearest_rank_and_nothing_measured_is_an_error() -> None:
    assert percentile([5.0, 1.0, 3.0], 0.5) == 3.0
    assert percentile([1.0, 2.0], 0.99) == 2.0
    with pytest.raises(ValueError):
        report([], [Busy(1.0, 0.1, 2.0)], 1, 1)


def test_the_functions_metric_and_log_lines_go_to_their_file_not_the_report(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An EMF line and a JSON log line of a function in this process, and a line a worker
    process writes to its inherited stderr, all land in the file; the report (stdout) and
    the terminal's stderr get none; afterwards stderr is the terminal's again."""
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)  # as in the emulator
    log = tmp_path / "functions.log"
    with functions_output(log):
        print("report line", flush=True)
        buffer = observability.MetricsBuffer()  # the functions' default sink
        buffer.add("ImagesProcessed", 3)
        assert buffer.flush() == 1
        observability.JsonLineHandler().emit(
            logging.LogRecord("chalicelib", logging.INFO, __file__, 1, "a log line", (), None)
        )
        subprocess.run(
            [sys.executable, "-c", "import sys; sys.stderr.write('from a worker process\\n')"],
            check=True,
        )
    os.write(2, b"after\n")
    out, err = capfd.readouterr()
    written = log.read_text(encoding="utf-8").splitlines()
    assert out == "report line\n"
    assert err == "after\n"
    assert written[0].startswith('{"_aws"') and '"ImagesProcessed":3' in written[0]
    assert '"message": "a log line"' in written[1]
    assert written[2] == "from a worker process"


def test_served_runs_serve_with_our_keys_and_stops_it() -> None:
    with fairness.served(("alpha", "beta")) as stack:
        keys = {t.name: t.api_key for t in stack.tenants}
        assert set(keys) == {"alpha", "beta"}
        listed = requests.get(f"{stack.api_url}/api/jobs", headers=auth(keys["beta"]), timeout=30)
        assert listed.status_code == 200
        refused = requests.get(f"{stack.api_url}/api/jobs", headers=auth("nope"), timeout=30)
        assert refused.status_code == 401
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{stack.api_url}/api/health", timeout=5)
