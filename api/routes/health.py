"""Liveness, readiness and Prometheus metrics: the routes every role serves, without a token.

``/readyz`` checks the database and, in a process that runs the controller loop, that the loop is
running and its passes are not failing one after another; an ``api`` process has no loop and does
not report one. ``/metrics`` renders the app's own registry (``controller.metrics``).
"""

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from api.deps import get_store

router = APIRouter(tags=["health"])
# Passes failing in a row before a controller reports itself not ready: one may fail on a passing
# fault (a deadlock, a restart) and the next tick retries; three in a row is a controller that works no more.
FAILING_PASSES = 3


@router.get("/healthz", operation_id="healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", operation_id="readyz")
def readyz(request: Request) -> Any:
    checks: dict[str, str] = {}
    try:
        with get_store(request).engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - readiness reports any failure; it must not raise
        checks["database"] = f"error: {type(exc).__name__}"
    loop = getattr(request.app.state, "loop", None)
    if loop is not None:
        checks["controller"] = _controller(loop.running, loop.failing)
    ready = all(value == "ok" for value in checks.values())
    body = {"status": "ok" if ready else "unavailable", "role": request.app.state.settings.role.value,
            "checks": checks}
    return JSONResponse(body, status_code=200 if ready else 503)


def _controller(running: bool, failing: int) -> str:
    if not running:
        return "stopped"
    if failing >= FAILING_PASSES:
        return f"failing: the last {failing} passes failed (see the log)"
    return "ok"


@router.get("/metrics", operation_id="metrics")
def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
