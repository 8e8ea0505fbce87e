"""``verification``: measure a deploy after it succeeded, and let the result count (SPEC §7).

Why it exists: a job that reports success has only started the new version. A verification rule
names metrics to measure afterwards (an HTTP probe, a Prometheus query, or a plain wait), each with
CEL conditions over the measurement's ``result``. Runs start when a job succeeds; their outcome
feeds ``environmentProgression`` (``requireVerificationPassed``) and, with ``onFailure: rollback``,
queues a redeploy of the previous good version.

This module is the rule's spec only: it is not a version gate, so it has no ``evaluate``. Everything
is validated when the policy is written: conditions compile (CEL over ``result``), templates name
known fields, URLs are http(s), thresholds fit the count. Ctrlplane's shape loads unchanged
(``provider: {type: ...}``, ``durationSeconds`` for sleep, ``triggerOn: jobSuccess``).

Must not: do I/O or read a clock (``controller.verification`` measures; the store schedules).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from controller.cel import checked
from controller.verification.templates import TemplateError, paths

VARIABLES = frozenset({"result"})
MAX_TIMEOUT_SECONDS = 60.0
_CONFIG = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def _template(value: str) -> str:
    try:
        paths(value)
    except TemplateError as exc:
        raise ValueError(f"invalid template: {exc}") from None
    return value


def _url(value: str) -> str:
    _template(value)
    sample = re.sub(r"\{\{.*?\}\}", "x", value, flags=re.DOTALL)
    parts = urlsplit(sample)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an absolute http:// or https:// URL")
    return value


def _headers(value: dict[str, str]) -> dict[str, str]:
    for name, text in value.items():
        if not _HEADER_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid header name")
        _template(text)
    return value


def _timeout(value: object) -> float:
    """Seconds, as a number or a duration string (``"500ms"``, ``"10s"``, ``"1m"``)."""
    if isinstance(value, bool):
        raise ValueError("must be a number of seconds or a duration like '10s'")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[match.group(2)]
    else:
        raise ValueError("must be a number of seconds or a duration like '10s'")
    if not 0 < seconds <= MAX_TIMEOUT_SECONDS:
        raise ValueError(f"must be more than 0 and at most {MAX_TIMEOUT_SECONDS:g} seconds")
    return seconds


class HttpProviderSpec(BaseModel):
    model_config = _CONFIG

    type: Literal["http"]
    url: str = Field(max_length=4096)
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    headers: dict[str, str] = Field(default_factory=dict, max_length=50)
    body: str | None = Field(default=None, max_length=65536)
    timeout: float = 10.0

    _checked_url = field_validator("url")(_url)
    _checked_timeout = field_validator("timeout", mode="before")(_timeout)

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    _checked_headers = field_validator("headers")(_headers)

    @field_validator("body")
    @classmethod
    def _checked_body(cls, value: str | None) -> str | None:
        return None if value is None else _template(value)


class PrometheusProviderSpec(BaseModel):
    model_config = _CONFIG

    type: Literal["prometheus"]
    address: str = Field(max_length=4096)
    query: str = Field(min_length=1, max_length=16384)
    headers: dict[str, str] = Field(default_factory=dict, max_length=50)
    timeout: float = 10.0

    _checked_address = field_validator("address")(_url)
    _checked_query = field_validator("query")(_template)
    _checked_timeout = field_validator("timeout", mode="before")(_timeout)
    _checked_headers = field_validator("headers")(_headers)


class SleepProviderSpec(BaseModel):
    """A measurement that only waits: it completes ``seconds`` after it is due, always ``ok``."""

    model_config = _CONFIG

    type: Literal["sleep"]
    seconds: int = Field(default=0, ge=0, le=24 * 3600,
                         validation_alias=AliasChoices("seconds", "durationSeconds"))


Provider = Annotated[HttpProviderSpec | PrometheusProviderSpec | SleepProviderSpec, Field(discriminator="type")]


class MetricSpec(BaseModel):
    model_config = _CONFIG

    name: str = Field(min_length=1, max_length=128)
    provider: Provider
    interval_seconds: int = Field(default=60, ge=1, le=24 * 3600)
    count: int = Field(default=1, ge=1, le=1000)
    # Without conditions, a measurement passes when its result is ``ok`` (HTTP 2xx, a successful query).
    success_condition: str | None = Field(default="result.ok", max_length=4096)
    failure_condition: str | None = Field(default=None, max_length=4096)
    failure_threshold: int = Field(default=0, ge=0)
    success_threshold: int | None = Field(default=None, ge=1)
    error_threshold: int = Field(default=4, ge=0)

    @field_validator("success_condition", "failure_condition")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        return None if value is None else checked(value, VARIABLES)

    @model_validator(mode="after")
    def _consistent(self) -> MetricSpec:
        if self.success_condition is None and self.failure_condition is None:
            raise ValueError("give a successCondition, a failureCondition, or both")
        if self.success_threshold is not None and self.success_threshold > self.count:
            raise ValueError("successThreshold cannot exceed count: the metric would never pass early")
        return self

    @property
    def interval(self) -> timedelta:
        return timedelta(seconds=self.interval_seconds)


class VerificationSpec(BaseModel):
    model_config = _CONFIG

    metrics: list[MetricSpec] = Field(min_length=1, max_length=20)
    on_failure: Literal["none", "rollback"] = "none"
    # Ctrlplane's field; a job's success is the only trigger there is.
    trigger_on: Literal["jobSuccess"] = "jobSuccess"

    @field_validator("metrics")
    @classmethod
    def _unique_names(cls, value: list[MetricSpec]) -> list[MetricSpec]:
        names = [m.name for m in value]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"metric names must be unique: {', '.join(repeated)}")
        return value
