"""``deploymentDependency``: deploy here only once another deployment on the same resource runs a
suitable version ("the API needs schema ≥ 2.3 from the database deployment").

Why it exists: deployments that share a resource are often ordered. The engine passes one
:class:`UpstreamFact` per *other* deployment with a release target on this target's resource,
carrying that target's current version (the version of its latest successful job) and when that
job completed. The rule is allowed if the ``dependsOn`` expression, over the upstream's
``deployment`` and ``version``, holds for any of them.

Waiting is event-driven: the verdict changes when an upstream job succeeds, not with time, so a
pending verdict has no ``next_check_at``. The one exception is a fact stamped after ``now`` (a
decision asked about the past): that deploy had not happened yet at ``now``, so it does not count,
and its instant is when the verdict changes.

Must not: read a clock; count an upstream with no current version (it never matches); let a
deploy through when no upstream matches and the expression failed for one of them (that fails
closed as ``EvaluationError``, since the failing upstream might have been the one to match).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic.alias_generators import to_camel

from controller.cel import Doc, checked, compile_expression
from controller.rules.verdict import Verdict

VARIABLES = frozenset({"deployment", "version"})


class DeploymentDependencySpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True)

    depends_on: str

    @field_validator("depends_on")
    @classmethod
    def _compiles(cls, value: str) -> str:
        return checked(value, VARIABLES)


@dataclass(frozen=True)
class UpstreamFact:
    deployment: Doc
    version: Doc | None  # the upstream target's current version; None if it never succeeded
    deployed_at: datetime | None  # completion of the job that made ``version`` current


def evaluate(spec: DeploymentDependencySpec, *, upstream: Sequence[UpstreamFact], now: datetime) -> Verdict:
    program = compile_expression(spec.depends_on, VARIABLES)
    rows: list[dict[str, Any]] = []
    live: list[UpstreamFact] = []  # matching, deployed by ``now``
    later: list[datetime] = []  # matching, deployed after ``now``
    errors: list[str] = []
    for fact in sorted(upstream, key=_sort_key):
        row = _row(fact)
        rows.append(row)
        if fact.version is None:
            continue
        match = program.match({"deployment": fact.deployment, "version": fact.version})
        row["matched"] = match.matched
        if match.error is not None:
            row["error"] = match.error
            errors.append(match.error)
        elif match.matched and fact.deployed_at is not None and fact.deployed_at > now:
            later.append(fact.deployed_at)
        elif match.matched:
            live.append(fact)
    details: dict[str, Any] = {"expression": spec.depends_on, "upstreams": rows}
    if live:
        names = [_name(fact.deployment) for fact in live]
        details["satisfiedBy"] = names
        return Verdict.allowed(
            "UpstreamSatisfied",
            f"satisfied by {', '.join(names)}",
            details=details,
            satisfied_at=_since(live),
        )
    if errors:
        return Verdict.denied("EvaluationError", errors[0], details=details)
    message = f"no upstream deployment on this resource runs a version matching: {spec.depends_on}"
    return Verdict.pending(
        "AwaitingUpstream", message, details=details, next_check_at=min(later, default=None)
    )


def _since(live: Sequence[UpstreamFact]) -> datetime | None:
    """Earliest deploy among the matches; an unknown deploy time counts as "always"."""
    instants = [fact.deployed_at for fact in live]
    return None if any(at is None for at in instants) else min(at for at in instants if at is not None)


def _row(fact: UpstreamFact) -> dict[str, Any]:
    version = fact.version.data if fact.version is not None else {}
    return {
        "deploymentId": fact.deployment.data.get("id"),
        "deploymentName": _name(fact.deployment),
        "versionId": version.get("id"),
        "versionTag": version.get("tag"),
        "deployedAt": None if fact.deployed_at is None else _iso(fact.deployed_at),
        "matched": False,
    }


def _name(doc: Doc) -> str:
    return str(doc.data.get("name") or doc.data.get("slug") or doc.data.get("id") or "?")


def _sort_key(fact: UpstreamFact) -> tuple[str, str]:
    return _name(fact.deployment), str(fact.deployment.data.get("id", ""))


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")
