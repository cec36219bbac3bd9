"""CloudFormation intrinsic functions, evaluated against the emulator's resources.

Works on the long form that `infra.cfn_yaml.load_template` produces (`{"Ref": x}`,
`{"Fn::GetAtt": [a, b]}`, `{"Fn::Sub": s}`...). Dynamic references such as
`{{resolve:secretsmanager:...}}` are left in the strings for the caller to replace.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any

NO_VALUE = object()
_SUB_VAR = re.compile(r"\$\{([^}]+)\}")


class TemplateError(ValueError):
    """The template uses something the emulator cannot evaluate."""


class Resolver:
    """Resolves intrinsics. Resources register their `Ref` value and attributes as they are
    provisioned; parameters and pseudo parameters are known up front."""

    def __init__(
        self,
        template: Mapping[str, Any],
        *,
        stack_name: str,
        region: str,
        account_id: str,
        parameter_overrides: Mapping[str, str] | None = None,
    ) -> None:
        self._template = template
        self.stack_name = stack_name
        self.region = region
        self.account_id = account_id
        self.parameters: dict[str, Any] = {}
        overrides = dict(parameter_overrides or {})
        for name, spec in (template.get("Parameters") or {}).items():
            value: Any
            if name in overrides:
                value = overrides[name]
            elif isinstance(spec, Mapping) and "Default" in spec:
                value = spec["Default"]
            else:
                value = ""
            if isinstance(spec, Mapping) and spec.get("Type") == "CommaDelimitedList":
                # a list, as CloudFormation gives it ("" is [""])
                value = value if isinstance(value, list) else str(value).split(",")
            self.parameters[name] = value
        self._refs: dict[str, Any] = {}
        self._attrs: dict[tuple[str, str], Any] = {}
        self._conditions: dict[str, bool] = {}

    # -- registration -------------------------------------------------------------
    def register(self, logical_id: str, ref: Any, attrs: Mapping[str, Any] | None = None) -> None:
        self._refs[logical_id] = ref
        for name, value in (attrs or {}).items():
            self._attrs[(logical_id, name)] = value

    def is_registered(self, logical_id: str) -> bool:
        return logical_id in self._refs

    def pseudo(self, name: str) -> Any:
        values: dict[str, Any] = {
            "AWS::StackName": self.stack_name,
            "AWS::Region": self.region,
            "AWS::AccountId": self.account_id,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackId": (
                f"arn:aws:cloudformation:{self.region}:{self.account_id}:"
                f"stack/{self.stack_name}/00000000-0000-0000-0000-000000000000"
            ),
            "AWS::NotificationARNs": [],
            "AWS::NoValue": NO_VALUE,
        }
        if name not in values:
            raise TemplateError(f"unknown pseudo parameter {name}")
        return values[name]

    # -- conditions -----------------------------------------------------------------
    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            conditions = self._template.get("Conditions") or {}
            if name not in conditions:
                raise TemplateError(f"unknown condition {name}")
            self._conditions[name] = bool(self._eval_condition(conditions[name]))
        return self._conditions[name]

    def _eval_condition(self, node: Any) -> bool:
        if isinstance(node, Mapping) and len(node) == 1:
            ((fn, arg),) = node.items()
            if fn == "Condition":
                return self.condition(str(arg))
            if fn == "Fn::Equals":
                left, right = (self.resolve(v) for v in arg)
                return str(left) == str(right)
            if fn == "Fn::Not":
                return not self._eval_condition(arg[0])
            if fn == "Fn::And":
                return all(self._eval_condition(v) for v in arg)
            if fn == "Fn::Or":
                return any(self._eval_condition(v) for v in arg)
        return bool(self.resolve(node))

    def resource_enabled(self, resource: Mapping[str, Any]) -> bool:
        cond = resource.get("Condition")
        return cond is None or self.condition(str(cond))

    # -- values ---------------------------------------------------------------------
    def ref(self, name: str) -> Any:
        if name.startswith("AWS::"):
            return self.pseudo(name)
        if name in self.parameters:
            return self.parameters[name]
        if name in self._refs:
            return self._refs[name]
        raise TemplateError(f"Ref to {name}, which is not provisioned (yet)")

    def get_att(self, logical_id: str, attribute: str) -> Any:
        key = (logical_id, attribute)
        if key in self._attrs:
            return self._attrs[key]
        raise TemplateError(f"Fn::GetAtt {logical_id}.{attribute} is not available locally")

    def sub(self, text: str, variables: Mapping[str, Any] | None = None) -> str:
        local = dict(variables or {})

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in local:
                return str(self.resolve(local[name]))
            if "." in name and not name.startswith("AWS::"):
                logical_id, attribute = name.split(".", 1)
                return str(self.get_att(logical_id, attribute))
            return str(self.ref(name))

        return _SUB_VAR.sub(replace, text)

    def resolve(self, node: Any) -> Any:
        """Evaluate every intrinsic inside `node`; `AWS::NoValue` entries are dropped."""
        if isinstance(node, list):
            items = [self.resolve(v) for v in node]
            return [v for v in items if v is not NO_VALUE]
        if not isinstance(node, Mapping):
            return node
        if len(node) == 1:
            ((key, arg),) = node.items()
            if key == "Ref":
                return self.ref(str(arg))
            if key == "Condition" and isinstance(arg, str):
                return self.condition(arg)
            if key.startswith("Fn::"):
                return self._function(key, arg)
        out = {}
        for key, value in node.items():
            resolved = self.resolve(value)
            if resolved is not NO_VALUE:
                out[key] = resolved
        return out

    def _function(self, name: str, arg: Any) -> Any:
        if name == "Fn::GetAtt":
            parts = arg.split(".", 1) if isinstance(arg, str) else list(arg)
            return self.get_att(str(parts[0]), str(self.resolve(parts[1])))
        if name == "Fn::Sub":
            if isinstance(arg, str):
                return self.sub(arg)
            return self.sub(str(arg[0]), arg[1])
        if name == "Fn::Join":
            delimiter, values = arg
            return str(delimiter).join(str(v) for v in self.resolve(values))
        if name == "Fn::Select":
            index, values = arg
            return self.resolve(values)[int(self.resolve(index))]
        if name == "Fn::Split":
            delimiter, text = arg
            return str(self.resolve(text)).split(str(delimiter))
        if name == "Fn::If":
            cond, when_true, when_false = arg
            return self.resolve(when_true if self.condition(str(cond)) else when_false)
        if name in {"Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or"}:
            return self._eval_condition({name: arg})
        if name == "Fn::FindInMap":
            map_name, first, second = (self.resolve(v) for v in arg)
            return self._template["Mappings"][map_name][first][second]
        if name == "Fn::Base64":
            return base64.b64encode(str(self.resolve(arg)).encode()).decode()
        if name == "Fn::GetAZs":
            return [f"{self.region}a", f"{self.region}b"]
        if name == "Fn::ToJsonString":
            import json

            return json.dumps(self.resolve(arg), separators=(",", ":"))
        raise TemplateError(f"{name} is not supported by the local emulator")


def references(node: Any) -> set[str]:
    """Logical ids a node refers to through Ref, Fn::GetAtt or Fn::Sub."""
    found: set[str] = set()
    if isinstance(node, list):
        for item in node:
            found |= references(item)
    elif isinstance(node, Mapping):
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                found.add(value)
            elif key == "Fn::GetAtt":
                first = value.split(".", 1)[0] if isinstance(value, str) else value[0]
                found.add(str(first))
            elif key == "Fn::Sub":
                text = value if isinstance(value, str) else value[0]
                for match in _SUB_VAR.finditer(str(text)):
                    found.add(match.group(1).split(".", 1)[0])
                if not isinstance(value, str):
                    found |= references(value[1])
            else:
                found |= references(value)
    return found
