"""Load a CloudFormation / SAM YAML template, understanding the short intrinsic tags.

``load_template(path)`` returns the template as plain data: ``!Ref X`` becomes
``{"Ref": "X"}``, ``!GetAtt A.B`` becomes ``{"Fn::GetAtt": ["A", "B"]}``, ``!Sub "..."``
becomes ``{"Fn::Sub": "..."}`` and every other ``!Name`` becomes ``{"Fn::Name": value}``.
The API (``load_template``, ``loads_template``) is stable; the local emulator imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = ["CfnLoader", "load_template", "loads_template"]

# Short tags and the long form they stand for.
_TAGS: dict[str, str] = {
    "!Ref": "Ref",
    "!Condition": "Condition",
    "!And": "Fn::And",
    "!Base64": "Fn::Base64",
    "!Cidr": "Fn::Cidr",
    "!Equals": "Fn::Equals",
    "!FindInMap": "Fn::FindInMap",
    "!GetAtt": "Fn::GetAtt",
    "!GetAZs": "Fn::GetAZs",
    "!If": "Fn::If",
    "!ImportValue": "Fn::ImportValue",
    "!Join": "Fn::Join",
    "!Length": "Fn::Length",
    "!Not": "Fn::Not",
    "!Or": "Fn::Or",
    "!Select": "Fn::Select",
    "!Split": "Fn::Split",
    "!Sub": "Fn::Sub",
    "!ToJsonString": "Fn::ToJsonString",
    "!Transform": "Fn::Transform",
}


class CfnLoader(yaml.SafeLoader):
    """A safe YAML loader that maps CloudFormation short tags to their long form."""


def _construct(loader: CfnLoader, tag: str, node: yaml.Node) -> dict[str, Any]:
    key = _TAGS[tag]
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if key == "Fn::GetAtt" and isinstance(value, str):
            # !GetAtt Resource.Attribute (the attribute may itself contain dots).
            resource, _, attribute = value.partition(".")
            value = [resource, attribute]
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:  # pragma: no cover - yaml has no other node kinds
        raise yaml.constructor.ConstructorError(None, None, f"unexpected node for {tag}")
    return {key: value}


def _register() -> None:
    for tag in _TAGS:

        def constructor(loader: CfnLoader, node: yaml.Node, _tag: str = tag) -> dict[str, Any]:
            return _construct(loader, _tag, node)

        CfnLoader.add_constructor(tag, constructor)


_register()


def loads_template(text: str) -> dict[str, Any]:
    """Parse template text into a dict (short tags expanded to their long form)."""
    data = yaml.load(text, Loader=CfnLoader)  # noqa: S506 - CfnLoader is a SafeLoader
    if not isinstance(data, dict):
        raise ValueError("a CloudFormation template must be a mapping at the top level")
    return data


def load_template(path: str | Path) -> dict[str, Any]:
    """Read and parse the template at ``path``."""
    return loads_template(Path(path).read_text(encoding="utf-8"))
