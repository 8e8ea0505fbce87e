"""Taking one measurement: the only verification code that does I/O.

Why it exists: a provider turns a metric's spec and the target's documents into a ``result`` that
the metric's CEL conditions read, or into an error. Errors are data, never exceptions: an
unreachable endpoint, a timeout, a body over the size limit, a non-JSON Prometheus answer, a
template with no value for this target. They become ``error`` measurements, which count toward
``errorThreshold`` and can neither crash nor stall the loop (every request has a timeout).

Results:
- ``http``: ``{ok, statusCode, body, json, headers, durationMs}``; ``ok`` is a 2xx status, ``json``
  the parsed body or null, header names lower-case;
- ``prometheus`` (the HTTP API's instant query): ``{ok, value, results, resultType, durationMs}``;
  ``value`` is the first series' sample (a float) or null when the result is empty, ``results``
  every series as ``{metric, value}`` (a matrix gives its last sample);
- ``sleep``: ``{ok: true, seconds}``; its waiting is done by the schedule, not by blocking a thread.

``stored`` cuts a result down to what the measurement table keeps.

Must not: read a clock for anything but measuring a request's duration, or evaluate conditions.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from controller.rules.verification import HttpProviderSpec, MetricSpec, PrometheusProviderSpec, SleepProviderSpec
from controller.verification.templates import TemplateError, render

MAX_BODY_BYTES = 1024 * 1024
STORED_BODY_CHARS = 4096
STORED_RESULT_BYTES = 16 * 1024


@dataclass(frozen=True)
class Reading:
    result: dict[str, Any] | None
    error: str | None = None
    duration_ms: int = 0


class ProviderError(Exception):
    pass


class Prober:
    """Takes measurements over one shared HTTP client; ``transport`` is for tests of odd servers."""

    def __init__(self, *, transport: httpx.BaseTransport | None = None, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self._client = httpx.Client(transport=transport, follow_redirects=True, max_redirects=5,
                                    headers={"user-agent": "releasegate-verification"})
        self._max_body = max_body_bytes

    def close(self) -> None:
        self._client.close()

    def measure(self, metric: MetricSpec, documents: Mapping[str, Any]) -> Reading:
        provider = metric.provider
        if isinstance(provider, SleepProviderSpec):
            return Reading({"ok": True, "seconds": provider.seconds})
        started = time.monotonic()
        try:
            if isinstance(provider, HttpProviderSpec):
                result = self._http(provider, documents)
            else:
                result = self._prometheus(provider, documents)
        except (ProviderError, TemplateError) as exc:
            return Reading(None, str(exc), _elapsed_ms(started))
        except httpx.TimeoutException:
            return Reading(None, f"timed out after {provider.timeout:g}s", _elapsed_ms(started))
        except httpx.HTTPError as exc:
            return Reading(None, f"{type(exc).__name__}: {exc}", _elapsed_ms(started))
        return Reading(result, None, result["durationMs"])

    def _http(self, spec: HttpProviderSpec, documents: Mapping[str, Any]) -> dict[str, Any]:
        url = render(spec.url, documents)
        headers = {name: render(value, documents) for name, value in spec.headers.items()}
        body = None if spec.body is None else render(spec.body, documents).encode()
        started = time.monotonic()
        status, raw, response_headers = self._fetch(spec.method, url, headers, body, spec.timeout)
        text = raw.decode("utf-8", errors="replace")
        return {
            "ok": 200 <= status < 300,
            "statusCode": status,
            "body": text,
            "json": _json_or_none(text),
            "headers": response_headers,
            "durationMs": _elapsed_ms(started),
        }

    def _prometheus(self, spec: PrometheusProviderSpec, documents: Mapping[str, Any]) -> dict[str, Any]:
        url = render(spec.address, documents).rstrip("/") + "/api/v1/query"
        query = render(spec.query, documents)
        headers = {name: render(value, documents) for name, value in spec.headers.items()}
        started = time.monotonic()
        status, raw, _ = self._fetch("GET", str(httpx.URL(url, params={"query": query})), headers, None, spec.timeout)
        answer = _json_or_none(raw.decode("utf-8", errors="replace"))
        if not isinstance(answer, Mapping):
            raise ProviderError(f"the Prometheus API answered HTTP {status} with a body that is not JSON")
        if answer.get("status") != "success":
            raise ProviderError(f"the Prometheus query failed (HTTP {status}): "
                                f"{answer.get('errorType', 'error')}: {answer.get('error', 'no message')}")
        return {**_samples(answer.get("data")), "ok": True, "durationMs": _elapsed_ms(started)}

    def _fetch(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
               timeout: float) -> tuple[int, bytes, dict[str, str]]:
        """The status, body and headers; the body is read up to the size limit and no further."""
        deadline = time.monotonic() + timeout
        with self._client.stream(method, url, headers=headers, content=body, timeout=timeout) as response:
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > self._max_body:
                    raise ProviderError(f"the response body exceeds {self._max_body} bytes")
                if time.monotonic() > deadline:  # a server trickling bytes never trips the read timeout
                    raise httpx.ReadTimeout("the response took too long", request=response.request)
                chunks.append(chunk)
            headers_out = {k.lower(): v for k, v in response.headers.multi_items()}
            return response.status_code, b"".join(chunks), headers_out


def _samples(data: Any) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise ProviderError("the Prometheus answer has no data")
    kind, raw = data.get("resultType"), data.get("result")
    if raw is None:
        raise ProviderError("the Prometheus answer has no result")
    try:
        if kind == "scalar" or kind == "string":
            value = _number(raw[1]) if kind == "scalar" else raw[1]
            return {"resultType": kind, "value": value, "results": [{"metric": {}, "value": value}]}
        if kind in ("vector", "matrix"):
            results = [
                {"metric": dict(series.get("metric") or {}),
                 "value": _number((series["value"] if kind == "vector" else series["values"][-1])[1])}
                for series in raw
            ]
            return {"resultType": kind, "value": results[0]["value"] if results else None, "results": results}
    except (TypeError, KeyError, IndexError, ValueError, AttributeError) as exc:
        raise ProviderError(f"the Prometheus answer is malformed: {type(exc).__name__}: {exc}") from None
    raise ProviderError(f"the Prometheus answer has an unknown resultType {kind!r}")


def _number(text: Any) -> float | None:
    """A sample value; NaN and infinities (which JSON cannot hold) become null."""
    value = float(text)
    return value if math.isfinite(value) else None


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _elapsed_ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def stored(result: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What the measurement row keeps: the whole result when small, else a cut body and no JSON."""
    if result is None:
        return None
    if len(json.dumps(result, default=str)) <= STORED_RESULT_BYTES:
        return dict(result)
    cut = {k: v for k, v in result.items() if k not in ("body", "json", "results", "headers")}
    if "body" in result:
        cut["body"] = str(result["body"])[:STORED_BODY_CHARS]
    if "results" in result:
        cut["results"] = list(result["results"])[:10]
    cut["truncated"] = True
    return cut
