"""Proves the PostgreSQL test harness (tests/pgcluster.py, tests/pg_fixtures.py)."""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.pgcluster import ExternalServer, PostgresUnavailable, ThrowawayCluster

# pg_cluster / pg_url come from tests/conftest.py (``from tests.pg_fixtures import ...``).

pytestmark = pytest.mark.postgres

_REPO_ROOT = Path(__file__).resolve().parents[2]


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url, poolclass=sa.NullPool)


def test_connect_and_select_version(pg_url: str) -> None:
    engine = _engine(pg_url)
    assert engine.dialect.driver == "psycopg"
    assert pg_url.startswith("postgresql+psycopg://")
    with engine.connect() as conn:
        version = conn.execute(sa.text("select version()")).scalar_one()
        assert version.startswith("PostgreSQL ")
        assert conn.execute(sa.text("select current_database()")).scalar_one() == sa.make_url(pg_url).database
        assert conn.execute(sa.text("show server_encoding")).scalar_one() == "UTF8"


def test_create_table_and_roundtrip(pg_url: str) -> None:
    md = sa.MetaData()
    items = sa.Table(
        "items",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(50), nullable=False, unique=True),
    )
    engine = _engine(pg_url)
    md.create_all(engine)
    with engine.begin() as conn:
        conn.execute(items.insert(), [{"name": "a"}, {"name": "b"}])
    with engine.connect() as conn:
        assert conn.execute(sa.select(items.c.name).order_by(items.c.id)).scalars().all() == [
            "a",
            "b",
        ]
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(items.insert(), [{"name": "a"}])


def test_fresh_databases_are_isolated(pg_cluster: ThrowawayCluster | ExternalServer) -> None:
    url_a = pg_cluster.fresh_database()
    url_b = pg_cluster.fresh_database()
    try:
        assert url_a != url_b
        with _engine(url_a).begin() as conn:
            conn.execute(sa.text("create table only_in_a (x int)"))
            conn.execute(sa.text("insert into only_in_a values (1)"))
        assert sa.inspect(_engine(url_a)).get_table_names() == ["only_in_a"]
        assert sa.inspect(_engine(url_b)).get_table_names() == []
        # ... and a new database does not inherit anything either.
        url_c = pg_cluster.fresh_database()
        try:
            assert sa.inspect(_engine(url_c)).get_table_names() == []
        finally:
            pg_cluster.drop_database(url_c)
    finally:
        pg_cluster.drop_database(url_a)
        pg_cluster.drop_database(url_b)


def test_drop_database_forces_out_open_connections(
    pg_cluster: ThrowawayCluster | ExternalServer,
) -> None:
    url = pg_cluster.fresh_database()
    name = sa.make_url(url).database
    engine = sa.create_engine(url)  # pooled: keeps a connection open
    with engine.connect() as conn:
        conn.execute(sa.text("select 1"))
    pg_cluster.drop_database(url)  # must not fail with "being accessed by other users"
    with _engine(pg_cluster.admin_url).connect() as conn:
        assert (
            conn.execute(
                sa.text("select count(*) from pg_database where datname = :n"), {"n": name}
            ).scalar_one()
            == 0
        )
    engine.dispose()


@pytest.fixture
def throwaway(pg_cluster: ThrowawayCluster | ExternalServer) -> Iterator[ThrowawayCluster]:
    """The session's throwaway cluster, or (with RELEASEGATE_TEST_PG_URL) a private one."""
    if isinstance(pg_cluster, ThrowawayCluster):
        yield pg_cluster
        return
    cluster = ThrowawayCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


def _tcp_listeners(port: int) -> set[str]:
    """Local addresses with a LISTEN socket on ``port`` (from /proc/net/tcp{,6})."""
    found: set[str] = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            hexip, hexport = local.split(":")
            if state != "0A" or int(hexport, 16) != port:
                continue
            raw = bytes.fromhex(hexip)
            # The kernel prints each 32-bit word in host (little-endian) order.
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(socket.inet_ntop(family, raw))
    return found


def _non_loopback_ipv4() -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1; no packet is sent
            ip = s.getsockname()[0]
    except OSError:
        return None
    return None if ip.startswith("127.") or ip == "0.0.0.0" else ip


def test_listens_on_127_0_0_1_only(throwaway: ThrowawayCluster) -> None:
    assert throwaway.port is not None
    assert sa.make_url(throwaway.admin_url).host == "127.0.0.1"
    with _engine(throwaway.admin_url).connect() as conn:
        assert conn.execute(sa.text("show listen_addresses")).scalar_one() == "127.0.0.1"
        assert int(conn.execute(sa.text("show port")).scalar_one()) == throwaway.port
    if Path("/proc/net/tcp").exists():
        assert _tcp_listeners(throwaway.port) == {"127.0.0.1"}
    other = _non_loopback_ipv4()
    if other is not None:
        with pytest.raises(OSError):
            socket.create_connection((other, throwaway.port), timeout=2).close()


def test_cluster_runs_as_postgres_user_and_cleans_up(throwaway: ThrowawayCluster) -> None:
    with _engine(throwaway.admin_url).connect() as conn:
        datadir = conn.execute(sa.text("show data_directory")).scalar_one()
        assert conn.execute(sa.text("show fsync")).scalar_one() == "off"
        assert int(conn.execute(sa.text("show max_connections")).scalar_one()) == 300
    assert Path(datadir) == throwaway.datadir
    pid = int((throwaway.datadir / "postmaster.pid").read_text().splitlines()[0])
    server_uid = os.stat(f"/proc/{pid}").st_uid
    if os.geteuid() == 0:
        # initdb and the server must have run as the postgres user, not root.
        pg_uid = pwd.getpwnam("postgres").pw_uid
        assert throwaway.run_as_postgres
        assert os.stat(datadir).st_uid == pg_uid
        assert os.stat(throwaway.datadir / "PG_VERSION").st_uid == pg_uid
        assert server_uid == pg_uid
    else:
        assert server_uid == os.geteuid()


def test_private_cluster_start_stop_removes_everything() -> None:
    cluster = ThrowawayCluster().start()
    root = cluster.root
    port = cluster.port
    assert root is not None and root.is_dir() and port is not None
    url = cluster.fresh_database()
    with _engine(url).connect() as conn:
        assert conn.execute(sa.text("select 1")).scalar_one() == 1
    cluster.stop()
    assert not root.exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_unreachable_external_server_raises_clear_error() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(PostgresUnavailable, match="cannot connect"):
        ExternalServer(f"postgresql://postgres@127.0.0.1:{port}/postgres").start()


def test_unavailable_postgres_fails_instead_of_skipping(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "test_needs_pg.py").write_text(
        textwrap.dedent(
            """
            from tests.pg_fixtures import pg_cluster, pg_url  # noqa: F401

            def test_needs_pg(pg_url):
                pass
            """
        )
    )
    env = dict(os.environ)
    env["RELEASEGATE_TEST_PG_URL"] = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO_ROOT), env.get("PYTHONPATH")]))
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_ADDOPTS", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rA",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            str(tmp_path / "test_needs_pg.py"),
        ],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "1 error" in out, out
    assert "skipped" not in out, out
    assert "PostgreSQL is required" in out, out
