"""Process configuration, read from ``RELEASEGATE_*`` environment variables.

One frozen value built at start-up and passed down; nothing else reads the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

PREFIX = "RELEASEGATE_"


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///./releasegate.db"
    host: str = "127.0.0.1"
    port: int = 8080
    admin_token: str | None = field(default=None, repr=False)
    db_pool_size: int = 10
    db_max_overflow: int = 20
    # Largest request body accepted, in bytes; bulk resource upserts of thousands fit comfortably.
    max_body_bytes: int = 32 * 1024 * 1024
    log_format: str = "text"
    log_level: str = "INFO"
    # The controller loop.
    loop_interval_seconds: int = 2
    sweep_interval_seconds: int = 600
    reconcile_batch_size: int = 500
    job_lease_seconds: int = 60

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            values[f.name] = int(raw) if f.type == "int" else raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
