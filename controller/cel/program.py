"""``Program`` and ``compile_expression``: the public face of a compiled expression.

Why it exists: callers want one object per expression that evaluates, matches and tests, whatever
happens inside. A Program is a single memoised celpy program, or, for a top-level ``&&``/``||``
chain, a :class:`~controller.cel.connective.Chain` of memoised operands; both give exactly the
outcome celpy gives for the whole expression. ``memo=False`` evaluates the whole expression with
celpy every time, which is the reference the others are tested against.

What it must not do: raise for an evaluation problem from ``match``/``test`` (selectors fail
closed), or return a value from ``evaluate`` when evaluation failed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any, Protocol

from controller.cel.analysis import CelSyntaxError, operands
from controller.cel.connective import Chain, Operand
from controller.cel.engine import Compiled, build, build_part
from controller.cel.escapes import guards
from controller.cel.memo import Memoised
from controller.cel.outcome import CelEvaluationError, Match, Outcome
from controller.cel.values import Doc, to_python


class _Plan(Protocol):
    @property
    def evaluations(self) -> int: ...

    def outcome(self, activation: Mapping[str, Doc]) -> Outcome: ...


class Program:
    """A compiled expression. Outcomes are memoised by the values at the paths it reads."""

    def __init__(self, source: str, variables: Iterable[str] = (), *, memo: bool = True) -> None:
        allowed = frozenset(variables)
        whole = build(source, allowed)
        self.source = source
        self.paths = whole.paths
        self.variables = frozenset(path[0] for path in self.paths)
        chain = _chain(source, whole, allowed) if memo else None
        self._plan: _Plan = chain if chain is not None else Memoised(whole, memo=memo)

    @property
    def evaluations(self) -> int:
        """celpy runs so far (memo misses), over all operands."""
        return self._plan.evaluations

    def evaluate(self, activation: Mapping[str, Doc]) -> Any:
        outcome = self._plan.outcome(activation)
        if outcome.error is not None:
            raise CelEvaluationError(outcome.error)
        return to_python(outcome.value)

    def match(self, activation: Mapping[str, Doc]) -> Match:
        return self._plan.outcome(activation).match

    def test(self, activation: Mapping[str, Doc]) -> bool:
        return self._plan.outcome(activation).match.matched

    def __repr__(self) -> str:
        return f"Program({self.source!r}, variables={sorted(self.variables)})"


def _chain(source: str, whole: Compiled, allowed: frozenset[str]) -> Chain | None:
    """The top-level ``&&``/``||`` chain of ``whole``, each operand compiled on its own."""
    found = operands(whole.tree)
    if found is None:
        return None
    connective, nodes = found
    parts = []
    for index, node in enumerate(nodes):
        compiled = build_part(source, node, allowed)
        parts.append(Operand(index, Memoised(compiled), guards(compiled.tree, allowed)))
    return Chain(connective, parts, Memoised(whole))


def compile_expression(source: str, variables: frozenset[str] | Iterable[str]) -> Program:
    """Compile ``source``, whose free identifiers must be among ``variables``. Cached: the same
    (source, variables) gives the same Program. Raises CelSyntaxError."""
    if isinstance(variables, str):  # frozenset("resource") would allow single letters
        raise TypeError("variables must be a collection of names, not a string")
    return _compile(source, frozenset(variables))


@lru_cache(maxsize=1024)
def _compile(source: str, variables: frozenset[str]) -> Program:
    return Program(source, variables)


def checked(source: str, variables: frozenset[str] | Iterable[str]) -> str:
    """``source`` if it compiles, else a ValueError for a pydantic field validator. Raised while
    handling the CelSyntaxError, which stays its ``__context__`` (``controller.policy`` reads the
    line and column from it)."""
    try:
        compile_expression(source, variables)
    except CelSyntaxError as exc:
        raise ValueError(exc.described) from None
    return source
