"""Cold starts per function: unzipped size and the imports before the first answer.

    python -m benchmarks.cold_start [--quick] [--runs N] [--build-dir .aws-sam/build]
                                    [--function NAME ...] [--json PATH]

For every function of template.yaml:

- **size**: its unzipped size as deployed, code and layers, from the arm64 `sam build` in
  .aws-sam/build (`make deploy-check` makes it); without one, the line says so and gives the
  size of the bundle assembled here instead;
- **cold start**: a fresh interpreter (`python -I -S -B`: no site-packages, no byte code
  written or found) that sees only that function's bundle imports its handler module, then does
  what its first invocation imports and builds: the wiring (`bootstrap.dependencies()`, with a
  loopback MongoDB address: boto3 clients, pymongo, the adapters), the Secrets Manager client it
  reads the database URI with, and for the worker the imaging module. Median of several runs,
  each in a new process; the interpreter's own start (the same for every bundle, and Lambda's
  runtime pays it anyway) is left out. Lambda deploys no byte code either: every module is
  compiled when it is first imported, there as here.

The bundles timed are x86_64 (this machine cannot import the arm64 wheels Lambda gets),
assembled WITHOUT network from this environment's installed distributions: each function's
requirement closure as functions/Makefile names it (infra/bundles.py) plus its code, in a
temporary folder. The targets (issue 17) are printed as ratios with a verdict: the API at most
80 MiB with boto3 bundled (45 MiB if it came from the runtime), the worker at most 130 MiB;
every function within its budget (infra/size_budget.py). The figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from infra import bundles, size_budget
from infra.cfn_yaml import load_template

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"
DEFAULT_RUNS = 7
QUICK_RUNS = 3
# issue 17's targets in MiB (boto3 bundled: the API's is 80, it would be 45 from the runtime)
TARGETS_MIB = {"ApiFunction": 80.0, "WorkerFunction": 130.0}
# what a function's first invocation imports beyond the wiring (the worker's first image)
FIRST_USE: Mapping[str, tuple[str, ...]] = {"WorkerFunction": ("chalicelib.imaging",)}
# the settings a first invocation builds its clients from; nothing leaves the machine
CHILD_ENV = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "cold-start-benchmark",
    "AWS_SECRET_ACCESS_KEY": "cold-start-benchmark",
    "AWS_EC2_METADATA_DISABLED": "true",
    "MONGO_URI": "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=1",
    "UPLOADS_BUCKET": "uploads",
    "OUTPUTS_BUCKET": "outputs",
    "INGEST_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/ingest",
    "ROWS_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/rows",
    "FINALIZE_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/finalize",
    "WEBHOOK_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/webhook",
    "EVENT_BUS_NAME": "jobs",
    "CDN_DISTRIBUTION_ID": "E2EXAMPLE",
    "PUBLIC_BASE_URL": "https://cdn.example.com",
}

# Runs in the fresh interpreter: argv[1] is JSON {"path": [...], "handler": "m.attr",
# "first_use": [...]}; prints one JSON line of seconds and the top-level modules loaded.
CHILD = """
import time
start = time.perf_counter()
import importlib, json, sys
args = json.loads(sys.argv[1])
sys.path[:0] = args["path"]
module, _, attr = args["handler"].rpartition(".")
getattr(importlib.import_module(module), attr)
imported = time.perf_counter()
for name in args["first_use"]:
    importlib.import_module(name)
