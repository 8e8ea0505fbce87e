"""Throwaway PostgreSQL clusters for tests.

``ThrowawayCluster`` installs PostgreSQL if needed (``scripts/ensure-postgres.sh``),
runs ``initdb`` as the ``postgres`` user into a private temp dir, starts the
server on a free port bound to 127.0.0.1 only, and removes everything on
``stop()``.  ``ExternalServer`` offers the same database helpers for an
already-running server given by an admin URL (``RELEASEGATE_TEST_PG_URL``).

URLs are SQLAlchemy URLs: ``postgresql+psycopg://postgres@127.0.0.1:PORT/DB``.

The cluster directory goes to /dev/shm when it is RAM-backed with >= 1 GiB
free (CREATE DATABASE is ~10x faster there than on a VM disk, even with
fsync=off), else to the temp dir; ``RELEASEGATE_TEST_PG_DIR`` overrides.
When running as root, initdb/pg_ctl run as ``postgres`` via runuser (or su).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Self

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL, make_url

REPO_ROOT = Path(__file__).resolve().parents[1]
ENSURE_SCRIPT = REPO_ROOT / "scripts" / "ensure-postgres.sh"

PG_USER = "postgres"
DRIVER = "postgresql+psycopg"
TEMPLATE_DB = "releasegate_test_template"
_TEMPLATE_LOCK_KEY = 0x52470001  # pg_advisory_lock key guarding TEMPLATE_DB creation

INSTALL_TIMEOUT = 1800  # apt-get on a fresh machine
INITDB_TIMEOUT = 180
START_TIMEOUT = 60
STOP_TIMEOUT = 60

_SERVER_SETTINGS = (
    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
    # Cap WAL (CREATE DATABASE ... WAL_LOG writes ~8 MB per database): the
    # cluster usually lives in RAM (/dev/shm).
    " -c max_wal_size=128MB -c min_wal_size=32MB"
)
# Prefer RAM-backed /dev/shm for the cluster when it has this much free space
# (Docker's default 64 MB /dev/shm is too small; then the temp dir is used).
_SHM_MIN_FREE = 1 << 30
# Unix socket paths are limited to ~107 bytes (".s.PGSQL.NNNNN" is appended).
_MAX_SOCKET_DIR_LEN = 80


# Runs in a separate session; blocks on stdin (a pipe whose write end only the
# test process holds) and, once that closes -- normal stop() or the test process
# dying from SIGTERM/SIGKILL, when atexit hooks never run -- stops the server
# and deletes the cluster directory.
_WATCHDOG = r"""
import json, os, shutil, signal, subprocess, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
stop_cmd, root = json.loads(sys.argv[1])
try:
    sys.stdin.buffer.read()
except BaseException:
    pass
if os.path.exists(os.path.join(root, "data", "postmaster.pid")):
    try:
        subprocess.run(stop_cmd, cwd=root, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60, check=False)
    except Exception:
        pass
shutil.rmtree(root, ignore_errors=True)
"""


class PostgresUnavailable(RuntimeError):
    """PostgreSQL could not be installed, initialised or started."""


# ---------------------------------------------------------------------------
# Helpers


def ensure_postgres() -> Path:
    """Run scripts/ensure-postgres.sh and return the PostgreSQL bin directory."""
    try:
        proc = subprocess.run(
            ["bash", str(ENSURE_SCRIPT)],
            check=False,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        raise PostgresUnavailable(
            f"{ENSURE_SCRIPT} timed out after {INSTALL_TIMEOUT}s\n{_tail(exc.stderr)}"
        ) from exc
    if proc.returncode != 0:
        raise PostgresUnavailable(f"{ENSURE_SCRIPT} failed (exit {proc.returncode}):\n{_tail(proc.stderr)}")
    lines = proc.stdout.strip().splitlines()
    bindir = Path(lines[-1]) if lines else None
    if bindir is None or not (bindir / "initdb").exists():
        raise PostgresUnavailable(
            f"{ENSURE_SCRIPT} printed no usable bin directory: {proc.stdout!r}\n{_tail(proc.stderr)}"
        )
    return bindir


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (racy; callers retry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(text: Any, lines: int = 40) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join(str(text).rstrip().splitlines()[-lines:])


def _clean_env() -> dict[str, str]:
    """Environment for PostgreSQL tools: no stray PG* settings, C locale."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    env["LANG"] = "C"
    return env


