"""Domain errors: what went wrong, in terms of the product, never of HTTP.

    ReleasegateError
    ├── NotFound        an addressed entity does not exist
    ├── Conflict        a uniqueness or state rule would be broken
    ├── Invalid         input is malformed; carries one or more (location, message) problems
    └── Forbidden       the caller may not do this to this entity

``api/errors.py`` maps each to an HTTP status in one place. Evaluation problems are not errors: rules
turn them into ``denied`` verdicts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Location = tuple[str | int, ...]


class ReleasegateError(Exception):
    """Base of every error the domain raises on purpose."""


class NotFound(ReleasegateError):
    def __init__(self, entity: str, key: str) -> None:
        super().__init__(f"{entity} {key!r} not found")
        self.entity = entity
        self.key = key


@dataclass(frozen=True)
class Problem:
    loc: Location
    msg: str
    type: str = "value_error"
    ctx: Mapping[str, Any] = field(default_factory=dict)


class Conflict(ReleasegateError):
    def __init__(self, loc: Location, msg: str) -> None:
        super().__init__(msg)
        self.problem = Problem(loc, msg, "conflict")


class Invalid(ReleasegateError):
    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, p.loc))}: {p.msg}" for p in problems))
        self.problems = tuple(problems)

    @classmethod
    def one(cls, loc: Location, msg: str, type: str = "value_error", **ctx: Any) -> Invalid:
        return cls([Problem(loc, msg, type, ctx)])


class Forbidden(ReleasegateError):
    pass
