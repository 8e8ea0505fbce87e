"""``versionSelector``: only versions for which a CEL expression holds may deploy here.

Why it exists: operators restrict which versions reach a target ("only 2.x in production", "no
pre-releases outside dev") with one expression over ``version``, ``environment``, ``resource`` and
``deployment``. A version that does not match will never match, so false is ``denied``, not
``pending``.

Must not: read a clock, or let a version through when the expression cannot be evaluated (a
missing key, a non-boolean result, an invalid semver): that fails closed as ``EvaluationError``.
The expression is compiled when the spec is built, so invalid CEL never reaches evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from controller.cel import Doc, checked, compile_expression
from controller.rules.verdict import Verdict

VARIABLES = frozenset({"version", "environment", "resource", "deployment"})


class VersionSelectorSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True)

    selector: str
    description: str | None = Field(default=None, max_length=1000)

    @field_validator("selector")
    @classmethod
    def _compiles(cls, value: str) -> str:
        return checked(value, VARIABLES)


def evaluate(spec: VersionSelectorSpec, *, activation: Mapping[str, Doc], now: datetime) -> Verdict:
    details = {"expression": spec.selector}
    match = compile_expression(spec.selector, VARIABLES).match(activation)
    if match.error is not None:
        return Verdict.denied("EvaluationError", match.error, details=details)
    if not match.matched:
        message = spec.description or f"the version does not match the selector: {spec.selector}"
        return Verdict.denied("VersionNotSelected", message, details=details)
    return Verdict.allowed("VersionSelected", "the version matches the selector", details=details)
