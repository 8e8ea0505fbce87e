"""celpy access: one environment, one lock, compiling source to a runner and running it.

Why it exists: celpy's compiled programs pass the activation through a module global, so every
evaluation must hold one lock; celpy's parser is a process-wide singleton that someone else may
switch to another tree class; and celpy logs each failed evaluation as an ERROR. This module is
the only place that deals with any of that.

What it must not do: cache or memoise (see :mod:`controller.cel.memo`), or read a clock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import celpy
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

    source: str
    runner: celpy.Runner
    tree: Node
    paths: tuple[Path, ...]


def build(source: str, allowed: frozenset[str]) -> Compiled:
    """Parse, check and compile ``source``, whose free identifiers must be among ``allowed``.
    Raises CelSyntaxError."""
    if not source.strip():
        raise CelSyntaxError(source, 1, 1, "empty expression")
    with LOCK:
        environment = _celpy()
        try:
            tree = environment.compile(source)
        except CELParseError as error:
            message = _parse_message(error)
            raise CelSyntaxError(source, error.line or 1, error.column or 1, message) from None
        reader = Reader(source, allowed)
        reader.visit(tree, frozenset())
        try:
            runner = environment.program(tree, functions=FUNCTIONS)
        except (CELSyntaxError, CELUnsupportedError) as error:  # the transpiler's own checks
            raise CelSyntaxError(source, error.line or 1, error.column or 1, str(error.args[0])) from None
        return Compiled(source, runner, tree, essential(reader.paths))


def run(runner: celpy.Runner, context: Mapping[str, Any]) -> Outcome:
    """One celpy evaluation, under the lock."""
    with LOCK:
        try:
            value = runner.evaluate(context)
        except CELEvalError as error:
            return Outcome.failed(error)
    return Outcome.of(value)
