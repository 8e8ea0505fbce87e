"""What a request body may be: JSON, and no larger than the configured limit.

Both are enforced as the body is read, on the bytes actually received (chunked bodies included), so
routes that take no body are unaffected. A declared ``Content-Length`` over the limit is refused
before anything is read.

The two errors subclass Starlette's ``HTTPException`` on purpose: FastAPI re-raises those when
reading the body fails, and turns any other exception into a generic 400. ``api.errors`` renders them.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")
        self.limit = limit


class NotJson(HTTPException):
    def __init__(self, content_type: str | None) -> None:
        got = f"{content_type!r}" if content_type else "no Content-Type"
        super().__init__(415, f"request body must be JSON (Content-Type: application/json), got {got}")
        self.content_type = content_type


def is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        content_type = headers.get("content-type")
        declared = headers.get("content-length", "")
        too_large = declared.isascii() and declared.isdigit() and int(declared) > self.max_bytes
        received = 0

        async def limited() -> Message:
            nonlocal received
            if too_large:
                raise BodyTooLarge(self.max_bytes)
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
                if chunk and not is_json(content_type):
                    raise NotJson(content_type)
            return message

        await self.app(scope, limited, send)
