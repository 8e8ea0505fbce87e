"""Pure release-target derivation: the SPEC §1 rules, table-driven."""

from __future__ import annotations

import pytest

from controller.cel import Doc, compile_expression
from controller.targets import (
    RESOURCE_VARIABLES,
    Scope,
    derive_all,
    group_by_system,
    targets_for_deployment,
    targets_for_environment,
    targets_for_resource,
)


def scope(id: str, system: str, selector: str | None) -> Scope:
    return Scope(id, system, compile_expression(selector, RESOURCE_VARIABLES) if selector else None)


RESOURCES = {
    "a": Doc({"kind": "k8s", "metadata": {"tier": "prod", "region": "us"}}),
    "b": Doc({"kind": "vm", "metadata": {"tier": "prod"}}),
    "c": Doc({"kind": "k8s", "metadata": {"tier": "dev"}}),
    "d": Doc({"kind": "k8s", "metadata": {}}),  # no tier: selectors reading it do not match
}
ENVS = [
    scope("prod", "s1", "resource.metadata.tier == 'prod'"),
    scope("dev", "s1", "resource.metadata['tier'] == 'dev'"),
    scope("none", "s1", None),  # absent selector: matches no resources
    scope("other", "s2", "true"),
]
DEPS = [
    scope("api", "s1", "resource.kind == 'k8s'"),
    scope("all", "s1", None),  # absent selector: every resource of the system's environments
    scope("foreign", "s2", "resource.metadata.region == 'us'"),
]


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        ("a", {("a", "prod", "api"), ("a", "prod", "all"), ("a", "other", "foreign")}),
        ("b", {("b", "prod", "all")}),
        ("c", {("c", "dev", "api"), ("c", "dev", "all")}),
        ("d", set()),
    ],
)
def test_targets_for_resource(resource: str, expected: set[tuple[str, str, str]]) -> None:
    assert targets_for_resource(resource, RESOURCES[resource], ENVS, group_by_system(DEPS)) == expected


def test_scoped_derivations_agree_with_derive_all() -> None:
    everything = derive_all(RESOURCES.items(), ENVS, DEPS)
    by_env = set().union(
        *(targets_for_environment(e, RESOURCES.items(), [d for d in DEPS if d.system_id == e.system_id]) for e in ENVS)
    )
    by_dep = set().union(
        *(targets_for_deployment(d, RESOURCES.items(), [e for e in ENVS if e.system_id == d.system_id]) for d in DEPS)
    )
    assert everything == by_env == by_dep
    assert len(everything) == 6


def test_environment_without_deployments_has_no_targets() -> None:
    assert targets_for_environment(ENVS[0], RESOURCES.items(), []) == set()
