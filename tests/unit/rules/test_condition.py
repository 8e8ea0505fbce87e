"""condition: a CEL guard; false denies with the configured reason, errors fail closed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from controller.cel import Doc
from controller.rules.condition import ConditionSpec, evaluate
from controller.rules.verdict import Status

T0 = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
NOT_FROZEN = "resource.metadata['frozen'] != 'true'"


def activation(frozen: str | None = "false", tier: str = "critical") -> dict[str, Doc]:
    metadata = {} if frozen is None else {"frozen": frozen}
    return {
        "environment": Doc({"id": "e1", "name": "production", "metadata": {}}),
        "resource": Doc({"id": "r1", "identifier": "eu-1", "kind": "cluster", "metadata": metadata}),
        "deployment": Doc({"id": "d1", "name": "api", "metadata": {"tier": tier}}),
        "version": Doc({"id": "v1", "tag": "1.2.0", "metadata": {}}),
    }


@pytest.mark.parametrize(
    ("spec", "docs", "status", "reason", "message"),
    [
        (ConditionSpec(expression=NOT_FROZEN), activation("false"), Status.ALLOWED, "ConditionMet",
         "the condition holds"),
        (ConditionSpec(expression=NOT_FROZEN), activation("true"), Status.DENIED, "ConditionNotMet",
         f"condition not met: {NOT_FROZEN}"),
        (ConditionSpec(expression=NOT_FROZEN, reason="ResourceFrozen"), activation("true"), Status.DENIED,
         "ResourceFrozen", f"condition not met: {NOT_FROZEN}"),
        # A missing key fails closed, whatever reason was configured.
        (ConditionSpec(expression=NOT_FROZEN, reason="ResourceFrozen"), activation(None), Status.DENIED,
         "EvaluationError", "no such member in mapping: 'frozen'"),
        (ConditionSpec(expression="'frozen' in resource.metadata ? resource.metadata['frozen'] != 'true' "
                                  ": true"),
         activation(None), Status.ALLOWED, "ConditionMet", "the condition holds"),
        (ConditionSpec(expression="deployment.metadata['tier'] == 'critical' && semver(version.tag).compare("
                                  "'1.0.0') > 0"),
         activation(), Status.ALLOWED, "ConditionMet", "the condition holds"),
        (ConditionSpec(expression="size(environment.name)"), activation(), Status.DENIED, "EvaluationError",
         "expression returned int, not bool"),
    ],
)  # fmt: skip
def test_condition(
    spec: ConditionSpec, docs: dict[str, Doc], status: Status, reason: str, message: str
) -> None:
    verdict = evaluate(spec, activation=docs, now=T0)
    assert (verdict.status, verdict.reason, verdict.message) == (status, reason, message)
    assert verdict.details == {"expression": spec.expression}
    assert (verdict.satisfied_at, verdict.next_check_at) == (None, None)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"expression": "resource.kind == "}, "invalid CEL at line 1, column"),
        ({"expression": "true &&\n  release.x"}, "line 2, column 3: undeclared reference to 'release'"),
        ({"expression": "true", "reason": "resource frozen"}, "pattern"),
        ({"expression": "true", "reason": "resourceFrozen"}, "pattern"),
        ({"expression": "true", "reason": ""}, "pattern"),
        ({"expression": "true", "reason": "ConditionMet"}, "reserved"),
        ({"expression": "true", "reason": "EvaluationError"}, "reserved"),
        ({"expression": "true", "other": 1}, "Extra inputs"),
        ({}, "Field required"),
    ],
)
def test_invalid_specs_are_rejected(fields: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        ConditionSpec.model_validate(fields)


def test_defaults_and_camel_case_round_trip() -> None:
    spec = ConditionSpec.model_validate({"expression": NOT_FROZEN})
    assert spec.reason == "ConditionNotMet"
    assert ConditionSpec.model_validate(spec.model_dump(by_alias=True)) == spec
