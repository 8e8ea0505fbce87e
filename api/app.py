"""The application factory: ``create_app(settings, *, clock, store)``.

No import-time globals: everything a request needs hangs off ``app.state``, set up in the lifespan.
Tests build an app with a ``FakeClock`` and an in-memory or throwaway database; ``releasegate serve``
builds one from the environment.

``settings.role`` picks what the app is: ``all`` (API and controller loop), ``api`` (no loop, so any
number of stateless replicas) or ``controller`` (the loop, answering only ``/healthz``, ``/readyz`` and
``/metrics``, so probes and scrapes work but nothing else is served by it).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI
from sqlalchemy.exc import IntegrityError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
    verifications,
)
from controller.clock import Clock, SystemClock
from controller.loop import Loop
from controller.metrics import Metrics
from controller.settings import Settings
from controller.store.db import Store
from controller.store.reconciler import Reconciler
from controller.store.tokens import bootstrap_admin

log = logging.getLogger(__name__)

VERSION = "0.1.0"


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    store: Store | None = None,
    run_loop: bool = True,
) -> FastAPI:
    settings = settings or Settings.from_env()
    clock = clock or SystemClock()
    role = settings.role

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.store = store or Store.open(settings)
        app.state.clock = clock
        app.state.settings = settings
        app.state.metrics = Metrics(role=role.value, version=VERSION)
        app.state.reconciler = app.state.loop = None  # an api process runs no loop
        if role.serves_api:  # only processes that authenticate callers need the admin token
            _bootstrap(app.state.store, settings, clock)
        if role.runs_controller:
            _controller(app, settings, clock, start=run_loop)
        try:
            yield
        finally:
            if app.state.loop is not None:
                app.state.loop.stop()  # lets a running pass finish and commit
                app.state.reconciler.close()
            if store is None:
                app.state.store.engine.dispose()

    api = role.serves_api  # a controller process serves probes and metrics only: no API, no docs of one
    app = FastAPI(
        title="Releasegate",
        version=VERSION,
        summary="Declarative release gating: which version may deploy to which target, when, and why.",
        lifespan=lifespan,
        docs_url="/docs" if api else None,
        redoc_url="/redoc" if api else None,
        openapi_url="/openapi.json" if api else None,
    )
    errors.install(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(NudgeAfterWrites)
    app.include_router(health.router)
    if api:
        _include_api(app)
    return app


def _controller(app: FastAPI, settings: Settings, clock: Clock, *, start: bool) -> None:
    """The reconciler and its loop on ``app.state``; started unless ``start`` is false (tests step it)."""
    app.state.metrics.watch_jobs(app.state.store)
    reconciler = Reconciler(
        app.state.store,
        batch_size=settings.reconcile_batch_size,
        sweep_interval=timedelta(seconds=settings.sweep_interval_seconds),
        clock=clock,
    )
    loop = Loop(reconciler.run_pass, clock, interval_seconds=settings.loop_interval_seconds,
                observer=app.state.metrics)
    app.state.reconciler = reconciler
    app.state.loop = loop
    if start:
        loop.start()


def _include_api(app: FastAPI) -> None:
    for router in (
        systems.router,
        resources.router,
        environments.router,
        deployments.router,
        deployments.versions,
        job_agents.router,
        release_targets.router,
        verifications.router,
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


def _bootstrap(store: Store, settings: Settings, clock: Clock) -> None:
    try:
        with store.transaction() as session:
            generated = bootstrap_admin(session, settings.admin_token, clock.now())
    except IntegrityError:
        # Replicas starting together with the same admin token: another one stored it first.
        log.info("bootstrap admin token already stored by another process")
        return
    if generated:
        # Shown once: only its hash is stored.
        print(f"releasegate: generated admin token (shown once): {generated}", file=sys.stderr, flush=True)


class NudgeAfterWrites:
    """A successful write may have made targets dirty: wake the loop now rather than at the next tick.

    Plain ASGI: Starlette's ``BaseHTTPMiddleware`` runs every request in a task of its own, through two
    memory streams, which costs more than most of our handlers' own work."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, sending)
        loop = getattr(scope["app"].state, "loop", None)
        if status < 400 and loop is not None:
            loop.nudge()
