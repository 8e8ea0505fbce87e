"""Values crossing the CEL boundary: documents in, Python out, and frozen forms for memo keys.

Why it exists: celpy has its own value types and rules that JSON-like documents do not follow.
Integral floats become ints (celpy refuses to compare int with double, and ``3.0`` from JSON
means 3); ints beyond int64 become doubles; aware ``datetime`` becomes a UTC CEL timestamp and
``timedelta`` a CEL duration. Results go back as plain Python. A *frozen* value is a hashable form
of a document value such that equal frozen forms mean values celpy cannot tell apart, which is
what makes the projection memo exact.

What it must not do: evaluate anything, or mutate a document. A :class:`Doc` caches its converted
value, so its ``data`` must not change after it is built.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final, cast

from celpy import celtypes
from celpy.adapter import json_to_cel

from controller.cel.semver import SemVer

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


def to_python(value: Any) -> Any:
    """A CEL result as plain Python."""
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
        return [to_python(item) for item in value]
    if isinstance(value, celtypes.MapType):
        return {to_python(key): to_python(item) for key, item in value.items()}
    if isinstance(value, celtypes.TimestampType):
        return datetime.combine(value.date(), value.timetz())
    if isinstance(value, celtypes.DurationType):
        return timedelta(days=value.days, seconds=value.seconds, microseconds=value.microseconds)
    if isinstance(value, celtypes.BytesType):
        return bytes(value)
    if isinstance(value, SemVer):
        return str(value)
    if isinstance(value, type):  # type(x) yields a celtypes class
        return next((name for kind, name in TYPE_NAMES if kind is value), value.__name__)
    return value


TYPE_NAMES: Final[tuple[tuple[type, str], ...]] = (
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


def type_name(value: Any) -> str:
    """The CEL name of a value's type, for messages."""
    return next((name for kind, name in TYPE_NAMES if isinstance(value, kind)), type(value).__name__)


# Markers that make frozen values unambiguous: True == 1 in Python but not in CEL.
_MAP, _LIST, _BOOL, _TIME, _SPAN = (object() for _ in range(5))
MISSING: Final = object()
_NOT_A_MAP: Final = object()
ABSENT: Final = (MISSING, -1)  # the activation lacks the root variable


def freeze(value: Any) -> Hashable:
    """A hashable form with: equal forms <=> equal CEL values (as far as celpy can observe)."""
    kind = type(value)  # exact-type fast paths first: this runs for every memo lookup
    if kind is str or value is None:
        return cast(Hashable, value)
    if kind is int or kind is float:
        return _number(value)
    if kind is dict:  # insertion order kept: map() and filter() observe it
        return (_MAP, tuple([(k if type(k) is str else freeze(k), freeze(v)) for k, v in value.items()]))
    return _freeze_other(value)


def _freeze_other(value: Any) -> Hashable:
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bool):
        return (_BOOL, bool(value))
    if isinstance(value, (int, float)):
        return _number(value)
    if isinstance(value, Mapping):
        return (_MAP, tuple((freeze(key), freeze(item)) for key, item in value.items()))
    if isinstance(value, (list, tuple)):
        return (_LIST, tuple([freeze(item) for item in value]))
    if isinstance(value, datetime):
        return (_TIME, value)  # aware datetimes compare by instant; conversion makes them UTC
    if isinstance(value, timedelta):
        return (_SPAN, value)
    raise TypeError(f"cannot convert {type(value).__name__} to CEL")


def walk(value: Any, tail: tuple[str, ...]) -> Hashable:
    """The frozen value at ``tail`` below ``value``, or where and why the walk stopped."""
    for depth, step in enumerate(tail):
        if type(value) is not dict and not isinstance(value, Mapping):
            return (_NOT_A_MAP, depth, freeze(value))
        value = value.get(step, MISSING)
        if value is MISSING:
            return (MISSING, depth)
    return freeze(value)


class Doc:
    """A JSON-like entity document (dict) plus its lazily converted CEL value, cached on the object.
    Build one per entity revision and reuse it for every evaluation; do not mutate ``data``."""

    __slots__ = ("_cel", "_frozen", "data")

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data
        self._cel: celtypes.MapType | None = None
        self._frozen: Hashable = MISSING

    @property
    def cel(self) -> celtypes.MapType:
        if self._cel is None:
            self._cel = cast(celtypes.MapType, json_to_cel(_plain(self.data)))
        return self._cel

    @property
    def frozen(self) -> Hashable:
        """The whole document as a memo key, for expressions that read it whole."""
        if self._frozen is MISSING:
            self._frozen = freeze(self.data)
        return self._frozen

    def __repr__(self) -> str:
        return f"Doc({self.data!r})"
