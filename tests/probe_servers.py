"""Real HTTP servers on 127.0.0.1 that verification measures: their answers are scripted by the test.

``ScriptedServer`` answers each path with the next scripted :class:`Answer` (the last one repeats)
and records every request it received, so a test can count measurements on the wire.
``PrometheusServer`` speaks the Prometheus HTTP API's instant-query format (``/api/v1/query``),
answering each query with its scripted sample values.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: Any = b""  # bytes, str, or anything JSON
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (a slow endpoint, for timeouts)

    def encoded(self) -> tuple[bytes, dict[str, str]]:
        if isinstance(self.body, bytes):
            return self.body, self.headers
        if isinstance(self.body, str):
            return self.body.encode(), {"content-type": "text/plain", **self.headers}
        return json.dumps(self.body).encode(), {"content-type": "application/json", **self.headers}


@dataclass(frozen=True)
class Hit:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


class ScriptedServer:
    def __init__(self) -> None:
        self._answers: dict[str, list[Answer]] = defaultdict(list)
        self._hits: list[Hit] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("content-length") or 0)
                hit = Hit(self.command, parts.path, parse_qs(parts.query),
                          {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length))
                answer = server._record(hit)
                if answer.delay:
                    time.sleep(answer.delay)  # I/O latency of the endpoint, not test time
                body, headers = answer.encoded()
                try:
                    self.send_response(answer.status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def script(self, path: str, *answers: Answer) -> None:
        with self._lock:
            self._answers[path] = list(answers)

    def _record(self, hit: Hit) -> Answer:
        with self._lock:
            self._hits.append(hit)
            queue = self._answers.get(self._key(hit))
            if not queue:
                return Answer(404, {"error": "nothing scripted"})
            return queue.pop(0) if len(queue) > 1 else queue[0]

    def _key(self, hit: Hit) -> str:
        return hit.path

    def hits(self, path: str | None = None) -> list[Hit]:
        with self._lock:
            return [h for h in self._hits if path is None or h.path == path]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class PrometheusServer(ScriptedServer):
    """``answer(query, 0.01, 0.2)``: successive instant queries for ``query`` see these values."""

    QUERY_PATH = "/api/v1/query"

    def answer(self, query: str, *values: float | Answer) -> None:
        self.script(query, *(v if isinstance(v, Answer) else vector(v) for v in values))

    def _key(self, hit: Hit) -> str:
        if hit.path != self.QUERY_PATH:
            return hit.path
        return hit.query.get("query", [""])[0]

    def queries(self) -> list[str]:
        return [h.query.get("query", [""])[0] for h in self.hits(self.QUERY_PATH)]


def vector(value: float, labels: dict[str, str] | None = None) -> Answer:
    sample = {"metric": labels or {"job": "api"}, "value": [1772460000.0, repr(float(value))]}
    return Answer(body={"status": "success", "data": {"resultType": "vector", "result": [sample]}})


def prometheus_error(message: str) -> Answer:
    return Answer(400, {"status": "error", "errorType": "bad_data", "error": message})

