"""The read/patch/delete routes every addressable entity shares, and list paging.

No ``from __future__ import annotations`` here: FastAPI reads the per-entity body and response
types from the annotations of the functions this module builds.
"""

from collections.abc import Callable
from typing import Annotated, Any, cast

from fastapi import APIRouter, Query, Response
from pydantic import AfterValidator
from pydantic_core import PydanticCustomError
from sqlalchemy import Select
from sqlmodel import Session

from api.deps import Reader, SessionDep, WriteCtx
from api.schemas.base import Patch
from controller.errors import Invalid, NotFound
from controller.store.inventory import Context
from controller.store.repo import DEFAULT_LIMIT, MAX_LIMIT, get_row, page


def _no_nul(value: str | None) -> str | None:
    # PostgreSQL refuses NUL in any text parameter, even in a WHERE clause, with an error, not a miss.
    if value is not None and "\x00" in value:
        raise PydanticCustomError("nul_character", "NUL characters are not allowed")
    return value


NoNul = AfterValidator(_no_nul)
"""Every text query parameter that reaches SQL carries this."""

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size")]
Cursor = Annotated[str | None, Query(max_length=512, description="`nextCursor` of the previous page"), NoNul]
Doc = Callable[[Any], dict[str, Any]]


def listing(session: Session, stmt: Select[Any], id_column: Any, limit: int, cursor: str | None, doc: Doc) -> Any:
    result = page(session, stmt, id_column, limit, cursor)
    return {"items": [doc(row) for row in result.items], "nextCursor": result.next_cursor}


def seq_listing(session: Session, stmt: Select[Any], seq_column: Any, limit: int, cursor: str | None, doc: Doc) -> Any:
    """Paging for append-only logs, ordered by their integer sequence (oldest first)."""
    if cursor is not None:
        # ASCII digits only ("²".isdigit() is true), and few enough to fit a BIGINT.
        if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 18:
            raise Invalid.one(("query", "cursor"), "malformed cursor")
        stmt = stmt.where(seq_column > int(cursor))
    rows = list(session.exec(stmt.order_by(seq_column).limit(limit + 1)))  # type: ignore[call-overload]
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": [doc(r) for r in rows], "nextCursor": str(rows[-1].seq) if more else None}


def entity_routes(
    router: APIRouter,
    *,
    entity: str,
    row_type: type[Any],
    doc: Doc,
    public: type[Any],
    update_model: type[Patch],
    update: Callable[[Context, Any, dict[str, Any]], Any],
    delete: Callable[[Context, Any], None] | None,
    name_field: str | None = None,
) -> None:
    label = entity[0].upper() + entity[1:]

    def load(session: Session, key: str) -> Any:
        if "\x00" in key:  # names no entity, and PostgreSQL would refuse the lookup by name
            raise NotFound(entity, key)
        return get_row(session, row_type, key, entity, name_field=name_field)

    @router.get("/{key}", response_model=public, summary=f"Get a {entity}", operation_id=f"get{label}")
    def get_one(key: str, session: SessionDep, _: Reader) -> Any:
        return doc(load(session, key))

    @router.patch("/{key}", response_model=public, summary=f"Update a {entity}", operation_id=f"update{label}")
    def patch_one(key: str, body: update_model, ctx: WriteCtx) -> Any:  # type: ignore[valid-type]
        row = load(ctx.session, key)
        update(ctx, row, cast(Patch, body).changes())
        ctx.session.commit()
        return doc(row)

    if delete is not None:
        remove = delete

        @router.delete("/{key}", status_code=204, summary=f"Delete a {entity}", operation_id=f"delete{label}")
        def delete_one(key: str, ctx: WriteCtx) -> Response:
            remove(ctx, load(ctx.session, key))
            ctx.session.commit()
            return Response(status_code=204)


__all__ = ["DEFAULT_LIMIT", "Cursor", "Limit", "NoNul", "entity_routes", "listing"]
