"""CEL for Releasegate: the one module through which every expression is compiled and evaluated.

Why it exists: selectors, ``versionSelector``/``condition`` rules and verification conditions are
all CEL. Keeping celpy behind one door gives one set of semantics (number normalisation, timestamps,
what a missing key means), one place to cache compiled programs, and one place to fix celpy quirks.

What it must not do: touch a database, read a clock, or know about HTTP. It is pure, given its
inputs. ``Program.match`` never raises for an evaluation problem: a missing key, a type mismatch
or a non-boolean result is ``Match(False, error=...)``, so selectors fail closed and the reason can
be recorded.

Conversion. Entity documents are JSON-like dicts. Integral floats become ints (celpy refuses to
compare int with double, and ``3.0`` from JSON means 3); aware ``datetime`` becomes a UTC CEL
timestamp; ``timedelta`` a CEL duration. Wrap each entity revision in a :class:`Doc` once and reuse
it: the CEL value is converted lazily and cached on the Doc.

SemVer. ``semver(a).compare(b)`` returns -1, 0 or 1 by SemVer 2.0 precedence (pre-releases ranked,
build metadata ignored, a leading ``v`` accepted); ``semverCompare(a, b)`` is the same as a plain
function, and ``semver(a) < semver(b)`` works too. An invalid version is an evaluation error.
celpy's CompiledRunner transpiles a method call ``x.f(y)`` into a call of the *function* named
``f`` with the receiver first, ``f(x, y)``, resolved when the program is built. It names functions
in the generated Python as ``{__module__}.{__qualname__}`` and runs that code in the namespace of
``celpy.evaluation``, where our module is not importable. Each custom function is therefore given
the dotted name ``activation.functions['f']``: ``activation`` is in scope in every generated lambda
and ``functions`` is the table passed to ``Environment.program``.

Speed. One celpy evaluation costs 100-250 us. A ``Program`` therefore memoises outcomes by
*projection*: at compile time it computes the static paths the expression reads (``resource.kind``
-> ``("resource", "kind")``; a path stops at the first dynamic step, and a bare root reads the whole
document); the memo key for an activation is the tuple of the values found at those paths. Equal
keys imply that celpy sees equal inputs, so the cached outcome (error included) is exactly what
celpy would return. Selectors that read only ``environment`` never see the resource.

Threads. celpy's compiled programs pass the activation through a module global, so evaluations
are serialised by a lock. Memo hits do not take it.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache, total_ordering
from typing import Any, Final, cast

import celpy
import lark
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError, CELParser
from celpy.evaluation import (
    Activation,
    CELEvalError,
    CELFunction,
    CELSyntaxError,
    CELUnsupportedError,
    TranspilerTree,
    base_functions,
    celstr,
)
from lark.exceptions import UnexpectedCharacters, UnexpectedToken

# ---------------------------------------------------------------------------------------------
# Errors and results


class CelSyntaxError(ValueError):
    """The expression cannot be compiled. ``line`` and ``column`` are 1-based."""

    def __init__(self, expression: str, line: int, column: int, message: str) -> None:
        super().__init__(f"{message} (line {line}, column {column})")
        self.expression = expression
        self.line = line
        self.column = column
        self.message = message


class CelEvaluationError(Exception):
    """Evaluating a program failed: a missing key, a type mismatch, an invalid version..."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class Match:
    matched: bool
    error: str | None = None


# ---------------------------------------------------------------------------------------------
# SemVer 2.0

_IDENT = r"(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)"
_SEMVER = re.compile(
    rf"v?(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    rf"(?:-({_IDENT}(?:\.{_IDENT})*))?(?:\+[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*)?"
)
Precedence = tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]


@total_ordering
@dataclass(frozen=True, eq=False)
class SemVer:
    """A parsed version; equality and ordering are SemVer precedence (build metadata ignored)."""

    text: str
    precedence: Precedence

    @classmethod
    def parse(cls, text: str) -> SemVer:
        found = _SEMVER.fullmatch(text)
        if found is None:
            raise ValueError(f"invalid semantic version {text!r}")
        major, minor, patch, pre = found.groups()
        if pre is None:  # a release ranks above all of its pre-releases
            return cls(text, (int(major), int(minor), int(patch), 1, ()))
        ids = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
        return cls(text, (int(major), int(minor), int(patch), 0, ids))

    def compare(self, other: SemVer) -> int:
        return (self.precedence > other.precedence) - (self.precedence < other.precedence)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SemVer) and self.precedence == other.precedence

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, SemVer):
            return NotImplemented
        return self.precedence < other.precedence

    def __hash__(self) -> int:
        return hash(self.precedence)

    def __str__(self) -> str:
        return self.text


