"""Each Lambda function's unzipped size, as `sam build` left it, against its budget.

    python -m infra.size_budget [--build-dir .aws-sam/build]

A function's unzipped size is what Lambda unpacks for it: its own code folder in the build
plus the folders of the layers it names (Lambda's 250 MB limit counts the same, in MiB:
262,144,000 bytes). Sizes are the bytes of the regular files, in MiB (2**20 bytes). Prints one
line per function and exits 1 when a function is over its budget, has no budget, or was not
built; `make deploy-check` runs it after `sam build`. Standard library and the template loader
only: it runs in the SAM environment (.sam-venv) as well as the development one.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.cfn_yaml import load_template

ROOT = Path(__file__).resolve().parent.parent
BUILD_DIR = ROOT / ".aws-sam" / "build"
MIB = 2**20
LAMBDA_LIMIT_MIB = 250.0  # code and layers, unzipped (Lambda quotas)

# MiB each function may take unzipped. Issue 17's targets, with boto3 bundled, are the API at
# most 80 and the worker at most 130; the light functions and the API carry 40-42 MiB, so they
# get 50: room to grow, and imaging (71 MiB) creeping into one of them fails the build as
# well as tests/unit/test_bundles.py.
BUDGETS_MIB: Mapping[str, float] = {
    "ApiFunction": 50.0,
    "AuthorizerFunction": 50.0,
    "IngestFunction": 50.0,
    "WorkerFunction": 130.0,
    "FinalizeFunction": 50.0,
    "WebhookFunction": 50.0,
    "RowsDeadLetterFunction": 50.0,
    "SweepFunction": 50.0,
}


@dataclass(frozen=True)
class FunctionSize:
    function: str
    parts: tuple[Path, ...]  # its code folder, then its layers' folders
    bytes: int

    @property
    def mib(self) -> float:
        return self.bytes / MIB


@dataclass(frozen=True)
class Verdict:
    function: str
    mib: float | None  # None: not built
    budget_mib: float | None  # None: no budget

    @property
    def ok(self) -> bool:
        return self.mib is not None and self.budget_mib is not None and self.mib <= self.budget_mib

    def line(self) -> str:
        if self.mib is None:
            return f"{self.function:24} not in the build  FAIL"
        if self.budget_mib is None:
            return f"{self.function:24} {self.mib:7.1f} MiB  no budget (infra/size_budget.py)  FAIL"
        verdict = "PASS" if self.ok else "OVER"
        return (
            f"{self.function:24} {self.mib:7.1f} MiB  <= {self.budget_mib:5.0f} MiB budget "
            f"({self.mib / self.budget_mib:4.0%})  {verdict}"
        )


def tree_bytes(path: Path) -> int:
    """Bytes of the regular files under `path` (links are not followed)."""
    if path.is_file():
        return path.lstat().st_size
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            stat = (Path(folder) / name).lstat()
            if not os.path.islink(Path(folder) / name):
                total += stat.st_size
    return total


def _layer_folder(template: Mapping[str, Any], layer: Any, build_dir: Path) -> Path:
    resources = template.get("Resources") or {}
    if isinstance(layer, Mapping) and set(layer) == {"Ref"} and layer["Ref"] in resources:
        content = (resources[layer["Ref"]].get("Properties") or {}).get("ContentUri")
        if isinstance(content, str):
            return build_dir / content
    raise ValueError(f"layer {layer!r} is not one of the template's built layers: no size")


def function_sizes(build_dir: Path = BUILD_DIR) -> dict[str, FunctionSize]:
    """The unzipped size of every function of the built template (build_dir/template.yaml)."""
    template = load_template(build_dir / "template.yaml")
    globals_ = (template.get("Globals") or {}).get("Function") or {}
    out: dict[str, FunctionSize] = {}
    for logical_id, resource in (template.get("Resources") or {}).items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = resource.get("Properties") or {}
        code = props.get("CodeUri", globals_.get("CodeUri"))
        if not isinstance(code, str):
            raise ValueError(f"{logical_id}: CodeUri {code!r} is not a folder of the build")
        # SAM adds a function's Layers to the global ones
        layers = [*(globals_.get("Layers") or []), *(props.get("Layers") or [])]
        parts = (build_dir / code, *(_layer_folder(template, x, build_dir) for x in layers))
        for part in parts:
            if not part.is_dir():
                raise ValueError(f"{logical_id}: {part} is not in the build")
        out[logical_id] = FunctionSize(logical_id, parts, sum(tree_bytes(p) for p in parts))
    return out


def judge(
    sizes: Mapping[str, FunctionSize],
    budgets: Mapping[str, float] = BUDGETS_MIB,
) -> list[Verdict]:
    """A verdict per function built or budgeted (a budget for a function that is not built
    fails too: a renamed function must take its budget along)."""
    names = sorted(set(sizes) | set(budgets))
    return [
        Verdict(
            name,
            sizes[name].mib if name in sizes else None,
            budgets.get(name),
        )
        for name in names
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--build-dir", type=Path, default=BUILD_DIR)
    args = parser.parse_args(argv)
    if not (args.build_dir / "template.yaml").is_file():
        print(f"no build in {args.build_dir}: run `sam build` first", file=sys.stderr)
        return 1
    verdicts = judge(function_sizes(args.build_dir), BUDGETS_MIB)
    print(f"unzipped size per function ({args.build_dir}; Lambda's limit {LAMBDA_LIMIT_MIB:g} MiB)")
    for verdict in verdicts:
        print(f"  {verdict.line()}")
    failed = [v.function for v in verdicts if not v.ok]
    if failed:
        print(f"size budget: {len(failed)} failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print("size budget: every function within its budget")
    return 0


if __name__ == "__main__":
    sys.exit(main())
