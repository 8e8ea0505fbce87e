"""Process configuration: defaults, then an optional TOML file, then ``RELEASEGATE_*`` variables.

One frozen value built at start-up and passed down; nothing else reads the environment or the file.
Precedence, lowest first: the defaults below, the file (``--config PATH`` or ``RELEASEGATE_CONFIG``),
the environment, then explicit command-line options. File keys are the field names
(``loop_interval_seconds = 2``); variables are ``RELEASEGATE_`` + the upper-cased name. An empty
variable counts as unset.

Every value is checked here, so a bad one stops the process at once with a ``SettingsError`` that names
the setting and where it came from (``RELEASEGATE_PORT: expected an integer, got 'http'``), never a bare
``ValueError`` from deep inside start-up. An unknown key in the file is an error: a typo must not fall
back to a default silently. Unknown ``RELEASEGATE_*`` variables are not, because the agent and the jobs
it runs share that prefix.

Must not: read anything after start-up, or import from the rest of the application.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any, get_type_hints

PREFIX = "RELEASEGATE_"
CONFIG_ENV = PREFIX + "CONFIG"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class ProcessRole(StrEnum):
    ALL = "all"  # the API and the controller loop in one process (the default, and `make run`)
    API = "api"  # the REST API only: stateless, no loop, any number of replicas
    CONTROLLER = "controller"  # the loop only, plus /healthz, /readyz and /metrics for probes

    @property
    def serves_api(self) -> bool:
        return self is not ProcessRole.CONTROLLER

    @property
    def runs_controller(self) -> bool:
        return self is not ProcessRole.API


class SettingsError(ValueError):
    """A setting that cannot be used; the message names the setting and where its value came from."""


def _bounds(low: int, high: int | None = None) -> dict[str, Any]:
    return {"min": low, "max": high}


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///./releasegate.db"
    host: str = "127.0.0.1"
    port: int = field(default=8080, metadata=_bounds(1, 65535))
    admin_token: str | None = field(default=None, repr=False)
    # Which half of the product this process runs; see ProcessRole.
    role: ProcessRole = ProcessRole.ALL
    # Apply migrations on start (under a PostgreSQL advisory lock). With false, the process only checks
    # that the schema is current and refuses to start otherwise: a migration job applies them instead.
    migrate: bool = True
    db_pool_size: int = field(default=10, metadata=_bounds(1))
    db_max_overflow: int = field(default=20, metadata=_bounds(0))
    # Largest request body accepted, in bytes; bulk resource upserts of thousands fit comfortably.
    max_body_bytes: int = field(default=32 * 1024 * 1024, metadata=_bounds(1))
    log_format: str = field(default="text", metadata={"choices": ("text", "json")})
    log_level: str = field(default="INFO", metadata={"choices": LOG_LEVELS})
    # The controller loop.
    loop_interval_seconds: int = field(default=2, metadata=_bounds(1))
    sweep_interval_seconds: int = field(default=600, metadata=_bounds(1))
    # Targets claimed per transaction. On SQLite a batch holds the write lock from claim to commit, so this
    # bounds how long gate calls, claims and reports wait behind the loop (~1.5 ms per target).
    reconcile_batch_size: int = field(default=100, metadata=_bounds(1))
    job_lease_seconds: int = field(default=60, metadata=_bounds(1))

    def __post_init__(self) -> None:
        for f in fields(self):
            _check(f.name, getattr(self, f.name), f.name)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, config: str | Path | None = None, **overrides: object
    ) -> Settings:
        """Defaults < the config file < ``environ`` (default ``os.environ``) < ``overrides`` (``None`` = unset).

        ``config`` is the file's path; without it, ``RELEASEGATE_CONFIG`` names one, if set.
        """
        env = os.environ if environ is None else environ
        path = config or env.get(CONFIG_ENV) or None
        values: dict[str, object] = _read_file(Path(path)) if path else {}
        for name in _types():
            raw = env.get(PREFIX + name.upper())
            if raw:
                values[name] = _checked(name, _parse_text(name, raw, PREFIX + name.upper()), PREFIX + name.upper())
        for name, value in overrides.items():
            if name not in _types():
                raise TypeError(f"unknown setting {name!r}")
            if value is not None:
                source = "--" + name.replace("_", "-")
                values[name] = _checked(name, _parse_text(name, value, source) if isinstance(value, str) else value,
                                        source)
        return cls(**values)  # type: ignore[arg-type]

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@cache
def _types() -> dict[str, Any]:
    return {name: kind for name, kind in get_type_hints(Settings).items() if not name.startswith("_")}


def _read_file(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except OSError as exc:
        raise SettingsError(f"config file {path}: cannot be read ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: invalid TOML: {exc}") from None
    known = _types()
    values: dict[str, object] = {}
    for key, value in document.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known settings: {', '.join(known)}"
            raise SettingsError(f"{path}: unknown setting {key!r}{hint}")
        values[key] = _checked(key, _parse_toml(key, value, f"{path}: {key}"), f"{path}: {key}")
    return values


def _parse_text(name: str, raw: str, source: str) -> object:
    """A value given as text (a variable or an option), converted to the field's type."""
    kind = _types()[name]
    text = raw.strip()
    if kind is bool:
        if text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise SettingsError(f"{source}: expected true or false, got {raw!r}")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise SettingsError(f"{source}: expected an integer, got {raw!r}") from None
    if kind is ProcessRole:
        return _role(text.lower(), source)
    return _normalise(name, raw)


def _parse_toml(name: str, value: object, source: str) -> object:
    """A value from the file: TOML is typed, so the type must already be right (no ``port = "80"``)."""
    kind = _types()[name]
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is ProcessRole and isinstance(value, str):
        return _role(value, source)
    if kind in (str, str | None) and isinstance(value, str):
        return _normalise(name, value)
    wanted = {bool: "true or false", int: "an integer"}.get(kind, "a string")
    raise SettingsError(f"{source}: expected {wanted}, got {type(value).__name__} {value!r}")


def _role(text: str, source: str) -> ProcessRole:
    try:
        return ProcessRole(text)
    except ValueError:
        choices = ", ".join(role.value for role in ProcessRole)
        raise SettingsError(f"{source}: expected one of {choices}, got {text!r}") from None


def _normalise(name: str, value: str) -> str:
    if name == "log_level":
        return value.strip().upper()
    if name == "log_format":
        return value.strip().lower()
    return value


def _checked(name: str, value: object, source: str) -> object:
    _check(name, value, source)
    return value


def _check(name: str, value: object, source: str) -> None:
    meta = next(f.metadata for f in fields(Settings) if f.name == name)
    low, high, choices = meta.get("min"), meta.get("max"), meta.get("choices")
    if isinstance(value, int) and low is not None and value < low:
        raise SettingsError(f"{source}: must be at least {low}, got {value}")
    if isinstance(value, int) and high is not None and value > high:
        raise SettingsError(f"{source}: must be at most {high}, got {value}")
    if choices is not None and value not in choices:
        raise SettingsError(f"{source}: expected one of {', '.join(choices)}, got {value!r}")
