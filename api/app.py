"""The application factory: ``create_app(settings, *, clock, store)``.

No import-time globals: everything a request needs hangs off ``app.state``, set up in the lifespan.
Tests build an app with a ``FakeClock`` and an in-memory or throwaway database; ``releasegate serve``
builds one from the environment.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI, Request, Response
from starlette.middleware.base import RequestResponseEndpoint

from api import errors
from api.limits import BodyLimit
from api.routes import (
    access,
    approvals,
    deployments,
    environments,
    health,
    job_agents,
    jobs,
    policies,
    release_targets,
    resources,
    systems,
)
from controller.clock import Clock, SystemClock
from controller.loop import Loop
from controller.settings import Settings
from controller.store.db import Store
from controller.store.reconciler import Reconciler
from controller.store.tokens import bootstrap_admin

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    store: Store | None = None,
    run_loop: bool = True,
) -> FastAPI:
    settings = settings or Settings.from_env()
    clock = clock or SystemClock()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.store = store or Store.open(settings)
        app.state.clock = clock
        app.state.settings = settings
        _bootstrap(app.state.store, settings, clock)
        reconciler = Reconciler(
            app.state.store,
            batch_size=settings.reconcile_batch_size,
            sweep_interval=timedelta(seconds=settings.sweep_interval_seconds),
        )
        loop = Loop(reconciler.run_pass, clock, interval_seconds=settings.loop_interval_seconds)
        app.state.reconciler = reconciler
        app.state.loop = loop
        if run_loop:
            loop.start()
        try:
            yield
        finally:
            loop.stop()

    app = FastAPI(
        title="Releasegate",
        version="0.1.0",
        summary="Declarative release gating: which version may deploy to which target, when, and why.",
        lifespan=lifespan,
    )
    errors.install(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.middleware("http")(_nudge_after_writes)
    for router in (
        health.router,
        systems.router,
        resources.router,
        environments.router,
        deployments.router,
        deployments.versions,
        job_agents.router,
        release_targets.router,
        policies.router,
        jobs.jobs,
        jobs.agents,
        jobs.gate,
        jobs.targets,
        jobs.decisions,
        approvals.approvals,
        approvals.overrides,
        access.tokens,
        access.audit,
    ):
        app.include_router(router)
    return app


def _bootstrap(store: Store, settings: Settings, clock: Clock) -> None:
    with store.transaction() as session:
        generated = bootstrap_admin(session, settings.admin_token, clock.now())
    if generated:
        # Shown once: only its hash is stored.
        print(f"releasegate: generated admin token (shown once): {generated}", file=sys.stderr, flush=True)


async def _nudge_after_writes(request: Request, call_next: RequestResponseEndpoint) -> Response:
    """A successful write may have made targets dirty: wake the loop now rather than at the next tick."""
    response = await call_next(request)
    if request.method not in ("GET", "HEAD", "OPTIONS") and response.status_code < 400:
        loop = getattr(request.app.state, "loop", None)
        if loop is not None:
            loop.nudge()
    return response
