"""SQLite's write lock, handed out in arrival order within this process.

Why: SQLite has one writer at a time. A connection that finds the lock taken sleeps in SQLite's busy
handler (1, 2, 5, 10, ... then 100 ms at a time) and tries again. Under load that wastes the lock: it
sits free while every waiter sleeps, a newcomer overtakes a writer that has waited for seconds, and
each sleeper holds a pooled connection meanwhile. Measured with 50 concurrent gate callers: 65 ms of
waiting per write on average, and a pool starved for 370 ms per checkout. Writers of one process
therefore queue here first, and each is woken the moment the previous one commits or rolls back.
Other processes on the same file still meet SQLite's busy handler, as before.

A connection joins the queue at its first writing statement (the one that makes pysqlite open the
transaction) and leaves it when the transaction ends: commit, rollback (the pool rolls back every
connection it takes back) or close. Waiting longer than the busy timeout fails as SQLite would.

Must not: queue reads (WAL readers never wait for the writer), or hold the lock past a transaction.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import deque
from typing import Any

from sqlalchemy import Engine, event

_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER")


class WriterQueue:
    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._mutex = threading.Lock()
        self._owner: object | None = None
        self._waiting: deque[tuple[object, threading.Event]] = deque()

    def acquire(self, owner: object) -> None:
        with self._mutex:
            if self._owner is owner:
                return
            if self._owner is None and not self._waiting:
                self._owner = owner
                return
            entry = (owner, threading.Event())
            self._waiting.append(entry)
        if entry[1].wait(self._timeout):
            return
        with self._mutex:
            if self._owner is owner:  # handed over just as the wait timed out
                return
            self._waiting.remove(entry)
        raise sqlite3.OperationalError("database is locked (waited for this process's other writers)")

    def release(self, owner: object) -> None:
        with self._mutex:
            if self._owner is not owner:
                return
            if self._waiting:
                self._owner, ready = self._waiting.popleft()
                ready.set()
            else:
                self._owner = None


class QueuedConnection(sqlite3.Connection):
    """A pysqlite connection that leaves its engine's ``WriterQueue`` when its transaction ends."""

    writers: WriterQueue | None = None

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._leave()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._leave()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._leave()

    def _leave(self) -> None:
        if self.writers is not None:
            self.writers.release(self)


def install(engine: Engine, timeout: float) -> None:
    """Queue the writers of ``engine``, whose connections must be ``QueuedConnection``s (``factory``)."""
    writers = WriterQueue(timeout)

    @event.listens_for(engine, "connect")
    def _attach(dbapi_connection: Any, _record: Any) -> None:
        if isinstance(dbapi_connection, QueuedConnection):
            dbapi_connection.writers = writers

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip()[:7].upper().startswith(_WRITES):
            writers.acquire(conn.connection.dbapi_connection)

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn: Any, _cursor: Any, *_: Any) -> None:
        dbapi_connection = conn.connection.dbapi_connection
        if not dbapi_connection.in_transaction:  # a statement that committed itself (autocommit)
            writers.release(dbapi_connection)
