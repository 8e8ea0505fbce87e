"""Policies as the core sees them: parsing and validating rules, and merging matched policies.

A rule object holds exactly one rule-type key, plus optional ``id`` and ``enforcement``. Every
rule's spec is validated when it is written (CEL compiled, rrule and timezone parsed, ranges
checked), so the loop never meets a rule it cannot evaluate. Ctrlplane's rule bookkeeping fields
(``policyId``, ``createdAt``) are accepted and dropped, so its policy files load unchanged.

Merging (SPEC §3): every rule of every matched policy is a gate (AND), except single-behaviour
types, where only the rule of the highest-priority policy applies (ties: policy name ascending),
and effects (``verification``), which every matched policy contributes but which gate nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ValidationError

from controller.cel import CelSyntaxError, Program, compile_expression
from controller.errors import Invalid, Problem
from controller.ids import new_id
from controller.rules.registry import RULE_TYPES

POLICY_VARIABLES = frozenset({"environment", "resource", "deployment"})
IGNORED_RULE_FIELDS = frozenset({"policyId", "createdAt"})
MAX_RULES = 100


class Enforcement(StrEnum):
    BLOCK = "block"
    WARN = "warn"


@dataclass(frozen=True)
class Rule:
    id: str
    type: str
    enforcement: Enforcement
    spec: BaseModel

    def document(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "enforcement": self.enforcement.value,
            self.type: self.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
        }


@dataclass(frozen=True)
class Policy:
    id: str
    name: str
    revision: int
    priority: int
    enabled: bool
    selector: Program
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class AppliedRule:
    policy: Policy
    rule: Rule


@dataclass(frozen=True)
class Merged:
    gates: tuple[AppliedRule, ...]
    singles: Mapping[str, AppliedRule]
    overridden: tuple[AppliedRule, ...] = field(default=())
    effects: tuple[AppliedRule, ...] = field(default=())  # rules that act after a deploy, never gate one


def compile_selector(source: str, loc: tuple[str | int, ...] = ("body", "selector")) -> Program:
    try:
        return compile_expression(source, POLICY_VARIABLES)
    except CelSyntaxError as exc:
        raise Invalid.one(
            loc,
            exc.described,
            "cel_syntax",
            expression=source,
            line=exc.line,
            column=exc.column,
        ) from None


def parse_rules(raw: Sequence[Any], loc: tuple[str | int, ...] = ("body", "rules")) -> tuple[Rule, ...]:
    if len(raw) > MAX_RULES:
        raise Invalid.one(loc, f"at most {MAX_RULES} rules per policy")
    problems: list[Problem] = []
    rules: list[Rule] = []
    for index, item in enumerate(raw):
        try:
            rules.append(parse_rule(item, (*loc, index)))
        except Invalid as exc:
            problems.extend(exc.problems)
    if problems:
        raise Invalid(problems)
    ids = [rule.id for rule in rules]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise Invalid.one(loc, f"rule ids must be unique within a policy: {', '.join(duplicates)}")
    return tuple(rules)


def parse_rule(item: Any, loc: tuple[str | int, ...]) -> Rule:
    if not isinstance(item, Mapping):
        raise Invalid.one(loc, "a rule must be an object holding one rule-type key")
    keys = [k for k in item if k not in ("id", "enforcement") and k not in IGNORED_RULE_FIELDS]
    known = ", ".join(RULE_TYPES)
    if len(keys) != 1:
        found = ", ".join(map(str, keys)) or "none"
        raise Invalid.one(loc, f"a rule holds exactly one rule-type key (found: {found}; known: {known})")
    key = keys[0]
    if key not in RULE_TYPES:
        raise Invalid.one((*loc, key), f"unknown rule type {key!r} (known: {known})", "unknown_rule_type")
    enforcement = item.get("enforcement", Enforcement.BLOCK.value)
    if enforcement not in {e.value for e in Enforcement}:
        raise Invalid.one((*loc, "enforcement"), "must be 'block' or 'warn'")
    if RULE_TYPES[key].effect and enforcement != Enforcement.BLOCK.value:
        raise Invalid.one((*loc, "enforcement"), f"{key} gates nothing, so it has no 'warn' mode")
    rule_id = item.get("id") or new_id()
    if not isinstance(rule_id, str) or len(rule_id) > 128:
        raise Invalid.one((*loc, "id"), "must be a string of at most 128 characters")
    body = item[key]
    if not isinstance(body, Mapping):
        raise Invalid.one((*loc, key), "must be an object")
    try:
        spec = RULE_TYPES[key].spec.model_validate(body)
    except ValidationError as exc:
        raise Invalid([_spec_problem((*loc, key, *e["loc"]), e) for e in exc.errors(include_url=False)]) from None
    return Rule(rule_id, key, Enforcement(enforcement), spec)


def _spec_problem(loc: tuple[str | int, ...], error: Any) -> Problem:
    """A spec field's error; invalid CEL keeps its expression, line and column, as for the selector
    (SPEC §2). The rule validators raise their ValueError while handling the CelSyntaxError, so
    that is the exception's context."""
    syntax = getattr(error.get("ctx", {}).get("error"), "__context__", None)
    if isinstance(syntax, CelSyntaxError):
        ctx = {"expression": syntax.expression, "line": syntax.line, "column": syntax.column}
        return Problem(loc, syntax.described, "cel_syntax", ctx)
    return Problem(loc, error["msg"], error["type"])


def policy_order(policy: Policy) -> tuple[int, str]:
    """Highest priority first; ties by name ascending."""
    return (-policy.priority, policy.name)


def merge(policies: Iterable[Policy]) -> Merged:
    gates: list[AppliedRule] = []
    singles: dict[str, AppliedRule] = {}
    overridden: list[AppliedRule] = []
    effects: list[AppliedRule] = []
    for policy in sorted(policies, key=policy_order):
        for rule in policy.rules:
            applied = AppliedRule(policy, rule)
            if RULE_TYPES[rule.type].effect:
                effects.append(applied)
            elif not RULE_TYPES[rule.type].single:
                gates.append(applied)
            elif rule.type in singles:
                overridden.append(applied)
            else:
                singles[rule.type] = applied
    return Merged(tuple(gates), singles, tuple(overridden), tuple(effects))
