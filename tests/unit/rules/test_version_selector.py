"""versionSelector: true allows, false denies with the description, errors fail closed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from controller.cel import Doc
from controller.rules.verdict import Status
from controller.rules.version_selector import VersionSelectorSpec, evaluate

T0 = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
AT_LEAST_2 = "semver(version.tag).compare('2.0.0') >= 0"
STABLE_IN_PROD = "environment.name != 'production' || !version.tag.contains('-')"
MATCHES = "the version matches the selector"


def activation(tag: Any = "2.0.0", environment: str = "production", **version: Any) -> dict[str, Doc]:
    return {
        "version": Doc({"id": "v1", "tag": tag, "metadata": {}, **version}),
        "environment": Doc({"id": "e1", "name": environment, "metadata": {}}),
        "resource": Doc({"id": "r1", "identifier": "eu-1", "kind": "cluster", "metadata": {}}),
        "deployment": Doc({"id": "d1", "name": "api", "slug": "api", "metadata": {}}),
    }


@pytest.mark.parametrize(
    ("selector", "docs", "status", "reason", "message"),
    [
        (AT_LEAST_2, activation("2.0.0"), Status.ALLOWED, "VersionSelected", MATCHES),
        (AT_LEAST_2, activation("2.10.1"), Status.ALLOWED, "VersionSelected", MATCHES),
        (AT_LEAST_2, activation("v2.1.0"), Status.ALLOWED, "VersionSelected", MATCHES),
        # 1.10 > 1.9 numerically, but both are below 2; and a 2.0.0 pre-release ranks below 2.0.0.
        (AT_LEAST_2, activation("1.10.0"), Status.DENIED, "VersionNotSelected",
         f"the version does not match the selector: {AT_LEAST_2}"),
        (AT_LEAST_2, activation("2.0.0-rc.1"), Status.DENIED, "VersionNotSelected",
         f"the version does not match the selector: {AT_LEAST_2}"),
        (STABLE_IN_PROD, activation("2.0.0-rc.1", "staging"), Status.ALLOWED, "VersionSelected", MATCHES),
        (STABLE_IN_PROD, activation("2.0.0-rc.1"), Status.DENIED, "VersionNotSelected",
         f"the version does not match the selector: {STABLE_IN_PROD}"),
        # Evaluation problems fail closed: a tag that is not semver, a missing key, a non-bool result.
        (AT_LEAST_2, activation("latest"), Status.DENIED, "EvaluationError",
         "invalid semantic version 'latest'"),
        (AT_LEAST_2, activation(None), Status.DENIED, "EvaluationError",
         "semver() expects a string, got null"),
        ("version.metadata['channel'] == 'stable'", activation(), Status.DENIED, "EvaluationError",
         "no such member in mapping: 'channel'"),
        ("version.tag", activation(), Status.DENIED, "EvaluationError",
         "expression returned string, not bool"),
    ],
)  # fmt: skip
def test_version_selector(
    selector: str, docs: dict[str, Doc], status: Status, reason: str, message: str
) -> None:
    verdict = evaluate(VersionSelectorSpec(selector=selector), activation=docs, now=T0)
    assert (verdict.status, verdict.reason, verdict.message) == (status, reason, message)
    assert verdict.details == {"expression": selector}
    assert (verdict.satisfied_at, verdict.next_check_at) == (None, None)


def test_a_missing_variable_fails_closed() -> None:
    docs = activation()
    del docs["version"]
    verdict = evaluate(VersionSelectorSpec(selector=AT_LEAST_2), activation=docs, now=T0)
    assert (verdict.status, verdict.reason) == (Status.DENIED, "EvaluationError")


def test_the_description_is_the_denial_message() -> None:
    spec = VersionSelectorSpec.model_validate({"selector": AT_LEAST_2, "description": "2.x and later only"})
    verdict = evaluate(spec, activation=activation("1.4.0"), now=T0)
    assert (verdict.reason, verdict.message) == ("VersionNotSelected", "2.x and later only")


@pytest.mark.parametrize(
    ("selector", "where"),
    [
        ("version.tag ==", "line 1, column"),
        ("version.tag == '1.0.0' &&\n  )", "line 2, column 3"),
        ("build.tag == '1.0.0'", "line 1, column 1: undeclared reference to 'build'"),
        ("nosuch(version.tag)", "line 1, column 1: unknown function 'nosuch'"),
        ("  ", "line 1, column 1: empty expression"),
    ],
)
def test_invalid_cel_is_rejected_with_its_position(selector: str, where: str) -> None:
    with pytest.raises(ValidationError, match="invalid CEL at ") as caught:
        VersionSelectorSpec(selector=selector)
    assert where in str(caught.value)


@pytest.mark.parametrize("fields", [{}, {"selector": "true", "other": 1}, {"selector": 3}])
def test_invalid_specs_are_rejected(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        VersionSelectorSpec.model_validate(fields)


def test_camel_case_round_trip() -> None:
    spec = VersionSelectorSpec.model_validate({"selector": AT_LEAST_2, "description": "2.x"})
    assert VersionSelectorSpec.model_validate(spec.model_dump(by_alias=True)) == spec
