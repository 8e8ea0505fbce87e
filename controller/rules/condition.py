"""``condition``: a guard that lets a deploy through only while a CEL expression holds.

Why it exists: in the spirit of Octopus conditions and CircleCI rules, an operator states a
precondition over ``environment``, ``resource``, ``deployment`` and ``version`` and names the
machine ``reason`` the decision shows when it does not hold (``FrozenRegion``, ``NotCanary``...).
False is ``denied``: the facts it reads change only by an edit, never by time.

Must not: read a clock, or let a deploy through when the expression cannot be evaluated: that
fails closed as ``EvaluationError``. The expression is compiled when the spec is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from controller.cel import Doc, checked, compile_expression
from controller.rules.verdict import Verdict

VARIABLES = frozenset({"environment", "resource", "deployment", "version"})
# Reasons this rule reports itself: a user reason equal to one would make the decision ambiguous.
_RESERVED_REASONS = frozenset({"ConditionMet", "EvaluationError"})


class ConditionSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True)

    expression: str
    reason: str = Field(default="ConditionNotMet", pattern=r"^[A-Z][A-Za-z0-9]*$", max_length=64)

    @field_validator("expression")
    @classmethod
    def _compiles(cls, value: str) -> str:
        return checked(value, VARIABLES)

    @field_validator("reason")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in _RESERVED_REASONS:
            raise ValueError(f"reason {value!r} is reserved; choose another CamelCase code")
        return value


def evaluate(spec: ConditionSpec, *, activation: Mapping[str, Doc], now: datetime) -> Verdict:
    details = {"expression": spec.expression}
    match = compile_expression(spec.expression, VARIABLES).match(activation)
    if match.error is not None:
        return Verdict.denied("EvaluationError", match.error, details=details)
    if not match.matched:
        return Verdict.denied(spec.reason, f"condition not met: {spec.expression}", details=details)
    return Verdict.allowed("ConditionMet", "the condition holds", details=details)
