"""What an evaluation produced: the public ``Match`` and ``CelEvaluationError``, and the internal
``Outcome`` that the memo stores.

Why it exists: celpy reports failures in several shapes (a raised wrapper around a CEL error, a
Python exception that escaped celpy's own checks, an error left inside a list or map) with
messages full of type reprs. This module turns each into one short message, and keeps celpy's
raw value so that ``&&`` and ``||`` can be folded exactly as celpy folds them.

What it must not do: run celpy or hold on to tracebacks. Errors are stored as fresh
``CELEvalError`` copies, so a memo of outcomes does not keep evaluation frames (and the documents
they reference) alive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from celpy import celtypes
from celpy.evaluation import CELEvalError

from controller.cel.values import TYPE_NAMES, type_name


class CelEvaluationError(Exception):
    """Evaluating a program failed: a missing key, a type mismatch, an invalid version..."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class Match:
    matched: bool
    error: str | None = None


_TIDY: Final = (
    (re.compile(r" <class '[^']*'>"), ""),
    (re.compile(r"\b(?:String|Int|Uint|Double|Bool)Type\(('[^']*'|\"[^\"]*\"|[^()]*)\)"), r"\1"),
)


def _escaped(error: CELEvalError) -> bool:
    """Did a Python exception escape celpy's checks and abort the whole evaluation?"""
    args = error.args
    return len(args) == 3 and args[0] == "evaluation error" and args[1] is not CELEvalError


def describe(error: CELEvalError) -> str:
    args = error.args
    if len(args) == 3 and args[0] == "evaluation error":  # the wrapper Transpiler.evaluate adds
        if args[1] is not CELEvalError:  # a Python error escaped celpy's own checks
            return _describe_python_error(args[1], str(args[2][0] if args[2] else ""))
        args = args[2]
    message = str(args[0]) if args else "evaluation error"
    detail = args[2][0] if len(args) == 3 and isinstance(args[2], tuple) and args[2] else None
    if isinstance(detail, str) and detail.startswith(message):
        message = detail
    for pattern, replacement in _TIDY:
        message = pattern.sub(replacement, message)
    return message


def _describe_python_error(kind: type, text: str) -> str:
    selected = re.fullmatch(r"'(\w+)' object has no attribute 'get'", text)
    if kind is AttributeError and selected:  # ``x.field`` where x is not a map
        names = {cls.__name__: name for cls, name in TYPE_NAMES}
        return f"no such field: cannot select a field of a {names.get(selected[1], selected[1])} value"
    return f"{kind.__name__}: {text}"


def _first_error(value: Any) -> CELEvalError | None:
    """celpy can leave errors inside a list or map result instead of raising them."""
    if isinstance(value, CELEvalError):
        return value
    items = value.values() if isinstance(value, celtypes.MapType) else value
    if isinstance(value, (celtypes.ListType, celtypes.MapType)):
        return next((e for e in map(_first_error, items) if e is not None), None)
    return None


@dataclass(frozen=True, slots=True)
class Outcome:
    """celpy's raw ``value`` (a ``CELEvalError`` on failure) and what it means to a caller."""

    value: Any
    error: str | None
    match: Match
    # The value as celpy's && and || see it: True/False for a CEL BoolType, None for anything else.
    # celpy's has() returns a Python bool, which they treat as a non-bool (a match all the same).
    truth: bool | None
    escaped: bool = False  # the failure aborted the whole evaluation, not just this value

    @classmethod
    def of(cls, value: Any) -> Outcome:
        """The outcome of a value celpy returned."""
        error = _first_error(value)
        if error is not None:
            return cls.failed(error)
        if isinstance(value, (bool, celtypes.BoolType)):
            # A Python bool can only come from ``has()``, which engine.py makes a CEL bool inside
            # expressions; standing alone as a chain operand it is the same truth value.
            return cls(value, None, Match(bool(value)), bool(value))
        return cls(value, None, Match(False, f"expression returned {type_name(value)}, not bool"), None)

    @classmethod
    def failed(cls, error: CELEvalError) -> Outcome:
        """The outcome of an error celpy raised or left in its result."""
        message = describe(error)
        return cls(CELEvalError(*error.args), message, Match(False, message), None, _escaped(error))