from chalicelib import bootstrap
bootstrap.dependencies()
import boto3
boto3.session.Session().client("secretsmanager")
done = time.perf_counter()
top = sorted({name.partition(".")[0] for name in sys.modules})
print(json.dumps({"import": imported - start, "first": done - imported, "modules": top}))
"""


@dataclass(frozen=True)
class Timing:
    """Medians over runs, in seconds."""

    handler_import: float
    first_invocation: float
    runs: int
    modules: tuple[str, ...] = ()  # top-level modules loaded by the end

    @property
    def total(self) -> float:
        return self.handler_import + self.first_invocation


def time_imports(
    path: Sequence[Path], handler: str, first_use: Sequence[str] = (), runs: int = DEFAULT_RUNS
) -> Timing:
    """Median times of `runs` fresh interpreters that see only `path` (and the standard
    library) importing `handler`'s module and then the first invocation's imports."""
    payload = json.dumps(
        {"path": [str(p) for p in path], "handler": handler, "first_use": list(first_use)}
    )
    env = {"PATH": os.environ.get("PATH", ""), **CHILD_ENV}
    samples: list[dict[str, object]] = []
    for _ in range(runs):
        done = subprocess.run(  # noqa: S603 - our interpreter, our script
            [sys.executable, "-I", "-S", "-B", "-c", CHILD, payload],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-3:])
            raise RuntimeError(f"{handler} from {path[0]}: exit {done.returncode}\n{tail}")
        samples.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return Timing(
        handler_import=statistics.median(float(str(s["import"])) for s in samples),
        first_invocation=statistics.median(float(str(s["first"])) for s in samples),
        runs=runs,
        modules=tuple(str(m) for m in samples[-1]["modules"]),  # type: ignore[attr-defined]
    )


def handlers(template_path: Path = TEMPLATE) -> dict[str, str]:
    """Logical id -> Handler of every function in the template."""
    template = load_template(template_path)
    return {
        logical_id: str((resource.get("Properties") or {}).get("Handler"))
        for logical_id, resource in template["Resources"].items()
        if resource.get("Type") == "AWS::Serverless::Function"
    }


HEAVY = ("PIL", "numpy", "simplejpeg")  # what only the worker should load


@dataclass(frozen=True)
class Row:
    function: str
    arm64_mib: float | None  # None: no arm64 build
    local_mib: float  # the x86_64 bundle assembled here
    timing: Timing | None
    error: str = ""

    def heavy_loaded(self) -> list[str]:
        return [m for m in HEAVY if self.timing and m in self.timing.modules]


def measure(
    functions: Sequence[str],
    build_dir: Path,
    runs: int,
    workdir: Path,
    say: object = print,
) -> list[Row]:
    arm64: dict[str, float] = {}
    if (build_dir / "template.yaml").is_file():
        arm64 = {k: v.mib for k, v in size_budget.function_sizes(build_dir).items()}
    specs = bundles.read_makefile()
    entry = handlers()
    rows = []
    for function in functions:
        bundle = workdir / function
        bundles.assemble(specs[function], bundle)
        local = size_budget.tree_bytes(bundle) / size_budget.MIB
        try:
            timing: Timing | None = time_imports(
                [bundle], entry[function], FIRST_USE.get(function, ()), runs
            )
            error = ""
        except RuntimeError as exc:
            timing, error = None, str(exc).splitlines()[-1]
        row = Row(function, arm64.get(function), local, timing, error)
        if callable(say):
            say(describe(row))
        rows.append(row)
    return rows


def describe(row: Row) -> str:
    size = (
        f"{row.arm64_mib:6.1f} MiB arm64"
        if row.arm64_mib is not None
        else f"{row.local_mib:6.1f} MiB x86_64 (no arm64 build)"
    )
    if row.timing is None:
        return f"{row.function:24} {size}  import FAILED: {row.error}"
    t = row.timing
    heavy = row.heavy_loaded()
    loads = f"  loads {', '.join(heavy)}" if heavy else ""
    return (
        f"{row.function:24} {size}  import {t.handler_import * 1000:5.0f} ms + first "
        f"invocation {t.first_invocation * 1000:5.0f} ms = {t.total * 1000:5.0f} ms "
        f"(median of {t.runs}){loads}"
    )


def verdicts(rows: Sequence[Row]) -> list[str]:
    """The targets as ratios: the issue's sizes, every budget, heavy modules in the worker
    only, every bundle importable."""
    out = []
    for row in rows:
        mib = row.arm64_mib
        target = TARGETS_MIB.get(row.function)
        budget = size_budget.BUDGETS_MIB.get(row.function)
        where = "arm64" if mib is not None else "x86_64 here, no arm64 build"
        size = mib if mib is not None else row.local_mib
        if target is not None:
            verdict = "PASS" if size <= target else "MISS"
            out.append(
                f"{row.function} unzipped {size:.1f} MiB ({where}) / target {target:g} MiB "
                f"= {size / target:.2f} <= 1  {verdict}"
            )
        if budget is not None and target != budget:
            verdict = "PASS" if size <= budget else "MISS"
            out.append(
                f"{row.function} unzipped {size:.1f} MiB ({where}) / budget {budget:g} MiB "
                f"= {size / budget:.2f} <= 1  {verdict}"
            )
        if row.timing is None:
            out.append(f"{row.function} bundle imports its handler  FAIL ({row.error})")
        elif row.function != "WorkerFunction":
            heavy = row.heavy_loaded()
            verdict = "MISS" if heavy else "PASS"
            out.append(
                f"{row.function} loads no {'/'.join(HEAVY)}: "
                f"{', '.join(heavy) or 'none loaded'}  {verdict}"
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_RUNS} runs each")
    parser.add_argument("--runs", type=int, default=None, help=f"default {DEFAULT_RUNS}")
    parser.add_argument("--build-dir", type=Path, default=size_budget.BUILD_DIR)
    parser.add_argument("--function", action="append", help="only this one (repeatable)")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)
    runs = args.runs or (QUICK_RUNS if args.quick else DEFAULT_RUNS)
    functions = args.function or sorted(handlers())
    if not (args.build_dir / "template.yaml").is_file():
        print(
            f"no arm64 build in {args.build_dir} (`make deploy-check` makes one): sizes are "
            "of the x86_64 bundles assembled here"
        )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cold-start-") as folder:
        rows = measure(functions, args.build_dir, runs, Path(folder))
    print(f"\ntargets ({time.monotonic() - started:.0f} s):")
    for line in verdicts(rows):
        print(f"  {line}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
