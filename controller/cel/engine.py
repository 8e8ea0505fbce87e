"""celpy access: one environment, one lock, compiling source to a runner and running it.

Why it exists: celpy's compiled programs pass the activation through a module global, so every
evaluation must hold one lock; celpy's parser is a process-wide singleton that someone else may
switch to another tree class; and celpy logs each failed evaluation as an ERROR. This module is
the only place that deals with any of that.

What it must not do: cache or memoise (see :mod:`controller.cel.memo`), or read a clock.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

import celpy
import lark
from celpy.celparser import CELParseError, CELParser
from celpy.evaluation import CELEvalError, CELSyntaxError, CELUnsupportedError, TranspilerTree
from lark.exceptions import UnexpectedCharacters, UnexpectedToken

from controller.cel.analysis import CelSyntaxError, Node, Path, Reader, essential
from controller.cel.functions import FUNCTIONS
from controller.cel.outcome import Outcome

LOCK = threading.RLock()
_environment: celpy.Environment | None = None


class _EvaluationErrorsAreOutcomes(logging.Filter):
    """celpy logs every failed evaluation, a missing key included, as an ERROR "Internal error".
    Here those are ordinary outcomes that Match/CelEvaluationError report, so drop just those."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Internal error")


def _celpy() -> celpy.Environment:
    """The shared environment, rebuilt if someone switched celpy's singleton parser to another
    tree class (the InterpretedRunner's), which the CompiledRunner cannot transpile."""
    global _environment
    parser = CELParser.CEL_PARSER
    if _environment is None or parser is None or parser.options.tree_class is not TranspilerTree:
        CELParser.CEL_PARSER = None
        _environment = celpy.Environment(runner_class=celpy.CompiledRunner)
        transpiler_log = logging.getLogger("celpy.Transpiler")
        if not any(isinstance(f, _EvaluationErrorsAreOutcomes) for f in transpiler_log.filters):
            transpiler_log.addFilter(_EvaluationErrorsAreOutcomes())
    return _environment


def _parse_message(error: CELParseError) -> str:
    cause = error.__context__
    if isinstance(cause, UnexpectedToken):
        return (
            "unexpected end of expression"
            if cause.token.type == "$END"
            else f"unexpected {str(cause.token)!r}"
        )
    if isinstance(cause, UnexpectedCharacters):
        return f"unexpected character {cause.char!r}"
    return str(cause or error).splitlines()[0]


@dataclass(frozen=True, slots=True)
class Compiled:
    """A checked expression: its celpy runner, its parse tree and the static paths it reads."""

    runner: celpy.Runner
    tree: Node
    paths: tuple[Path, ...]


MAX_NESTING = 32


def nesting(source: str) -> int:
    """How deep brackets nest outside string literals: one linear pass, no parsing."""
    depth = deepest = 0
    index = 0
    while index < len(source):
        char = source[index]
        if char in "'\"":
            quote = source[index : index + 3] if source[index : index + 3] in ("'''", '"""') else char
            index += len(quote)
            while index < len(source) and not source.startswith(quote, index):
                index += 2 if source[index] == "\\" else 1
            index += len(quote)
            continue
        if char in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in ")]}":
            depth -= 1
        index += 1
    return deepest


def _check_nesting(source: str) -> None:
    """Reject deep nesting before parsing: celpy's parse and transpile time grows quadratically
    with it (300 levels take seconds, under the global lock) and Python recursion gives out."""
    if nesting(source) > MAX_NESTING:
        raise CelSyntaxError(source, 1, 1, f"brackets nested deeper than {MAX_NESTING} levels")


def build(source: str, allowed: frozenset[str]) -> Compiled:
    """Parse, check and compile ``source``, whose free identifiers must be among ``allowed``.
    Raises CelSyntaxError, also for expressions too large for celpy to compile."""
    if not source.strip():
        raise CelSyntaxError(source, 1, 1, "empty expression")
    _check_nesting(source)
    with LOCK:
        try:
            tree = _celpy().compile(source)
            return _program(source, tree, allowed)
        except CELParseError as error:
            message = _parse_message(error)
            raise CelSyntaxError(source, error.line or 1, error.column or 1, message) from None
        except (RecursionError, SyntaxError, MemoryError):  # celpy's recursion, or Python's compile()
            raise CelSyntaxError(source, 1, 1, "expression too complex to compile; split it up") from None


def build_part(source: str, node: Node, allowed: frozenset[str]) -> Compiled:
    """Compile ``node``, a sub-expression of the already built ``source``, as a program of its own.
    From the tree, not from a slice of the source: lark leaves keyword literals (``true``) without
    positions. From a copy, because celpy's transpiler annotates the tree it compiles."""
    with LOCK:
        return _program(source, copy.deepcopy(node), allowed)


def _is_has(node: Any) -> TypeGuard[Node]:
    """A ``primary`` node that is a ``has(...)`` macro call."""
    if not (isinstance(node, lark.Tree) and node.data == "primary" and node.children):
        return False
    call = node.children[0]
    return (
        isinstance(call, lark.Tree)
        and call.data == "ident_arg"
        and isinstance(call.children[0], lark.Token)
        and call.children[0].value == "has"
    )


def _boolean_has(tree: Node) -> Node:
    """Make every ``has(x)`` a CEL bool: celpy 0.5 transpiles it to a Python bool, which ``!``, ``&&``
    and ``?:`` reject ("no such overload"), so ``!has(x)`` always failed. ``(has(x) == true)`` is the
    same test with a CEL result; the rewrite is on the tree, so positions in errors are unaffected."""
    template = _celpy().compile("(has(x) == true)")

    def wrapped(call: Node) -> Node:
        wrapper = copy.deepcopy(template)
        outer: Node = next(n for n in wrapper.iter_subtrees_topdown() if n.data == "primary")  # type: ignore[no-untyped-call]
        inner = next(n for n in outer.iter_subtrees() if _is_has(n))
        inner.children = call.children
        return outer

    if _is_has(tree):  # an operand of a chain may be the call itself
        return wrapped(tree)
    for node in list(tree.iter_subtrees()):
        for index, child in enumerate(node.children):
            if _is_has(child):
                node.children[index] = wrapped(child)
    return tree


def _program(source: str, tree: Node, allowed: frozenset[str]) -> Compiled:
    reader = Reader(source, allowed)
    reader.visit(tree, frozenset())
    try:
        runner = _celpy().program(_boolean_has(copy.deepcopy(tree)), functions=FUNCTIONS)
    except (CELSyntaxError, CELUnsupportedError) as error:  # the transpiler's own checks
        raise CelSyntaxError(source, error.line or 1, error.column or 1, str(error.args[0])) from None
    return Compiled(runner, tree, essential(reader.paths))


def run(runner: celpy.Runner, context: Mapping[str, Any]) -> Outcome:
    """One celpy evaluation, under the lock."""
    with LOCK:
        try:
            value = runner.evaluate(context)
        except CELEvalError as error:
            return Outcome.failed(error)
    return Outcome.of(value)
