"""Templates in verification URLs, queries, headers and bodies: ``{{ resource.metadata.region }}``.

Why it exists: one verification rule serves every target it matches, so a probe has to name the
target's own endpoint. A placeholder is a dotted path into the target's documents (the same
camelCase JSON that CEL sees): ``resource``, ``environment``, ``deployment``, ``version`` or
``job``. A leading dot (``{{ .resource.name }}``, as in Ctrlplane's Go templates) is accepted.

Checked when the rule is written (syntax and roots), rendered when a measurement is taken. A path
that is missing at render time is a :class:`TemplateError`, which the measurement records as a
provider error: it never renders as an empty string, which would probe the wrong thing.

Must not: evaluate code, or read anything but the documents it is given.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

ROOTS = ("resource", "environment", "deployment", "version", "job")
_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_PATH = re.compile(r"^\s*\.?([A-Za-z_][A-Za-z0-9_]*)((?:\.[A-Za-z0-9_-]+)*)\s*$")


class TemplateError(ValueError):
    pass


def paths(template: str) -> list[tuple[str, ...]]:
    """The paths a template reads. Raises TemplateError for malformed placeholders or unknown roots."""
    found = []
    for match in _PLACEHOLDER.finditer(template):
        parsed = _PATH.match(match.group(1))
        if parsed is None:
            raise TemplateError(f"{match.group(0)!r} is not a placeholder like {{{{ resource.name }}}}")
        root, rest = parsed.group(1), parsed.group(2)
        if root not in ROOTS:
            raise TemplateError(f"{match.group(0)!r} reads {root!r}; placeholders read one of {', '.join(ROOTS)}")
        found.append((root, *[part for part in rest.split(".") if part]))
    leftover = _PLACEHOLDER.sub("", template)
    if "{{" in leftover or "}}" in leftover:
        raise TemplateError("unbalanced '{{' or '}}'")
    return found


def render(template: str, documents: Mapping[str, Any]) -> str:
    """``template`` with each placeholder replaced by the value at its path."""
    paths(template)  # the same checks as at write time: a stored template is never trusted blindly
    return _PLACEHOLDER.sub(lambda m: _text(_lookup(m.group(0), m.group(1), documents)), template)


def _lookup(placeholder: str, expression: str, documents: Mapping[str, Any]) -> Any:
    parsed = _PATH.match(expression)
    assert parsed is not None
    value: Any = documents
    for part in (parsed.group(1), *[p for p in parsed.group(2).split(".") if p]):
        if not isinstance(value, Mapping) or part not in value or value[part] is None:
            raise TemplateError(f"{placeholder} has no value for this target")
        value = value[part]
    return value


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, separators=(",", ":"), sort_keys=True)
