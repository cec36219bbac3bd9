"""infra.size_budget on fake `sam build` trees: a function's size is its code folder and its
layers' folders, and a function over its budget, without one, or missing fails the check."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from infra import size_budget
from infra.cfn_yaml import load_template
from infra.size_budget import MIB, function_sizes, judge, main, tree_bytes

ROOT = Path(__file__).resolve().parents[2]


def _file(path: Path, size: int) -> None:
    """A file of `size` bytes (sparse: no disk taken)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        handle.truncate(size)


def _build(tmp_path: Path, sizes: dict[str, int], layers: str = "") -> Path:
    """A build folder as `sam build` leaves it: template.yaml and a folder per function."""
    build = tmp_path / "build"
    resources = ""
    for name, size in sizes.items():
        _file(build / name / "app.py", size)
        resources += (
            f"  {name}:\n    Type: AWS::Serverless::Function\n"
            f"    Properties:\n      Handler: app.app\n      CodeUri: {name}\n"
        )
    (build / "template.yaml").write_text(
        "Transform: AWS::Serverless-2016-10-31\nResources:\n" + resources + layers,
        encoding="utf-8",
    )
    return build


def test_a_tree_counts_its_files_bytes_not_links(tmp_path: Path) -> None:
    _file(tmp_path / "a" / "one", 1000)
    _file(tmp_path / "a" / "b" / "two", 24)
    os.symlink(tmp_path / "a" / "one", tmp_path / "a" / "link")
    assert tree_bytes(tmp_path / "a") == 1024
    assert tree_bytes(tmp_path / "a" / "one") == 1000


def test_a_function_is_its_code_and_its_layers(tmp_path: Path) -> None:
    layers = (
        "  Imaging:\n    Type: AWS::Serverless::LayerVersion\n"
        "    Properties:\n      ContentUri: Imaging\n"
        "  Common:\n    Type: AWS::Serverless::LayerVersion\n"
        "    Properties:\n      ContentUri: Common\n"
    )
    build = _build(tmp_path, {"Api": 3 * MIB, "Worker": 5 * MIB}, layers)
    _file(build / "Imaging" / "python" / "PIL" / "x.so", 20 * MIB)
    _file(build / "Common" / "python" / "y.py", MIB)
    text = (build / "template.yaml").read_text()
    text = text.replace(
        "CodeUri: Worker\n", "CodeUri: Worker\n      Layers:\n        - !Ref Imaging\n"
    )
    text = text.replace(
        "Resources:\n", "Globals:\n  Function:\n    Layers: [!Ref Common]\nResources:\n"
    )
    (build / "template.yaml").write_text(text)
    sizes = function_sizes(build)
    assert sizes["Api"].bytes == 4 * MIB  # its code and the global layer
    assert sizes["Worker"].bytes == 26 * MIB  # and its own layer on top
    assert sizes["Worker"].parts == (build / "Worker", build / "Common", build / "Imaging")


def test_a_layer_from_elsewhere_cannot_be_sized(tmp_path: Path) -> None:
    build = _build(tmp_path, {"Api": MIB})
    text = (build / "template.yaml").read_text()
    (build / "template.yaml").write_text(
        text.replace(
            "CodeUri: Api\n", "CodeUri: Api\n      Layers: [arn:aws:lambda:x:1:layer:y:1]\n"
        )
    )
    with pytest.raises(ValueError, match="no size"):
        function_sizes(build)


def test_over_budget_without_budget_and_not_built_all_fail(tmp_path: Path) -> None:
    build = _build(tmp_path, {"Small": MIB, "Large": 81 * MIB, "Stray": MIB})
    budgets = {"Small": 2.0, "Large": 80.0, "Gone": 10.0}
    verdicts = {v.function: v for v in judge(function_sizes(build), budgets)}
    assert verdicts["Small"].ok and verdicts["Small"].line().endswith("PASS")
    assert not verdicts["Large"].ok and verdicts["Large"].line().endswith("OVER")
    assert "81.0 MiB" in verdicts["Large"].line() and "(101%)" in verdicts["Large"].line()
    assert not verdicts["Stray"].ok and "no budget" in verdicts["Stray"].line()
    assert not verdicts["Gone"].ok and "not in the build" in verdicts["Gone"].line()


def test_the_command_fails_on_one_function_over_and_passes_within(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(size_budget, "BUDGETS_MIB", {"Api": 45.0, "Worker": 130.0})
    within = _build(tmp_path / "a", {"Api": 40 * MIB, "Worker": 120 * MIB})
    assert main(["--build-dir", str(within)]) == 0
    assert "every function within its budget" in capsys.readouterr().out
    over = _build(tmp_path / "b", {"Api": 46 * MIB, "Worker": 120 * MIB})
    assert main(["--build-dir", str(over)]) == 1
    captured = capsys.readouterr()
    assert "Api" in captured.err and "OVER" in captured.out
    assert main(["--build-dir", str(tmp_path / "none")]) == 1


def test_every_function_of_the_template_has_a_budget_within_the_issues_targets() -> None:
    template = load_template(ROOT / "template.yaml")
    functions = {
        k for k, v in template["Resources"].items() if v["Type"] == "AWS::Serverless::Function"
    }
    assert set(size_budget.BUDGETS_MIB) == functions
    # issue 17 (boto3 bundled): the API at most 80 MB, the worker at most 130 MB
    assert size_budget.BUDGETS_MIB["ApiFunction"] <= 80
    assert size_budget.BUDGETS_MIB["WorkerFunction"] <= 130
    assert all(b <= size_budget.LAMBDA_LIMIT_MIB for b in size_budget.BUDGETS_MIB.values())
