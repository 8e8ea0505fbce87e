"""Release-target derivation: which (resource, environment, deployment) triples exist.

A triple exists iff the environment and deployment share a system, the resource matches the
environment's selector (absent or empty: matches nothing) and the deployment's selector (absent or
empty: matches everything). Pure: callers hand in compiled selectors and resource documents and
apply the returned sets. Every function here scopes its work to what a change can affect, so a
resource change costs one evaluation per selector and a selector change one per resource; the CEL
programs memoise by projection, so resources that look alike to a selector cost a dictionary lookup.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from controller.cel import Doc, Program

log = logging.getLogger(__name__)

Triple = tuple[str, str, str]  # (resource_id, environment_id, deployment_id)
RESOURCE_VARIABLES = frozenset({"resource"})


@dataclass(frozen=True)
class Scope:
    """An environment or a deployment, as far as derivation cares."""

    id: str
    system_id: str
    selector: Program | None


def _matches(selector: Program, resource_id: str, resource: Doc) -> bool:
    outcome = selector.match({"resource": resource})
    if outcome.error is not None:
        log.debug("selector did not match", extra={"resource": resource_id, "error": outcome.error})
    return outcome.matched


def environment_matches(env: Scope, resource_id: str, resource: Doc) -> bool:
    return env.selector is not None and _matches(env.selector, resource_id, resource)


def deployment_matches(dep: Scope, resource_id: str, resource: Doc) -> bool:
    return dep.selector is None or _matches(dep.selector, resource_id, resource)


def group_by_system(scopes: Iterable[Scope]) -> dict[str, list[Scope]]:
    grouped: dict[str, list[Scope]] = {}
    for scope in scopes:
        grouped.setdefault(scope.system_id, []).append(scope)
    return grouped


def targets_for_resource(
    resource_id: str,
    resource: Doc,
    environments: Sequence[Scope],
    deployments_by_system: Mapping[str, Sequence[Scope]],
) -> set[Triple]:
    found: set[Triple] = set()
    matched_deployments: dict[str, list[str]] = {}
    for env in environments:
        if not environment_matches(env, resource_id, resource):
            continue
        if env.system_id not in matched_deployments:
            matched_deployments[env.system_id] = [
                dep.id
                for dep in deployments_by_system.get(env.system_id, ())
                if deployment_matches(dep, resource_id, resource)
            ]
        found.update((resource_id, env.id, dep_id) for dep_id in matched_deployments[env.system_id])
    return found


def targets_for_environment(
    env: Scope, resources: Iterable[tuple[str, Doc]], deployments: Sequence[Scope]
) -> set[Triple]:
    """``deployments`` are those of the environment's system."""
    found: set[Triple] = set()
    if env.selector is None or not deployments:
        return found
    for resource_id, resource in resources:
        if environment_matches(env, resource_id, resource):
            found.update(
                (resource_id, env.id, dep.id)
                for dep in deployments
                if deployment_matches(dep, resource_id, resource)
            )
    return found


def targets_for_deployment(
    dep: Scope, resources: Iterable[tuple[str, Doc]], environments: Sequence[Scope]
) -> set[Triple]:
    """``environments`` are those of the deployment's system."""
    found: set[Triple] = set()
    live = [env for env in environments if env.selector is not None]
    if not live:
        return found
    for resource_id, resource in resources:
        if deployment_matches(dep, resource_id, resource):
            found.update(
                (resource_id, env.id, dep.id) for env in live if environment_matches(env, resource_id, resource)
            )
    return found


def derive_all(
    resources: Iterable[tuple[str, Doc]], environments: Sequence[Scope], deployments: Sequence[Scope]
) -> set[Triple]:
    by_system = group_by_system(deployments)
    found: set[Triple] = set()
    for resource_id, resource in resources:
        found |= targets_for_resource(resource_id, resource, environments, by_system)
    return found
