"""The one place domain and infrastructure errors become HTTP answers.

Bodies follow FastAPI's validation shape, ``{"detail": [{"loc", "msg", "type", ...}]}``, so clients
parse one format for every 4xx. Nothing reaches the client as a bare 500: an unexpected error is
logged with its traceback and answered with a generic JSON 500 body.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, IntegrityError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.limits import BodyTooLarge, NotJson
from controller.errors import Conflict, Forbidden, Invalid, NotFound, Problem

log = logging.getLogger(__name__)


def _problem(problem: Problem) -> dict[str, Any]:
    body: dict[str, Any] = {"loc": list(problem.loc), "msg": problem.msg, "type": problem.type}
    body.update(problem.ctx)
    return body


def detail(status: int, problems: list[dict[str, Any]], headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": problems}, status_code=status, headers=headers)


def _not_found(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, NotFound)
    return detail(404, [{"loc": ["path", "id"], "msg": str(exc), "type": "not_found"}])


def _conflict(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Conflict)
    return detail(409, [_problem(exc.problem)])


def _invalid(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Invalid)
    return detail(422, [_problem(p) for p in exc.problems])


def _forbidden(_: Request, exc: Exception) -> JSONResponse:
    return detail(403, [{"loc": [], "msg": str(exc) or "forbidden", "type": "forbidden"}])


def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [{k: v for k, v in e.items() if k in ("loc", "msg", "type", "ctx")} for e in exc.errors()]
    return detail(422, jsonable_encoder(problems, custom_encoder={Exception: str, bytes: repr}))


def _http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and isinstance(exc.__cause__, ValueError | RecursionError):
        # FastAPI's answer to a body that json.loads rejects other than by JSONDecodeError: bytes that
        # are not UTF-8/16/32, or nesting deeper than the parser recurses. Malformed JSON either way.
        problem = {"loc": ["body"], "msg": f"body is not valid JSON: {_reason(exc.__cause__)}", "type": "json_invalid"}
        return detail(422, [problem])
    return detail(exc.status_code, [{"loc": [], "msg": str(exc.detail), "type": "http"}], exc.headers)


def _reason(error: BaseException) -> str:
    if isinstance(error, UnicodeDecodeError):
        return f"not valid {error.encoding} at byte {error.start}"
    if isinstance(error, RecursionError):
        return "nested too deeply"
    return str(error)


def _integrity(_: Request, exc: Exception) -> JSONResponse:
    # A uniqueness race lost to a concurrent writer: the up-front checks passed, the constraint did not.
    log.info("integrity error mapped to 409: %s", exc)
    return detail(409, [{"loc": ["body"], "msg": "conflicts with a concurrent change; retry", "type": "conflict"}])


def _data(request: Request, exc: Exception) -> JSONResponse:
    """PostgreSQL refuses NUL in any text parameter, even one it only compares. Routes reject NUL up
    front (``NoNul``, ``Body``); this names the path or query parameter for any route that does not.
    Any other refused value is a validation gap, and stays a logged 500."""
    for value in request.path_params.values():
        if "\x00" in str(value):
            return detail(404, [{"loc": ["path", "id"], "msg": f"{value!r} names nothing", "type": "not_found"}])
    for name, value in request.query_params.multi_items():
        if "\x00" in value:
            problem = {"loc": ["query", name], "msg": "NUL characters are not allowed", "type": "nul_character"}
            return detail(422, [problem])
    return _unexpected(request, exc)


def _database(_: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable: %s", exc)
    return detail(
        503,
        [{"loc": [], "msg": "database unavailable; nothing was changed, retry", "type": "unavailable"}],
        {"Retry-After": "1"},
    )


def _too_large(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BodyTooLarge)
    return detail(413, [{"loc": ["body"], "msg": exc.detail, "type": "too_large", "limit": exc.limit}])


def _not_json(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, NotJson)
    problem = {"loc": ["header", "content-type"], "msg": exc.detail, "type": "unsupported_media_type"}
    return detail(415, [problem], {"Accept": "application/json"})


def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return detail(500, [{"loc": [], "msg": "internal error", "type": "internal"}])


def install(app: FastAPI) -> None:
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(Conflict, _conflict)
    app.add_exception_handler(Invalid, _invalid)
    app.add_exception_handler(Forbidden, _forbidden)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(IntegrityError, _integrity)
    app.add_exception_handler(DataError, _data)
    app.add_exception_handler(OperationalError, _database)
    app.add_exception_handler(InterfaceError, _database)
    app.add_exception_handler(BodyTooLarge, _too_large)
    app.add_exception_handler(NotJson, _not_json)
    app.add_exception_handler(Exception, _unexpected)