def _failure(message: str) -> CELEvalError:
    # Returned, not raised: celpy turns raised ValueErrors into "return error for overflow".
    return CELEvalError(message, ValueError, (message,))


def _semver(value: Any) -> Any:
    if isinstance(value, (SemVer, CELEvalError)):
        return value
    if not isinstance(value, str):
        return _failure(f"semver() expects a string, got {_type_name(value)}")
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


_FUNCTIONS: Final[dict[str, CELFunction]] = {
    "semver": _reachable("semver", _semver),
    "compare": _reachable("compare", _compare),
    "semverCompare": _reachable("semverCompare", _semver_compare),
}

# ---------------------------------------------------------------------------------------------
# Conversion between documents and CEL values

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1


def _number(value: float) -> int | float:
    """The number celpy will see: integral floats as ints; ints beyond int64 as doubles."""
    if not _INT64_MIN <= value <= _INT64_MAX:
        return float(value)
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _plain(value: Any) -> Any:
    """Normalise ``value`` into the JSON-like shapes ``celpy.json_to_cel`` accepts."""
    if value is None or isinstance(value, (str, bool, timedelta)):
        return value
    if isinstance(value, (int, float)):
        return _number(value)
    if isinstance(value, Mapping):
        return {_plain(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise TypeError(f"naive datetime {value!r} in a CEL document; use aware UTC")
        return value.astimezone(UTC)
    raise TypeError(f"cannot convert {type(value).__name__} to CEL")


def _to_python(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, celtypes.BoolType):
        return bool(value)
    if isinstance(value, (celtypes.IntType, celtypes.UintType)):
        return int(value)
    if isinstance(value, celtypes.DoubleType):
        return float(value)
    if isinstance(value, celtypes.StringType):
        return str(value)
    if isinstance(value, celtypes.ListType):
        return [_to_python(item) for item in value]
    if isinstance(value, celtypes.MapType):
        return {_to_python(key): _to_python(item) for key, item in value.items()}
    if isinstance(value, celtypes.TimestampType):
        return datetime.combine(value.date(), value.timetz())
    if isinstance(value, celtypes.DurationType):
        return timedelta(days=value.days, seconds=value.seconds, microseconds=value.microseconds)
    if isinstance(value, celtypes.BytesType):
        return bytes(value)
    if isinstance(value, SemVer):
        return str(value)
    if isinstance(value, type):  # type(x) yields a celtypes class
        return next((name for kind, name in _TYPE_NAMES if kind is value), value.__name__)
    return value


_TYPE_NAMES: Final[tuple[tuple[type, str], ...]] = (
    (bool, "bool"),
    (celtypes.BoolType, "bool"),
    (celtypes.UintType, "uint"),
    (celtypes.IntType, "int"),
    (celtypes.DoubleType, "double"),
    (celtypes.StringType, "string"),
    (celtypes.BytesType, "bytes"),
    (celtypes.ListType, "list"),
    (celtypes.MapType, "map"),
    (celtypes.TimestampType, "timestamp"),
    (celtypes.DurationType, "duration"),
    (SemVer, "semver"),
    (type(None), "null"),
)


def _type_name(value: Any) -> str:
    return next((name for kind, name in _TYPE_NAMES if isinstance(value, kind)), type(value).__name__)


# Markers that make frozen values unambiguous: True == 1 in Python but not in CEL.
_MAP, _LIST, _BOOL, _TIME, _SPAN = (object() for _ in range(5))
_MISSING, _NOT_A_MAP = object(), object()
_ABSENT: Final = (_MISSING, -1)  # the activation lacks the root variable


def _freeze(value: Any) -> Hashable:
    """A hashable form with: equal forms <=> equal CEL values (as far as celpy can observe)."""
    kind = type(value)  # exact-type fast paths first: this runs for every memo lookup
    if kind is str or value is None:
        return cast(Hashable, value)
    if kind is int or kind is float:
        return _number(value)
    if kind is dict:  # insertion order kept: map() and filter() observe it
        return (_MAP, tuple([(k if type(k) is str else _freeze(k), _freeze(v)) for k, v in value.items()]))
    return _freeze_other(value)


def _freeze_other(value: Any) -> Hashable:
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bool):
        return (_BOOL, bool(value))
    if isinstance(value, (int, float)):
        return _number(value)
    if isinstance(value, Mapping):
        return (_MAP, tuple((_freeze(key), _freeze(item)) for key, item in value.items()))
    if isinstance(value, (list, tuple)):
        return (_LIST, tuple([_freeze(item) for item in value]))
    if isinstance(value, datetime):
        return (_TIME, value)  # aware datetimes compare by instant; conversion makes them UTC
    if isinstance(value, timedelta):
        return (_SPAN, value)
    raise TypeError(f"cannot convert {type(value).__name__} to CEL")


def _walk(value: Any, tail: tuple[str, ...]) -> Hashable:
    """The frozen value at ``tail`` below ``value``, or where and why the walk stopped."""
    for depth, step in enumerate(tail):
        if type(value) is not dict and not isinstance(value, Mapping):
            return (_NOT_A_MAP, depth, _freeze(value))
        value = value.get(step, _MISSING)
        if value is _MISSING:
            return (_MISSING, depth)
    return _freeze(value)


class Doc:
    """A JSON-like entity document (dict) plus its lazily converted CEL value, cached on the object.
    Build one per entity revision and reuse it for every evaluation; do not mutate ``data``."""

    __slots__ = ("_cel", "_frozen", "data")

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data
        self._cel: celtypes.MapType | None = None
        self._frozen: Hashable = _MISSING

    @property
    def cel(self) -> celtypes.MapType:
        if self._cel is None:
            self._cel = cast(celtypes.MapType, json_to_cel(_plain(self.data)))
        return self._cel

    @property
    def frozen(self) -> Hashable:
        """The whole document as a memo key, for expressions that read it whole."""
        if self._frozen is _MISSING:
            self._frozen = _freeze(self.data)
        return self._frozen

    def __repr__(self) -> str:
        return f"Doc({self.data!r})"


# ---------------------------------------------------------------------------------------------
# Compile-time reading: identifiers and the static paths read from each root variable

_MACROS: Final = frozenset({"all", "exists", "exists_one", "map", "filter"})
_UNIMPLEMENTED_MACROS: Final = frozenset({"reduce", "min"})  # celpy parses them, cannot run them
_FUNCTION_NAMES: Final = frozenset(base_functions) | frozenset(_FUNCTIONS) | {"has", "dyn"}
_TYPE_IDENTS: Final = frozenset(
    {"bool", "bytes", "double", "duration", "int", "list", "map", "null_type", "string", "timestamp", "uint"}
)
# celpy reads a variable ``x`` as the Python attribute ``activation.x``.
_SHADOWED_BY_CELPY: Final = frozenset(dir(Activation)) | {"identifiers", "functions", "package"}
_WRAPPERS: Final = frozenset(
    {"expr", "conditionalor", "conditionaland", "relation", "addition", "multiplication", "unary", "member"}
    | {"primary", "paren_expr"}
)
Node = lark.Tree[lark.Token]
Path = tuple[str, ...]


def _tree(node: Node, index: int) -> Node:
    return cast(Node, node.children[index])


def _token(node: Node, index: int) -> lark.Token:
    return cast(lark.Token, node.children[index])


def _arguments(node: Node, index: int) -> list[Node]:
    """The expressions of an optional ``exprlist`` child."""
    return cast(list[Node], _tree(node, index).children) if len(node.children) > index else []


def _unwrap(node: Node) -> Node:
    """Skip the single-child precedence levels that lark keeps around every sub-expression."""
    while node.data in _WRAPPERS and len(node.children) == 1 and isinstance(node.children[0], lark.Tree):
        node = _tree(node, 0)
    return node


def _string_literal(node: Node) -> str | None:
    node = _unwrap(node)
    if node.data != "literal" or _token(node, 0).type not in ("STRING_LIT", "MLSTRING_LIT"):
        return None
    return str(celstr(_token(node, 0)))


def _static_chain(node: Node) -> tuple[lark.Token, Path] | None:
    """``a.b['c'].d`` -> (token a, ("b", "c", "d")); None if any step is not static."""
    keys: list[str] = []
    node = _unwrap(node)
    while True:
        if node.data == "member_dot":
            keys.append(str(node.children[1]))
        elif node.data == "member_index":
            key = _string_literal(_tree(node, 1))
            if key is None:
                return None
            keys.append(key)
        elif node.data in ("ident", "dot_ident"):
            return _token(node, 0), tuple(reversed(keys))
        else:
            return None
        node = _unwrap(_tree(node, 0))


class _Reader:
    """Checks every identifier against the allowed roots and collects the paths read from them."""

    def __init__(self, source: str, allowed: frozenset[str]) -> None:
        self.source = source
        self.allowed = allowed
        self.paths: set[Path] = set()

    def visit(self, node: Node, bound: frozenset[str]) -> None:
        chain = _static_chain(node)
        if chain is not None:
            self._reference(*chain, bound)
        elif node.data == "member_dot_arg":
            self._method(node, bound)
        elif node.data in ("ident_arg", "dot_ident_arg"):
            self._function(node, bound)
        else:
            for child in node.children:
                if isinstance(child, lark.Tree):
                    self.visit(child, bound)

    def _reference(self, token: lark.Token, keys: Path, bound: frozenset[str]) -> None:
        name = str(token)
        if name in self.allowed and name not in bound:
            self.paths.add((name, *keys))
        elif name not in bound and not (name in _TYPE_IDENTS and not keys):
            allowed = ", ".join(sorted(self.allowed)) or "none"
            raise self._error(token, f"undeclared reference to '{name}' (allowed: {allowed})")

    def _method(self, node: Node, bound: frozenset[str]) -> None:
        token, args = _token(node, 1), _arguments(node, 2)
        name = str(token)
        if name in _UNIMPLEMENTED_MACROS:
            raise self._error(token, f"the '{name}' macro is not supported")
        if name not in _MACROS and name not in _FUNCTION_NAMES:
            raise self._error(token, f"unknown function '{name}'")
        self.visit(_tree(node, 0), bound)
        if name in _MACROS:
            variable = self._bind_variable(token, args)
            self.visit(args[1], bound | {variable})
        else:
            for arg in args:
                self.visit(arg, bound)

    def _function(self, node: Node, bound: frozenset[str]) -> None:
        token, args = _token(node, 0), _arguments(node, 1)
        name = str(token)
        if name not in _FUNCTION_NAMES:
            raise self._error(token, f"unknown function '{name}'")
        if name in ("has", "dyn") and len(args) != 1:
            raise self._error(token, f"{name}() takes exactly one argument")
        for arg in args:
            self.visit(arg, bound)

    def _bind_variable(self, token: lark.Token, args: list[Node]) -> str:
        variable = _unwrap(args[0]) if len(args) == 2 else None
        if variable is None or variable.data != "ident":
            raise self._error(token, f"{token}() takes a variable name and an expression")
        name = _token(variable, 0)
        if name in _SHADOWED_BY_CELPY or name.startswith("__"):
            raise self._error(name, f"'{name}' cannot be used as a variable name")
        return str(name)

    def _error(self, token: lark.Token, message: str) -> CelSyntaxError:
        return CelSyntaxError(self.source, token.line or 1, token.column or 1, message)


def _essential(paths: set[Path]) -> tuple[Path, ...]:
    """Drop paths that extend another: the shorter one's value already decides them."""
    kept = [p for p in paths if not any(q != p and p[: len(q)] == q for q in paths)]
    return tuple(sorted(kept))


# ---------------------------------------------------------------------------------------------
# celpy access: one environment, one lock

_LOCK = threading.RLock()
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


def _build(source: str, allowed: frozenset[str]) -> tuple[celpy.Runner, tuple[Path, ...]]:
    if not source.strip():
        raise CelSyntaxError(source, 1, 1, "empty expression")
    with _LOCK:
        environment = _celpy()
        try:
            tree = environment.compile(source)
        except CELParseError as error:
            message = _parse_message(error)
            raise CelSyntaxError(source, error.line or 1, error.column or 1, message) from None
        reader = _Reader(source, allowed)
        reader.visit(tree, frozenset())
        try:
            runner = environment.program(tree, functions=_FUNCTIONS)
        except (CELSyntaxError, CELUnsupportedError) as error:  # the transpiler's own checks
            raise CelSyntaxError(source, error.line or 1, error.column or 1, str(error.args[0])) from None
        return runner, _essential(reader.paths)


# ---------------------------------------------------------------------------------------------
# Programs

_MEMO_LIMIT: Final = 100_000
_TIDY = (
    (re.compile(r" <class '[^']*'>"), ""),
    (re.compile(r"\b(?:String|Int|Uint|Double|Bool)Type\(('[^']*'|\"[^\"]*\"|[^()]*)\)"), r"\1"),
)


def _describe(error: CELEvalError) -> str:
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
        names = {cls.__name__: name for cls, name in _TYPE_NAMES}
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
class _Outcome:
    value: Any
    error: str | None
    match: Match

    @classmethod
    def of(cls, value: Any) -> _Outcome:
        error = _first_error(value)
        if error is not None:
            return cls.failed(_describe(error))
        if isinstance(value, (bool, celtypes.BoolType)):
            return cls(value, None, Match(bool(value)))
        return cls(value, None, Match(False, f"expression returned {_type_name(value)}, not bool"))

    @classmethod
    def failed(cls, message: str) -> _Outcome:
        return cls(None, message, Match(False, message))


class Program:
    """A compiled expression. Outcomes are memoised by the values at the paths it reads."""

    def __init__(self, source: str, variables: Iterable[str] = (), *, memo: bool = True) -> None:
        self._runner, self.paths = _build(source, frozenset(variables))
        self.source = source
        self.variables = frozenset(path[0] for path in self.paths)
        self._projection = tuple((path[0], path[1:]) for path in self.paths)
        self.evaluations = 0  # celpy runs, i.e. memo misses
        self._memo: dict[Hashable, _Outcome] | None = {} if memo else None

    def evaluate(self, activation: Mapping[str, Doc]) -> Any:
        outcome = self._outcome(activation)
        if outcome.error is not None:
            raise CelEvaluationError(outcome.error)
        return _to_python(outcome.value)

    def match(self, activation: Mapping[str, Doc]) -> Match:
        return self._outcome(activation).match

    def test(self, activation: Mapping[str, Doc]) -> bool:
        return self._outcome(activation).match.matched

    def _outcome(self, activation: Mapping[str, Doc]) -> _Outcome:
        memo = self._memo
        if memo is None:
            return self._run(activation)
        key = self._key(activation)
        outcome = memo.get(key)
        if outcome is None:
            outcome = self._run(activation)
            if len(memo) >= _MEMO_LIMIT:
                memo.clear()
            memo[key] = outcome
        return outcome

    def _key(self, activation: Mapping[str, Doc]) -> Hashable:
        key: list[Hashable] = []
        for root, tail in self._projection:
            doc = activation.get(root)
            if doc is None:
                key.append(_ABSENT)
            else:
                key.append(_walk(doc.data, tail) if tail else doc.frozen)
        return tuple(key)

    def _run(self, activation: Mapping[str, Doc]) -> _Outcome:
        context = {name: activation[name].cel for name in self.variables if name in activation}
        self.evaluations += 1
        with _LOCK:
            try:
                value = self._runner.evaluate(context)
            except CELEvalError as error:
                return _Outcome.failed(_describe(error))
        return _Outcome.of(value)

    def __repr__(self) -> str:
        return f"Program({self.source!r}, variables={sorted(self.variables)})"


def compile_expression(source: str, variables: frozenset[str] | Iterable[str]) -> Program:
    """Compile ``source``, whose free identifiers must be among ``variables``. Cached: the same
    (source, variables) gives the same Program. Raises CelSyntaxError."""
    if isinstance(variables, str):  # frozenset("resource") would allow single letters
        raise TypeError("variables must be a collection of names, not a string")
    return _compile(source, frozenset(variables))


@lru_cache(maxsize=1024)
def _compile(source: str, variables: frozenset[str]) -> Program:
    return Program(source, variables)
