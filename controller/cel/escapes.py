"""Proving that an operand would not abort the whole expression, so it may be left unevaluated.

Why it exists: CEL's ``&&`` and ``||`` absorb errors (``false && error`` is false), and celpy
implements that for the errors it catches. A few Python exceptions escape its checks instead and
abort the *whole* expression, whatever the other operands are: selecting a field of a non-map
(``x.f`` or ``has(x.f)`` where x is a string), a string method on a non-string, ``timestamp()`` of
an unparseable string. To report exactly what celpy reports, a chain of operands may skip an
operand only if it can prove the operand would not abort. This module derives, at compile time,
the checks on the input (:class:`Guard`) that prove it.

What it must not do: guess. Only the constructs listed here are provable, each checked against
celpy 0.5 over odd values of every type; anything else (macros, ``matches``, ``timestamp``,
selecting a field of a computed value...) makes an operand unprovable, and an unprovable operand is
always evaluated when its value could matter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import lark

from controller.cel.analysis import Node, Step, arguments, static_chain, string_literal, token, tree
from controller.cel.values import MISSING, Doc

# Functions that never abort, whatever their arguments (given arguments that do not).
_TOTAL: Final = frozenset(
    {"size", "int", "uint", "double", "string", "bytes", "bool", "type", "dyn", "duration"}
    | {"semver", "compare", "semverCompare"}
)
# Functions that abort unless their receiver (first argument) is a string.
_ON_TEXT: Final = frozenset({"startsWith", "endsWith", "contains"})


@dataclass(frozen=True, slots=True)
class Guard:
    """Walking ``steps`` from ``root`` selects no field of a non-map and, if ``text``, ends at a
    string (or stops early at a missing key, which is an ordinary CEL error)."""

    root: str
    steps: tuple[Step, ...]
    text: bool

    def holds(self, activation: Mapping[str, Doc]) -> bool:
        doc = activation.get(self.root)
        if doc is None:
            return True  # an absent variable is an ordinary error
        value: Any = doc.data
        for key, dotted in self.steps:
            if type(value) is not dict and not isinstance(value, Mapping):
                return not dotted  # ``x['k']`` on a non-map is an ordinary error; ``x.k`` aborts
            value = value.get(key, MISSING)
            if value is MISSING:
                return True
        return not self.text or isinstance(value, str)


def guards(node: Node, roots: frozenset[str]) -> tuple[Guard, ...] | None:
    """The guards under which evaluating ``node`` cannot abort; None if that is not provable."""
    found: list[Guard] = []
    return tuple(found) if _collect(node, roots, found) else None


def _collect(node: Node, roots: frozenset[str], found: list[Guard]) -> bool:
    chain = static_chain(node)
    if chain is not None:
        return _chain(chain, roots, found, text=False)
    if node.data in ("member_dot", "member_object"):  # a field of a computed value; a message
        return False
    if node.data == "member_dot_arg":
        return _call(str(token(node, 1)), [tree(node, 0), *arguments(node, 2)], roots, found)
    if node.data in ("ident_arg", "dot_ident_arg"):
        return _call(str(token(node, 0)), arguments(node, 1), roots, found)
    return all(_collect(child, roots, found) for child in node.children if isinstance(child, lark.Tree))


def _chain(
    chain: tuple[lark.Token, tuple[Step, ...]], roots: frozenset[str], found: list[Guard], *, text: bool
) -> bool:
    name, steps = str(chain[0]), chain[1]
    if not text and not any(dotted for _, dotted in steps):
        return True  # a bare name, or indexing only: nothing to select a field from
    if name not in roots:
        return False
    found.append(Guard(name, steps, text))
    return True


def _call(name: str, args: list[Node], roots: frozenset[str], found: list[Guard]) -> bool:
    if name == "has":
        chain = static_chain(args[0]) if len(args) == 1 else None
        return chain is not None and _chain(chain, roots, found, text=False)
    if name in _ON_TEXT and args:
        receiver, rest = args[0], args[1:]
        chain = static_chain(receiver)
        proven = string_literal(receiver) is not None or (
            chain is not None and _chain(chain, roots, found, text=True)
        )
        return proven and all(_collect(arg, roots, found) for arg in rest)
    return name in _TOTAL and all(_collect(arg, roots, found) for arg in args)
