"""Entity tags (RFC 9110 8.8.3) and `If-None-Match` (13.1.2), for the status and job list.

A tag is weak, `W/"<digest>"`: it stands for what the answer says, not its bytes (two reads
of one version may be serialised apart, a row recorded between the job's read and its rows'
read shows in the page before the job's version moves on). The digest is of everything the
answer depends on: a job record's `version` (bumped by every write that changes anything a
status or a listing shows), the query, and what a request changes (the tenant, the API's base
URL that `outputCsvUrl` starts with, the outputs' base URL). It is computed without reading
a single row.

`If-None-Match` is compared weakly, as RFC 9110 13.1.2 says a recipient must for it: `W/"x"`
matches `"x"`; the field is `*` or a comma-separated list; a malformed field matches nothing
(the full answer is sent).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re

_TAG = re.compile(r'\s*(?:W/)?"([\x21\x23-\x7e\x80-\xff]*)"\s*')


def weak_tag(*parts: object) -> str:
    """`W/"<digest of parts>"`: 128 bits of SHA-256 of the parts as JSON, base64url."""
    raw = json.dumps(parts, separators=(",", ":"), sort_keys=True, default=str).encode()
    digest = hashlib.sha256(raw).digest()[:16]
    return 'W/"' + base64.urlsafe_b64encode(digest).decode().rstrip("=") + '"'


def opaque(tag: str) -> str:
    """The quoted part's content of an entity tag, `W/` or not."""
    match = _TAG.fullmatch(tag)
    return match.group(1) if match else tag


def none_match(field: str | None, current: str) -> bool:
    """True when `If-None-Match: field` names `current` (weak comparison) or is `*` (the
    answer exists): the answer is then `304 Not Modified`. False with no field, a field
    that names other tags only, or one that is malformed."""
    if field is None:
        return False
    text = field.strip()
    if text == "*":
        return True
    wanted = opaque(current)
    position = 0
    while position < len(text):
        match = _TAG.match(text, position)
        if match is None:
            return False  # not a list of entity tags: ignore it, answer in full
        if match.group(1) == wanted:
            return True
        position = match.end()
        if position < len(text):
            if text[position] != ",":
                return False
            position += 1
            while position < len(text) and text[position] in " \t,":  # empty list elements
                position += 1
    return False
