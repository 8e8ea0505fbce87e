"""Request dependencies: the session, the caller, the clock, and role checks, as ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from controller.auth import Capability, Principal
from controller.clock import Clock
from controller.errors import Forbidden
from controller.store.db import Store
from controller.store.inventory import Context
from controller.store.tokens import authenticate

bearer = HTTPBearer(auto_error=False, description="An API token: `Authorization: Bearer rg_...`")


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


# Dependencies that do no I/O are ``async``: FastAPI runs a sync one in a worker thread, and the hop
# costs more than the work (a gate call made seven of them).
async def _store(request: Request) -> Store:
    return get_store(request)


async def get_clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


def get_session(store: Annotated[Store, Depends(_store)]) -> Iterator[Session]:
    """Writes commit explicitly in the route, so a failed commit still becomes the response."""
    with store.session() as session:
        try:
            yield session
        finally:
            session.rollback()


SessionDep = Annotated[Session, Depends(get_session)]
ClockDep = Annotated[Clock, Depends(get_clock)]


def get_principal(
    session: SessionDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(401, "missing bearer token", challenge)
    principal = authenticate(session, credentials.credentials)
    if principal is None:
        raise HTTPException(401, "invalid or revoked token", challenge)
    return principal


def require(capability: Capability, *alternatives: Capability) -> Callable[[Principal], Awaitable[Principal]]:
    """The caller must hold ``capability`` (or one of the ``alternatives``)."""

    async def check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if not any(principal.can(c) for c in (capability, *alternatives)):
            wanted = " or ".join(c.value for c in (capability, *alternatives))
            raise Forbidden(f"role {principal.role.value!r} may not {wanted}")
        return principal

    return check


Reader = Annotated[Principal, Depends(require(Capability.READ))]
Writer = Annotated[Principal, Depends(require(Capability.WRITE))]
Admin = Annotated[Principal, Depends(require(Capability.ADMIN))]


async def now(clock: ClockDep) -> datetime:
    """Read once per request."""
    return clock.now()


Now = Annotated[datetime, Depends(now)]


async def write_context(session: SessionDep, principal: Writer, at: Now) -> Context:
    return Context(session, principal, at)


async def admin_context(session: SessionDep, principal: Admin, at: Now) -> Context:
    return Context(session, principal, at)


WriteCtx = Annotated[Context, Depends(write_context)]
AdminCtx = Annotated[Context, Depends(admin_context)]
