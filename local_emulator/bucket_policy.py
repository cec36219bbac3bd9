"""An S3 bucket policy, evaluated for one request as S3 evaluates it.

Enough of IAM's policy language for the policies of template.yaml and their like: `Effect`,
`Principal`/`NotPrincipal` (`"*"`, `{"AWS": ...}`, `{"Service": ...}`), `Action`/`NotAction`
and `Resource`/`NotResource` with IAM's wildcards (`*` any run of characters, `/` included;
`?` one character), and `Condition` blocks with the String*, Arn* and Bool operators (an
`...IfExists` holds when its key is absent). An explicit Deny wins, then an Allow; nothing
matching is a refusal. A statement this module cannot read (an operator it does not know,
a `NotPrincipal`) never allows and always denies: it errs towards refusing, as the emulator
must be as strict as AWS.

moto stores a bucket policy but evaluates it its own way (conditions ignored): the emulator
keeps the template's policies here instead (local_emulator/cdn.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any


@dataclass(frozen=True)
class Request:
    """Who asks for what: a service principal (e.g. `cloudfront.amazonaws.com`) or an AWS
    account/role ARN, the action (`s3:GetObject`), the resource's ARN and the condition keys
    of the request (`aws:SourceArn`, `aws:SecureTransport`, ...; matched case-insensitively)."""

    action: str
    resource: str
    service: str = ""
    aws_principal: str = ""
    keys: Mapping[str, str] = field(default_factory=dict)

    def key(self, name: str) -> str | None:
        wanted = name.lower()
        return next((v for k, v in self.keys.items() if k.lower() == wanted), None)


_OPERATORS = {
    "StringEquals",
    "StringNotEquals",
    "StringEqualsIgnoreCase",
    "StringNotEqualsIgnoreCase",
    "StringLike",
    "StringNotLike",
    "ArnEquals",
    "ArnNotEquals",
    "ArnLike",
    "ArnNotLike",
    "Bool",
}


class _Unreadable(Exception):
    """A statement this module cannot evaluate."""


@lru_cache(maxsize=256)
def _pattern(glob: str, ignore_case: bool) -> re.Pattern[str]:
    body = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in glob)
    return re.compile(f"^{body}$", re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def matches(glob: str, value: str, *, ignore_case: bool = False) -> bool:
    """IAM's wildcard match: `*` any run of characters (`/` included), `?` one."""
    return _pattern(glob, ignore_case).match(value) is not None


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _principal_matches(principal: Any, request: Request) -> bool:
    if principal == "*":
        return True
    if not isinstance(principal, Mapping):
        raise _Unreadable(f"principal {principal!r}")
    for kind, values in principal.items():
        for value in _as_list(values):
            if kind == "AWS" and value in {"*", request.aws_principal}:
                return True
            if kind == "Service" and request.service and value == request.service:
                return True
    return False


def _any_matches(patterns: Sequence[Any], value: str, *, ignore_case: bool) -> bool:
    return any(matches(str(p), value, ignore_case=ignore_case) for p in patterns)


def _condition_holds(operator: str, block: Any, request: Request) -> bool:
    if not isinstance(block, Mapping):
        raise _Unreadable(f"condition {operator}")
    if_exists = operator.endswith("IfExists")
    base = operator.removesuffix("IfExists")
    if base not in _OPERATORS:
        raise _Unreadable(f"condition operator {operator}")
    for name, expected in block.items():
        actual = request.key(str(name))
        if actual is None:
            # absent: an ...IfExists or a negated operator holds (IAM's rule), others do not
            if if_exists or "Not" in base:
                continue
            return False
        values = [str(v).lower() if isinstance(v, bool) else str(v) for v in _as_list(expected)]
        if base in {"StringEquals", "ArnEquals"}:
            holds = actual in values
        elif base == "StringEqualsIgnoreCase":
            holds = actual.lower() in {v.lower() for v in values}
        elif base in {"StringLike", "ArnLike"}:
            holds = _any_matches(values, actual, ignore_case=False)
        elif base in {"StringNotEquals", "ArnNotEquals"}:
            holds = actual not in values
        elif base == "StringNotEqualsIgnoreCase":
            holds = actual.lower() not in {v.lower() for v in values}
        elif base in {"StringNotLike", "ArnNotLike"}:
            holds = not _any_matches(values, actual, ignore_case=False)
        else:  # Bool
            holds = actual.lower() in {v.lower() for v in values}
        if not holds:
            return False
    return True


def _applies(statement: Mapping[str, Any], request: Request) -> bool:
    if "NotPrincipal" in statement:
        raise _Unreadable("NotPrincipal")
    if not _principal_matches(statement.get("Principal"), request):
        return False
    if "NotAction" in statement:
        if _any_matches(_as_list(statement["NotAction"]), request.action, ignore_case=True):
            return False
    elif not _any_matches(_as_list(statement.get("Action")), request.action, ignore_case=True):
        return False
    if "NotResource" in statement:
        if _any_matches(_as_list(statement["NotResource"]), request.resource, ignore_case=False):
            return False
    elif not _any_matches(_as_list(statement.get("Resource")), request.resource, ignore_case=False):
        return False
    conditions = statement.get("Condition") or {}
    if not isinstance(conditions, Mapping):
        raise _Unreadable("Condition")
    return all(_condition_holds(str(op), block, request) for op, block in conditions.items())


def allows(policy: Mapping[str, Any] | None, request: Request) -> bool:
    """Whether `policy` lets `request` through: an applicable Deny refuses, else an
    applicable Allow admits, else refused (no policy: refused)."""
    allowed = False
    for statement in _as_list((policy or {}).get("Statement")):
        if not isinstance(statement, Mapping):
            return False
        deny = statement.get("Effect") == "Deny"
        try:
            applies = _applies(statement, request)
        except _Unreadable:
            applies = deny  # unreadable: never an Allow, always a Deny
        if applies and deny:
            return False
        if applies and statement.get("Effect") == "Allow":
            allowed = True
    return allowed
