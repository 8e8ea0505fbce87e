"""deploymentDependency: another deployment on the same resource must run a matching version."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from controller.cel import Doc
from controller.rules.deployment_dependency import DeploymentDependencySpec, UpstreamFact, evaluate
from controller.rules.verdict import Status

T0 = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
SCHEMA_23 = "deployment.name == 'db' && semver(version.tag).compare('2.3.0') >= 0"
ON_CHANNEL = "version.metadata['channel'] == 'stable'"


def upstream(name: str, tag: str | None, deployed_at: datetime | None = T0, **metadata: str) -> UpstreamFact:
    version = None if tag is None else Doc({"id": f"{name}-{tag}", "tag": tag, "metadata": metadata})
    return UpstreamFact(Doc({"id": f"d-{name}", "name": name, "slug": name}), version, deployed_at)


@pytest.mark.parametrize(
    ("expression", "facts", "status", "reason", "satisfied_at", "satisfied_by"),
    [
        (SCHEMA_23, [], Status.PENDING, "AwaitingUpstream", None, None),
        (SCHEMA_23, [upstream("db", "2.3.0")], Status.ALLOWED, "UpstreamSatisfied", T0, ["db"]),
        (SCHEMA_23, [upstream("db", "2.2.9")], Status.PENDING, "AwaitingUpstream", None, None),
        (SCHEMA_23, [upstream("cache", "9.0.0")], Status.PENDING, "AwaitingUpstream", None, None),
        # An upstream that never succeeded has no current version, and never matches.
        (SCHEMA_23, [upstream("db", None, None)], Status.PENDING, "AwaitingUpstream", None, None),
        ("deployment.name == 'db'", [upstream("db", None, None)], Status.PENDING, "AwaitingUpstream", None,
         None),
        # Several match: satisfied since the earliest of their deploys.
        ("true", [upstream("db", "1.0.0", T0 + HOUR), upstream("cache", "1.0.0", T0)], Status.ALLOWED,
         "UpstreamSatisfied", T0, ["cache", "db"]),
        # An unknown deploy time counts as "always".
        ("true", [upstream("db", "1.0.0", T0), upstream("cache", "1.0.0", None)], Status.ALLOWED,
         "UpstreamSatisfied", None, ["cache", "db"]),
        # An error on one upstream fails closed unless another upstream matches.
        (ON_CHANNEL, [upstream("db", "1.0.0")], Status.DENIED, "EvaluationError", None, None),
        (ON_CHANNEL, [upstream("db", "1.0.0"), upstream("cache", "1.0.0", channel="beta")], Status.DENIED,
         "EvaluationError", None, None),
        (ON_CHANNEL, [upstream("db", "1.0.0"), upstream("cache", "1.0.0", T0 + HOUR, channel="stable")],
         Status.ALLOWED, "UpstreamSatisfied", T0 + HOUR, ["cache"]),
        (SCHEMA_23, [upstream("db", "latest")], Status.DENIED, "EvaluationError", None, None),
    ],
)  # fmt: skip
def test_deployment_dependency(
    expression: str, facts: list[UpstreamFact], status: Status, reason: str, satisfied_at: datetime | None,
    satisfied_by: list[str] | None,
) -> None:  # fmt: skip
    verdict = evaluate(DeploymentDependencySpec(depends_on=expression), upstream=facts, now=T0 + 2 * HOUR)
    assert (verdict.status, verdict.reason) == (status, reason)
    assert (verdict.satisfied_at, verdict.next_check_at) == (satisfied_at, None)
    assert verdict.details.get("satisfiedBy") == satisfied_by
    assert verdict.details["expression"] == expression


def test_the_details_explain_each_upstream() -> None:
    facts = [
        upstream("db", "1.0.0"),
        upstream("cache", "1.0.0", T0 + HOUR, channel="stable"),
        upstream("q", None, None),
    ]
    verdict = evaluate(DeploymentDependencySpec(depends_on=ON_CHANNEL), upstream=facts, now=T0 + 2 * HOUR)
    assert verdict.message == "satisfied by cache"
    assert verdict.details["upstreams"] == [
        {"deploymentId": "d-cache", "deploymentName": "cache", "versionId": "cache-1.0.0",
         "versionTag": "1.0.0", "deployedAt": "2026-03-02T15:00:00Z", "matched": True},
        {"deploymentId": "d-db", "deploymentName": "db", "versionId": "db-1.0.0", "versionTag": "1.0.0",
         "deployedAt": "2026-03-02T14:00:00Z", "matched": False,
         "error": "no such member in mapping: 'channel'"},
        {"deploymentId": "d-q", "deploymentName": "q", "versionId": None, "versionTag": None,
         "deployedAt": None, "matched": False},
    ]  # fmt: skip


def test_an_evaluation_error_is_the_message() -> None:
    verdict = evaluate(
        DeploymentDependencySpec(depends_on=ON_CHANNEL), upstream=[upstream("db", "1")], now=T0
    )
    assert verdict.message == "no such member in mapping: 'channel'"


def test_a_deploy_after_now_does_not_count_yet() -> None:
    # Asked about the past: the upstream deploy had not happened yet, and the verdict changes when it does.
    spec = DeploymentDependencySpec(depends_on=SCHEMA_23)
    facts = [upstream("db", "2.3.0", T0 + HOUR)]
    before = evaluate(spec, upstream=facts, now=T0)
    assert (before.status, before.next_check_at) == (Status.PENDING, T0 + HOUR)
    at = evaluate(spec, upstream=facts, now=T0 + HOUR)
    assert (at.status, at.satisfied_at, at.next_check_at) == (Status.ALLOWED, T0 + HOUR, None)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"dependsOn": "version.tag =="}, "invalid CEL at line 1, column"),
        ({"dependsOn": "resource.kind == 'x'"}, "line 1, column 1: undeclared reference to 'resource'"),
        ({"dependsOn": "true", "other": 1}, "Extra inputs"),
        ({}, "Field required"),
    ],
)
def test_invalid_specs_are_rejected(fields: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        DeploymentDependencySpec.model_validate(fields)


def test_camel_case_round_trip() -> None:
    spec = DeploymentDependencySpec.model_validate({"dependsOn": SCHEMA_23})
    assert spec.model_dump(by_alias=True) == {"dependsOn": SCHEMA_23}
    assert DeploymentDependencySpec.model_validate(spec.model_dump(by_alias=True)) == spec
