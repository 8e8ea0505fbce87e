"""Small generic helpers every store module shares: lookup by id or unique name, paging, audit.

Audit rows are written in the same transaction as the change they describe, so the log can never
disagree with the data.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Select, insert
from sqlmodel import Session, SQLModel, select

from controller.auth import Principal
from controller.errors import Conflict, Invalid, Location, NotFound
from controller.ids import looks_like_id
from controller.store.tables import AuditRow

RowT = TypeVar("RowT", bound=SQLModel)

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100


def get_row(
    session: Session, row_type: type[RowT], key: str, entity: str, *, name_field: str | None = None
) -> RowT:
    """By id, or by the entity's unique name where it has one."""
    if "\x00" in key:  # no stored id or name holds NUL, and PostgreSQL refuses it in a query
        raise NotFound(entity, key.replace("\x00", "\\x00"))
    row = session.get(row_type, key) if looks_like_id(key) else None
    if row is None and name_field is not None:
        column = getattr(row_type, name_field)
        row = session.exec(select(row_type).where(column == key)).first()
    if row is None:
        raise NotFound(entity, key)
    return row


def require_unique(
    session: Session, row_type: type[RowT], loc: Location, *conditions: Any, exclude_id: str | None = None
) -> None:
    stmt = select(row_type).where(*conditions)
    if exclude_id is not None:
        stmt = stmt.where(row_type.id != exclude_id)  # type: ignore[attr-defined]
    if session.exec(stmt).first() is not None:
        raise Conflict(loc, f"{loc[-1]} is already taken")


@dataclass(frozen=True)
class Page:
    items: Sequence[Any]
    next_cursor: str | None


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = base64.urlsafe_b64decode(padded.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        raise Invalid.one(("query", "cursor"), "malformed cursor") from None
    if not looks_like_id(value):
        raise Invalid.one(("query", "cursor"), "malformed cursor")
    return value


def page(session: Session, stmt: Select[Any], id_column: Any, limit: int, cursor: str | None) -> Page:
    """Keyset pagination on the (time-ordered) id column."""
    if cursor:
        stmt = stmt.where(id_column > decode_cursor(cursor))
    rows = list(session.exec(stmt.order_by(id_column).limit(limit + 1)).all())  # type: ignore[call-overload]
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor(rows[-1].id) if more else None)


def entry(
    actor: Principal,
    at: datetime,
    action: str,
    entity_type: str,
    entity_id: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "at": at,
        "actor": actor.name,
        "actor_role": actor.role.value,
        "action": action,
        "entity_type": entity_type,
        "entity_id": entity_id,
        "before": jsonable(before),
        "after": jsonable(after),
    }


def record(session: Session, entries: Sequence[dict[str, Any]]) -> None:
    insert_many(session, AuditRow, list(entries))


def audit(
    session: Session,
    actor: Principal,
    at: datetime,
    action: str,
    entity_type: str,
    entity_id: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    record(session, [entry(actor, at, action, entity_type, entity_id, before, after)])


def insert_many(session: Session, row_type: type[SQLModel], values: list[dict[str, Any]], chunk: int = 1000) -> None:
    """Multi-row INSERT without building ORM objects (SQLModel's constructor validates, slowly)."""
    for start in range(0, len(values), chunk):
        session.execute(insert(row_type), values[start : start + chunk])


def jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
