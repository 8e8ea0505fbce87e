"""Compile-time reading of a parsed expression: name checks, static paths, top-level operands.

Why it exists: celpy accepts any identifier and reports an unknown one only when it is evaluated;
SPEC §2 wants every mistake reported when the expression is written, with a line and column. The
same walk collects the *static paths* an expression reads (``resource.metadata['tier']`` ->
``("resource", "metadata", "tier")``; a path stops at its first dynamic step, and a bare root reads
the whole document), which is what the projection memo keys on. :func:`operands` finds the
operands of a top-level ``&&`` or ``||`` chain, which are memoised one by one.

What it must not do: evaluate anything or know celpy's runtime. It reads lark trees only.
"""

from __future__ import annotations

from typing import Final, Literal, cast

import lark
from celpy.evaluation import Activation, base_functions, celstr

from controller.cel.functions import FUNCTIONS


class CelSyntaxError(ValueError):
    """The expression cannot be compiled. ``line`` and ``column`` are 1-based."""

    def __init__(self, expression: str, line: int, column: int, message: str) -> None:
        super().__init__(f"{message} (line {line}, column {column})")
        self.expression = expression
        self.line = line
        self.column = column
        self.message = message

    @property
    def described(self) -> str:
        """The one wording every 422 for invalid CEL uses."""
        return f"invalid CEL at line {self.line}, column {self.column}: {self.message}"


MACROS: Final = frozenset({"all", "exists", "exists_one", "map", "filter"})
_UNIMPLEMENTED_MACROS: Final = frozenset({"reduce", "min"})  # celpy parses them, cannot run them
_FUNCTION_NAMES: Final = frozenset(base_functions) | frozenset(FUNCTIONS) | {"has", "dyn"}
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
Step = tuple[str, bool]  # (key, selected with a dot); ``x['k']`` and ``x.k`` fail differently
Connective = Literal["&&", "||"]


def tree(node: Node, index: int) -> Node:
    return cast(Node, node.children[index])


def token(node: Node, index: int) -> lark.Token:
    return cast(lark.Token, node.children[index])


def arguments(node: Node, index: int) -> list[Node]:
    """The expressions of an optional ``exprlist`` child."""
    return cast(list[Node], tree(node, index).children) if len(node.children) > index else []


def unwrap(node: Node) -> Node:
    """Skip the single-child precedence levels that lark keeps around every sub-expression."""
    while node.data in _WRAPPERS and len(node.children) == 1 and isinstance(node.children[0], lark.Tree):
        node = tree(node, 0)
    return node


def string_literal(node: Node) -> str | None:
    node = unwrap(node)
    if node.data != "literal" or token(node, 0).type not in ("STRING_LIT", "MLSTRING_LIT"):
        return None
    return str(celstr(token(node, 0)))


def static_chain(node: Node) -> tuple[lark.Token, tuple[Step, ...]] | None:
    """``a.b['c'].d`` -> (token a, (("b", True), ("c", False), ("d", True))); None if a step is
    not static."""
    steps: list[Step] = []
    node = unwrap(node)
    while True:
        if node.data == "member_dot":
            steps.append((str(node.children[1]), True))
        elif node.data == "member_index":
            key = string_literal(tree(node, 1))
            if key is None:
                return None
            steps.append((key, False))
        elif node.data in ("ident", "dot_ident"):
            return token(node, 0), tuple(reversed(steps))
        else:
            return None
        node = unwrap(tree(node, 0))


class Reader:
    """Checks every identifier against the allowed roots and collects the paths read from them."""

    def __init__(self, source: str, allowed: frozenset[str]) -> None:
        self.source = source
        self.allowed = allowed
        self.paths: set[Path] = set()

    def visit(self, node: Node, bound: frozenset[str]) -> None:
        chain = static_chain(node)
        if chain is not None:
            self._reference(chain[0], tuple(key for key, _ in chain[1]), bound)
        elif node.data == "member_dot_arg":
            self._method(node, bound)
        elif node.data in ("ident_arg", "dot_ident_arg"):
            self._function(node, bound)
        else:
            for child in node.children:
                if isinstance(child, lark.Tree):
                    self.visit(child, bound)

    def _reference(self, name_token: lark.Token, keys: Path, bound: frozenset[str]) -> None:
        name = str(name_token)
        if name in self.allowed and name not in bound:
            self.paths.add((name, *keys))
        elif name not in bound and not (name in _TYPE_IDENTS and not keys):
            allowed = ", ".join(sorted(self.allowed)) or "none"
            raise self._error(name_token, f"undeclared reference to '{name}' (allowed: {allowed})")

    def _method(self, node: Node, bound: frozenset[str]) -> None:
        name_token, args = token(node, 1), arguments(node, 2)
        name = str(name_token)
        if name in _UNIMPLEMENTED_MACROS:
            raise self._error(name_token, f"the '{name}' macro is not supported")
        if name not in MACROS and name not in _FUNCTION_NAMES:
            raise self._error(name_token, f"unknown function '{name}'")
        self.visit(tree(node, 0), bound)
        if name in MACROS:
            variable = self._bind_variable(name_token, args)
            self.visit(args[1], bound | {variable})
        else:
            for arg in args:
                self.visit(arg, bound)

    def _function(self, node: Node, bound: frozenset[str]) -> None:
        name_token, args = token(node, 0), arguments(node, 1)
        name = str(name_token)
        if name not in _FUNCTION_NAMES:
            raise self._error(name_token, f"unknown function '{name}'")
        if name in ("has", "dyn") and len(args) != 1:
            raise self._error(name_token, f"{name}() takes exactly one argument")
        for arg in args:
            self.visit(arg, bound)

    def _bind_variable(self, name_token: lark.Token, args: list[Node]) -> str:
        variable = unwrap(args[0]) if len(args) == 2 else None
        if variable is None or variable.data != "ident":
            raise self._error(name_token, f"{name_token}() takes a variable name and an expression")
        name = token(variable, 0)
        if name in _SHADOWED_BY_CELPY or name.startswith("__"):
            raise self._error(name, f"'{name}' cannot be used as a variable name")
        return str(name)

    def _error(self, name_token: lark.Token, message: str) -> CelSyntaxError:
        return CelSyntaxError(self.source, name_token.line or 1, name_token.column or 1, message)


def essential(paths: set[Path]) -> tuple[Path, ...]:
    """Drop paths that extend another: the shorter one's value already decides them."""
    kept = [p for p in paths if not any(q != p and p[: len(q)] == q for q in paths)]
    return tuple(sorted(kept))


def operands(root: Node) -> tuple[Connective, tuple[Node, ...]] | None:
    """The operands of a top-level chain ``a && b && c`` (or of ``||``), in source order; None if
    the expression is not one. Only the left spine is flattened (``(a && b) && c`` too), so folding
    the operands left to right is exactly the tree celpy evaluates."""
    node = unwrap(root)
    rule = node.data
    if rule not in ("conditionaland", "conditionalor") or len(node.children) != 2:
        return None
    found: list[Node] = []
    while node.data == rule and len(node.children) == 2:
        found.append(tree(node, 1))
        node = unwrap(tree(node, 0))
    found.append(node)
    return ("&&" if rule == "conditionaland" else "||"), tuple(reversed(found))
