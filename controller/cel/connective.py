"""A top-level ``&&`` or ``||`` chain, evaluated operand by operand, cheapest first.

Why it exists: the projection memo never hits for an expression that reads a field unique to each
resource (``resource.name.startsWith('k8s-')``), even when a cheap operand (``resource.metadata.tier
== 'prod'``) alone already decides the result. So each operand of a top-level chain is its own
memoised program, and the chain stops as soon as its result is decided.

Semantics, identical to celpy evaluating the whole expression. celpy evaluates every operand and
folds them left to right with ``logical_and`` / ``logical_or``, which are commutative in errors.
Hence, for ``&&`` (``||`` is the dual, with true for false):

- if an operand *aborts* (a Python exception escaped celpy's checks, see
  :mod:`controller.cel.escapes`), the result is the error of the leftmost operand that aborts;
- otherwise, if any operand is false, the result is false (even if others are errors); "false"
  is a CEL bool here: celpy's ``has()`` returns a Python bool, which the fold treats as a non-bool;
- otherwise it is the fold of all operand values: true if all are true, else the error (or
  non-bool value, or "no such overload" when two operands are neither true nor false).

Order: the chain's outcomes are first memoised by the whole expression's projection, as for any
program, so expressions whose inputs repeat cost one lookup. On a miss, every operand's own memo is
looked up (a lookup is cheap), then celpy runs on the operands still needed, those with the fewest
memo misses so far first (an operand that reads a unique field misses every time and sinks to the
end). A known deciding value settles the chain only if every operand not yet evaluated is proven
not to abort.

What it must not do: skip an operand that could abort, or report a different error than celpy.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from celpy.evaluation import CELEvalError

from controller.cel.analysis import Connective
from controller.cel.escapes import Guard
from controller.cel.memo import Memoised
from controller.cel.outcome import Outcome
from controller.cel.values import Doc

# What celpy's logical_and/logical_or raise for two non-bools, as its result() wrapper reports it.
_NO_OVERLOAD: Final = Outcome.failed(CELEvalError("no such overload", TypeError, ("neither operand is a bool",)))


@dataclass(frozen=True, slots=True)
class Operand:
    index: int  # position in the source: it decides which error is reported
    program: Memoised
    guards: tuple[Guard, ...] | None  # None: not provably free of aborts

    def cannot_abort(self, activation: Mapping[str, Doc]) -> bool:
        return self.guards is not None and all(guard.holds(activation) for guard in self.guards)


Pending = tuple[Operand, Hashable]  # an operand whose memo missed, and its key


class Chain:
    """``a && b && ...`` (or ``||``) over memoised operands, in source order."""

    def __init__(self, connective: Connective, operands: Sequence[Operand], whole: Memoised) -> None:
        self.connective = connective
        self.operands = tuple(operands)
        self._whole = whole  # never run: it memoises the chain's outcomes by the whole projection
        self._decisive = connective == "||"  # the operand value that decides the chain
        self._order = self.operands

    @property
    def evaluations(self) -> int:
        return sum(operand.program.evaluations for operand in self.operands)

    def outcome(self, activation: Mapping[str, Doc]) -> Outcome:
        key = self._whole.key(activation)
        outcome = self._whole.cached(key)
        if outcome is None:
            outcome = self._short_circuit(activation)
            self._whole.remember(key, outcome)
        return outcome

    def _short_circuit(self, activation: Mapping[str, Doc]) -> Outcome:
        known: dict[int, Outcome] = {}
        pending: list[Pending] = []
        for operand in self._order:
            key = operand.program.key(activation)
            outcome = operand.program.cached(key)
            if outcome is None:
                pending.append((operand, key))
            else:
                known[operand.index] = outcome
        while True:
            decided = self._decide(known, pending, activation)
            if isinstance(decided, Outcome):
                return decided
            pending.remove(decided)
            operand, key = decided
            known[operand.index] = operand.program.run(activation, key)
            self._order = tuple(sorted(self.operands, key=lambda o: (o.program.evaluations, o.index)))

    def _decide(
        self, known: dict[int, Outcome], pending: list[Pending], activation: Mapping[str, Doc]
    ) -> Outcome | Pending:
        """The chain's outcome, or the pending operand that it waits for."""
        aborted = [index for index, outcome in known.items() if outcome.escaped]
        if aborted:
            first = min(aborted)
            before = [p for p in pending if p[0].index < first]
            return _unless_aborting(known[first], before, activation)
        decisive = next((o for o in known.values() if o.truth is self._decisive), None)
        if decisive is not None:
            return _unless_aborting(decisive, pending, activation)
        if pending:
            return pending[0]
        return self._folded([known[index] for index in range(len(self.operands))])

    def _folded(self, outcomes: list[Outcome]) -> Outcome:
        folded = outcomes[0]
        for outcome in outcomes[1:]:
            folded = self._step(folded, outcome)
        return folded

    def _step(self, left: Outcome, right: Outcome) -> Outcome:
        """celpy's ``logical_and(left, right)`` (or ``logical_or``), restated on outcomes: it looks
        only at whether each value is a CEL bool and which, and two non-bools are an error."""
        decisive = self._decisive
        if left.truth is None and right.truth is None:
            return _NO_OVERLOAD
        if left.truth is decisive or right.truth is decisive:
            return left if left.truth is decisive else right
        return left if left.truth is None else right  # the other one is the neutral bool


def _unless_aborting(decided: Outcome, pending: list[Pending], activation: Mapping[str, Doc]) -> Outcome | Pending:
    """``decided``, unless a pending operand might abort and must be evaluated first."""
    return next((p for p in pending if not p[0].cannot_abort(activation)), decided)
