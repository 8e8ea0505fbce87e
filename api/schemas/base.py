"""Shared schema base classes and field types.

Every request body forbids unknown fields and rejects NUL characters, lone surrogates and
non-finite numbers anywhere inside it: PostgreSQL cannot store the first, UTF-8 cannot encode the
second, JSON cannot carry the third, and each must be a 422 naming the field, never a 500 at write
time (or, worse, at every later read of the stored value).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Generic, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from controller.cel import CelSyntaxError, compile_expression
from controller.cel.engine import nesting
from controller.targets import RESOURCE_VARIABLES

Name = Annotated[str, StringConstraints(min_length=1, max_length=255, strip_whitespace=True)]
Slug = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$")]
Text = Annotated[str, StringConstraints(max_length=4096)]
Selector = Annotated[str, StringConstraints(max_length=16384)]
Metadata = dict[
    Annotated[str, StringConstraints(min_length=1, max_length=255)], Annotated[str, StringConstraints(max_length=4096)]
]
JsonObject = dict[str, Any]
MAX_DEPTH = 32
_SURROGATE = re.compile("[\ud800-\udfff]")


def _utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise PydanticCustomError("datetime_range", "must fall within years 1 to 9999 in UTC") from None


# Stored and compared in UTC: an instant that only exists in another offset (0001-01-01T00:00+14:00)
# is out of range, not a 500 when the database driver converts it.
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_utc)]


def _compiles_within_limits(source: str) -> str:
    """Names an expression that is too complex with its own error type (``cel_too_complex``), before
    the store compiles it (``controller.cel`` refuses it too, as a plain syntax error). Ordinary
    syntax errors are left to the store, which reports line and column; the compiled program is
    cached, so the store's own compile costs nothing."""
    if nesting(source) > MAX_DEPTH:
        message = "expression nests brackets deeper than {max} levels"
        raise PydanticCustomError("cel_too_complex", message, {"max": MAX_DEPTH})
    if source.strip():
        try:
            compile_expression(source, RESOURCE_VARIABLES)
        except CelSyntaxError:
            pass
        except (RecursionError, SyntaxError, MemoryError):
            raise PydanticCustomError(
                "cel_too_complex", "expression is too deeply nested to compile; use a list and `in` for long chains"
            ) from None
    return source


ResourceSelector = Annotated[Selector, AfterValidator(_compiles_within_limits)]


class Schema(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Body(Schema):
    """Base of request bodies."""

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        _check_storable(data, ())
        return data


def _check_storable(value: Any, path: tuple[str | int, ...]) -> None:
    where = ".".join(map(str, path)) or "body"
    if len(path) > MAX_DEPTH:
        raise PydanticCustomError(
            "too_deep", "{where}: nested deeper than {max} levels", {"where": where, "max": MAX_DEPTH}
        )
    if isinstance(value, str) and "\x00" in value:
        raise PydanticCustomError("nul_character", "{where}: NUL characters are not allowed", {"where": where})
    if isinstance(value, str) and not value.isascii() and _SURROGATE.search(value):
        raise PydanticCustomError("invalid_unicode", "{where}: lone surrogates are not valid text", {"where": where})
    if isinstance(value, float) and not math.isfinite(value):
        raise PydanticCustomError("non_finite", "{where}: numbers must be finite", {"where": where})
    if isinstance(value, dict):
        for key, item in value.items():
            _check_storable(key, (*path, "<key>"))
            _check_storable(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_storable(item, (*path, index))


class Patch(Body):
    """Base of PATCH bodies: only the fields sent change, and ``null`` only where a field may be absent."""

    NULLABLE: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _no_null_for_required(self) -> Patch:
        for name in self.model_fields_set:
            if getattr(self, name) is None and name not in self.NULLABLE:
                raise PydanticCustomError("null", "{field}: may not be null", {"field": to_camel(name)})
        return self

    def changes(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)


class Public(Schema):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")
    id: str
    created_at: datetime
    updated_at: datetime


ItemT = TypeVar("ItemT")


class Page(BaseModel, Generic[ItemT]):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)
    items: list[ItemT]
    next_cursor: str | None = Field(default=None)