def _libpq_url(url: URL) -> str:
    """SQLAlchemy URL -> libpq URI for psycopg.connect()."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _shm_usable() -> bool:
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return False
    return os.access("/dev/shm", os.W_OK | os.X_OK) and st.f_bavail * st.f_frsize >= _SHM_MIN_FREE


def _worker_tag() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


_name_counter = itertools.count()


def unique_db_name(prefix: str = "rg") -> str:
    """A database name unique across processes/hosts, <= 63 bytes, lowercase."""
    tag = re.sub(r"[^a-z0-9]", "", _worker_tag().lower())[:8]
    name = f"{prefix}_{tag}_{os.getpid()}_{next(_name_counter)}_{uuid.uuid4().hex[:8]}"
    return name[:63]


# ---------------------------------------------------------------------------
# Database helpers shared by throwaway and external servers


class _PgServer:
    """Database management against a server reachable through ``admin_url``."""

    _admin: URL | None = None
    _template_ready = False
    _template_lock: threading.Lock

    def __init__(self) -> None:
        self._template_lock = threading.Lock()

    @property
    def admin_url(self) -> str:
        """SQLAlchemy URL of the maintenance database (``postgres``)."""
        if self._admin is None:
            raise RuntimeError("server not started")
        return self._admin.render_as_string(hide_password=False)

    def url_for(self, dbname: str) -> str:
        if self._admin is None:
            raise RuntimeError("server not started")
        return self._admin.set(database=dbname).render_as_string(hide_password=False)

    def _admin_conn(self) -> psycopg.Connection[Any]:
        if self._admin is None:
            raise RuntimeError("server not started")
        return psycopg.connect(_libpq_url(self._admin), autocommit=True, connect_timeout=10)

    def create_database(self, name: str, template: str | None = None) -> str:
        """CREATE DATABASE name [TEMPLATE template]; returns its SQLAlchemy URL."""
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            query = sql.SQL("{} TEMPLATE {}").format(query, sql.Identifier(template))
        with self._admin_conn() as conn:
            conn.execute(query)
        return self.url_for(name)

    def drop_database(self, name_or_url: str) -> None:
        """DROP DATABASE IF EXISTS ... WITH (FORCE) (kicks out open connections)."""
        name = name_or_url
        if "://" in name_or_url:
            name = make_url(name_or_url).database or ""
        if not name:
            raise ValueError(f"no database name in {name_or_url!r}")
        with self._admin_conn() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def _ensure_template(self) -> None:
        """Create (once) an empty template database nobody may connect to.

        Copying from a dedicated template instead of template1 keeps
        ``CREATE DATABASE`` from failing with "source database is being
        accessed by other users" when something connects to template1.
        """
        if self._template_ready:
            return
        with self._template_lock:
            if self._template_ready:
                return
            with self._admin_conn() as conn:
                # Several processes (xdist workers) may share one server
                # (RELEASEGATE_TEST_PG_URL): serialise with an advisory lock.
                conn.execute("SELECT pg_advisory_lock(%s)", (_TEMPLATE_LOCK_KEY,))
                try:
                    exists = conn.execute(
                        "SELECT 1 FROM pg_database WHERE datname = %s", (TEMPLATE_DB,)
                    ).fetchone()
                    if not exists:
                        # A client not taking the lock may have created it meanwhile.
                        with contextlib.suppress(psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
                            conn.execute(
                                sql.SQL(
                                    "CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8' "
                                    "IS_TEMPLATE true ALLOW_CONNECTIONS false"
                                ).format(sql.Identifier(TEMPLATE_DB))
                            )
                finally:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (_TEMPLATE_LOCK_KEY,))
            self._template_ready = True

    def fresh_database(self, prefix: str = "rg", template: str | None = None) -> str:
        """Create a uniquely named database; return its SQLAlchemy URL.

        By default it is an empty copy of a dedicated, connection-less template
        (``releasegate_test_template``).  Pass ``template=`` to clone a database
        you prepared yourself (e.g. with migrations applied) -- that template
        must have no open connections while it is copied.
        """
        if template is None:
            self._ensure_template()
            template = TEMPLATE_DB
        return self.create_database(unique_db_name(prefix), template=template)


class ExternalServer(_PgServer):
    """An already running server (e.g. ``RELEASEGATE_TEST_PG_URL``); never stopped by us."""

    def __init__(self, admin_url: str) -> None:
        super().__init__()
        url = make_url(admin_url)
        if url.drivername in ("postgres", "postgresql"):
            url = url.set(drivername=DRIVER)
        self._admin = url.set(database=url.database or "postgres")

    def start(self) -> Self:
        try:
            with self._admin_conn() as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            raise PostgresUnavailable(
                f"cannot connect to {self._admin.render_as_string() if self._admin else '?'}: {exc}"
            ) from exc
        return self

    def stop(self) -> None:
        pass


# ---------------------------------------------------------------------------
# Throwaway cluster


class ThrowawayCluster(_PgServer):
    """A private PostgreSQL cluster in a temp dir, listening on 127.0.0.1 only.

    Usage::

        cluster = ThrowawayCluster().start()
        url = cluster.fresh_database()
        ...
        cluster.stop()
    """

    def __init__(self, base_dir: str | os.PathLike[str] | None = None) -> None:
        super().__init__()
        self._base_dir = base_dir or os.environ.get("RELEASEGATE_TEST_PG_DIR") or None
        self.bindir: Path | None = None
        self.root: Path | None = None
        self.port: int | None = None
        self.run_as_postgres = False
        self._watchdog: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None
        self._started = False

    # -- paths --------------------------------------------------------------
    @property
    def datadir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    @property
    def socketdir(self) -> Path:
        assert self.root is not None
        return self.root / "sock"

    @property
    def logfile(self) -> Path:
        assert self.root is not None
        return self.root / "server.log"

    # -- process plumbing ---------------------------------------------------
    def _as_pg(self, argv: list[str]) -> list[str]:
        """Wrap argv so it runs as the postgres user when we are root."""
        if not self.run_as_postgres:
            return argv
        if shutil.which("runuser"):
            return ["runuser", "-u", PG_USER, "--", *argv]
        return ["su", "-s", "/bin/sh", PG_USER, "-c", shlex.join(argv)]

    def _run(self, argv: list[str], timeout: float, what: str) -> subprocess.CompletedProcess[str]:
        cmd = self._as_pg(argv)
        try:
            proc = subprocess.run(
                cmd,
                check=False,
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=self.root,  # postgres must be able to read its cwd
                env=_clean_env(),
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise PostgresUnavailable(
                f"{what} timed out after {timeout}s: {shlex.join(cmd)}\n"
                f"{_tail(exc.stdout)}\n{_tail(exc.stderr)}\n{self._log_tail()}"
            ) from exc
        if proc.returncode != 0:
            raise PostgresUnavailable(
                f"{what} failed (exit {proc.returncode}): {shlex.join(cmd)}\n"
                f"{_tail(proc.stdout)}\n{_tail(proc.stderr)}\n{self._log_tail()}"
            )
        return proc

    def _log_tail(self) -> str:
        try:
            if self.root is not None and self.logfile.exists():
                return "--- server log (tail) ---\n" + _tail(self.logfile.read_text(errors="replace"))
        except OSError:
            pass
        return ""

    def _make_root(self) -> Path:
        """Temp dir the postgres user owns and can reach (incl. its socket dir)."""
        if self._base_dir:
            candidates = [str(self._base_dir)]  # explicit choice: no fallback
        else:
            candidates = [tempfile.gettempdir(), "/tmp"]
            if _shm_usable():
                candidates.insert(0, "/dev/shm")
        errors = []
        for base in dict.fromkeys(str(c) for c in candidates):
            root = Path(tempfile.mkdtemp(prefix=f"rg-pg-{_worker_tag()}-", dir=base))
            sock = root / "sock"
            if len(str(sock)) > _MAX_SOCKET_DIR_LEN:
                shutil.rmtree(root, ignore_errors=True)
                errors.append(f"{base}: path too long for a unix socket")
                continue
            sock.mkdir()
            if self.run_as_postgres:
                pw = pwd.getpwnam(PG_USER)
                for p in (root, sock):
                    os.chown(p, pw.pw_uid, pw.pw_gid)
                # Every ancestor must be traversable by postgres.
                probe = subprocess.run(
                    self._as_pg(["test", "-w", str(sock), "-a", "-x", str(sock)]),
                    check=False,
                    capture_output=True,
                    timeout=30,
                    cwd="/",
                )
                if probe.returncode != 0:
                    shutil.rmtree(root, ignore_errors=True)
                    errors.append(f"{base}: not accessible to the {PG_USER} user")
                    continue
            return root
        raise PostgresUnavailable("no usable temp dir for the cluster: " + "; ".join(errors))

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> Self:
        if self._started:
            return self
        t0 = time.monotonic()
        self.bindir = ensure_postgres()

        if os.geteuid() == 0:
            try:
                pwd.getpwnam(PG_USER)
            except KeyError as exc:
                raise PostgresUnavailable(
                    f"running as root but there is no '{PG_USER}' user to run initdb as"
                ) from exc
            if not (shutil.which("runuser") or shutil.which("su")):
                raise PostgresUnavailable("running as root but neither runuser nor su is available")
            self.run_as_postgres = True
        # Otherwise we already are postgres or an unprivileged user: run directly.

        self.root = self._make_root()
        atexit.register(self.stop)
        self._start_watchdog()
        try:
            self._run(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(self.datadir),
                    "--auth=trust",
                    "-U",
                    PG_USER,
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                INITDB_TIMEOUT,
                "initdb",
            )
            self._start_server()
        except BaseException:
            self.stop()
            raise
        self._admin = URL.create(
            DRIVER, username=PG_USER, host="127.0.0.1", port=self.port, database="postgres"
        )
        try:
            with self._admin_conn() as conn:
                conn.execute("SELECT 1")
        except Exception as exc:
            msg = f"server started but refuses connections: {exc}\n{self._log_tail()}"
            self.stop()
            raise PostgresUnavailable(msg) from exc
        self._started = True
        self.startup_seconds = time.monotonic() - t0
        return self

    def halt(self) -> None:
        """Stop the server process (immediate mode: like a crash), keeping the cluster and its port.

        Open connections break at once; new ones are refused until ``resume()``.
        """
        if not self._started:
            raise RuntimeError("server not started")
        self._pg_ctl_stop()

    def resume(self) -> None:
        """Start a halted server again on the same port, so existing URLs keep working."""
        if not self._started or self.port is None:
            raise RuntimeError("server not started")
        self._start_server(port=self.port)

    def restart(self) -> None:
        """``halt()`` then ``resume()``: every client connection breaks; the data stays."""
        self.halt()
        self.resume()

    def _start_server(self, port: int | None = None) -> None:
        assert self.bindir is not None
        last_error: PostgresUnavailable | None = None
        for _attempt in range(5):
            if port is None:
                port = free_port()
            opts = (
                f"-c listen_addresses=127.0.0.1 -p {port} -k {shlex.quote(str(self.socketdir))} "
                f"{_SERVER_SETTINGS}"
            )
            try:
                self._run(
                    [
                        str(self.bindir / "pg_ctl"),
                        "-D",
                        str(self.datadir),
                        "-l",
                        str(self.logfile),
                        "-o",
                        opts,
                        "-t",
                        str(START_TIMEOUT),
                        "-w",
                        "start",
                    ],
                    START_TIMEOUT + 15,
                    "pg_ctl start",
                )
            except PostgresUnavailable as exc:
                last_error = exc
                # Lost a race for the port (xdist workers, other services): retry, on a new port
                # unless this is a resume, whose clients know the old one.
                if "could not bind" in str(exc) or "already in use" in str(exc):
                    self._pg_ctl_stop()
                    if port != self.port:
                        port = None
                    continue
                raise
            self.port = port
            return
        assert last_error is not None
        raise last_error

    def _stop_cmd(self) -> list[str]:
        assert self.bindir is not None
        return self._as_pg(
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-m",
                "immediate",
                "-t",
                str(STOP_TIMEOUT),
                "-w",
                "stop",
            ]
        )

    def _start_watchdog(self) -> None:
        """Clean up even if this process is killed (see _WATCHDOG)."""
        try:
            self._watchdog = subprocess.Popen(
                [sys.executable, "-c", _WATCHDOG, json.dumps([self._stop_cmd(), str(self.root)])],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd="/",
                env=_clean_env(),
                start_new_session=True,
            )
        except OSError:
            self._watchdog = None  # best effort; stop()/atexit still clean up

    def _pg_ctl_stop(self) -> None:
        if self.bindir is None or self.root is None or not (self.datadir / "postmaster.pid").exists():
            return
        try:
            subprocess.run(
                self._stop_cmd(),
                check=False,
                capture_output=True,
                timeout=STOP_TIMEOUT + 15,
                cwd=self.root,
                env=_clean_env(),
                stdin=subprocess.DEVNULL,
            )
        except (subprocess.TimeoutExpired, OSError):
            self._kill_postmaster()

    def _kill_postmaster(self) -> None:
        try:
            pid = int((self.datadir / "postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, 9)
        except (OSError, ValueError, IndexError):
            pass

    def stop(self) -> None:
        """Stop the server (immediate mode) and delete the cluster directory."""
        self._pg_ctl_stop()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
        self._started = False
        self._admin = None
        self._template_ready = False
        atexit.unregister(self.stop)
        if self._watchdog is not None:
            # Closing the pipe lets the watchdog exit (nothing left to clean).
            if self._watchdog.stdin is not None:
                self._watchdog.stdin.close()
            try:
                self._watchdog.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._watchdog.kill()
            self._watchdog = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
