"""The custom CEL functions: ``semver``, ``compare`` and ``semverCompare``.

Why it exists: SPEC §2 asks for SemVer comparison inside CEL. ``semver(a).compare(b)`` returns -1,
0 or 1 by SemVer 2.0 precedence; ``semverCompare(a, b)`` is the same as a plain function, and
``semver(a) < semver(b)`` works too. An invalid version is an evaluation error.

How celpy reaches them: the CompiledRunner transpiles a method call ``x.f(y)`` into a call of the
*function* named ``f`` with the receiver first, ``f(x, y)``, resolved when the program is built. It
names functions in the generated Python as ``{__module__}.{__qualname__}`` and runs that code in the
namespace of ``celpy.evaluation``, where this package is not importable. Each function is therefore
given the dotted name ``activation.functions['f']``: ``activation`` is in scope in every generated
lambda and ``functions`` is the table passed to ``Environment.program``.

What it must not do: raise. A failure is *returned* as a ``CELEvalError``, because celpy turns a
raised ``ValueError`` into "return error for overflow" and lets other exceptions abort the whole
expression.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from celpy import celtypes
from celpy.evaluation import CELEvalError, CELFunction

from controller.cel.semver import SemVer
from controller.cel.values import type_name


def _failure(message: str) -> CELEvalError:
    return CELEvalError(message, ValueError, (message,))


def _semver(value: Any) -> Any:
    if isinstance(value, (SemVer, CELEvalError)):
        return value
    if not isinstance(value, str):
        return _failure(f"semver() expects a string, got {type_name(value)}")
    try:
        return SemVer.parse(str(value))
    except ValueError as error:
        return _failure(str(error))


def _compare(receiver: Any, other: Any) -> Any:
    if not isinstance(receiver, SemVer):
        return (
            receiver if isinstance(receiver, CELEvalError) else _failure("compare() applies to semver(...)")
        )
    right = _semver(other)
    return right if isinstance(right, CELEvalError) else celtypes.IntType(receiver.compare(right))


def _semver_compare(left: Any, right: Any) -> Any:
    return _compare(_semver(left), right)


def _reachable(name: str, function: Callable[..., Any]) -> CELFunction:
    """Give ``function`` the name under which celpy's generated code can call it (see module doc)."""

    def call(*args: Any) -> Any:
        return function(*args)

    call.__module__ = "activation"
    call.__qualname__ = f"functions[{name!r}]"
    return call


FUNCTIONS: Final[dict[str, CELFunction]] = {
    "semver": _reachable("semver", _semver),
    "compare": _reachable("compare", _compare),
    "semverCompare": _reachable("semverCompare", _semver_compare),
}
