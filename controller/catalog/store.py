"""The catalog's two engines: SQLite (a file, the default) and PostgreSQL (psycopg 3, for a fleet), behind one
small interface. Blocking calls: the controller runs them off its event loop (archive.py); the CLI calls them
directly.

The schema is versioned: ``fsctl_catalog_schema`` holds the versions applied, and ``migrate()`` applies the
missing ones in order, inside one transaction that holds a lock (PostgreSQL: an advisory lock; SQLite: BEGIN
IMMEDIATE), so two controllers starting at once against one database migrate it once. A database whose schema
is newer than this code keeps working (migrations only ever add), with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlsplit, urlunsplit

from .schema import COLUMNS, JSON_COLUMNS, NAMES, SCHEMA_VERSION, TIME_COLUMNS, UPLOAD_VERIFIED

log = logging.getLogger("controller.catalog")

TABLE = "fsctl_recordings"
SCHEMA_TABLE = "fsctl_catalog_schema"
CONNECT_TIMEOUT_S = 5
STATEMENT_TIMEOUT_MS = 15000
# Any constant: the advisory lock two controllers take to migrate one PostgreSQL database once.
MIGRATION_LOCK = 0x66736374  # "fsct"
MAX_LIMIT = 10000

_TYPES = {
    "sqlite": {"text": "TEXT", "int": "INTEGER", "real": "REAL", "time": "TEXT", "json": "TEXT"},
    "postgresql": {"text": "TEXT", "int": "BIGINT", "real": "DOUBLE PRECISION", "time": "TIMESTAMPTZ",
                   "json": "JSONB"},
}


def _migrations(engine: str) -> dict[int, list[str]]:
    """Each version's statements, for one engine. Only ever append versions; never change one that shipped."""
    types = _TYPES[engine]
    columns = ",\n  ".join(f"{name} {types[kind]}" + (" PRIMARY KEY" if name == "recording_id" else "")
                           for name, kind in COLUMNS)
    return {
        1: [
            f"CREATE TABLE {TABLE} (\n  {columns}\n)",
            f"CREATE INDEX {TABLE}_start ON {TABLE} (start_time DESC)",
            f"CREATE INDEX {TABLE}_uuid ON {TABLE} (uuid)",
            f"CREATE INDEX {TABLE}_caller ON {TABLE} (caller, start_time)",
            f"CREATE INDEX {TABLE}_destination ON {TABLE} (destination, start_time)",
            f"CREATE INDEX {TABLE}_local ON {TABLE} (controller_id, upload_state, uploaded_at)",
        ],
    }


class CatalogError(Exception):
    """The catalog cannot be reached or refused: the message says which and why (no password in it)."""


def shown_url(url: str) -> str:
    """The catalog URL as messages show it: no password, no query."""
    if url.startswith("sqlite://"):
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = (f"{parts.username}@" if parts.username else "") + host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def default_url(directory: os.PathLike | str) -> str:
    return f"sqlite://{Path(directory).resolve() / 'catalog.sqlite3'}"


def open_store(url: str, *, migrations: dict[int, list[str]] | None = None) -> "Store":
    if url.startswith("sqlite://"):
        return SqliteStore(url[len("sqlite://"):], migrations=migrations)
    return PostgresStore(url, migrations=migrations)


def iso(value: Any) -> str | None:
    """A time as the catalog shows it: ISO 8601 UTC with milliseconds and Z."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Store:
    """One catalog database. Every method may raise CatalogError."""

    engine = ""
    blocking = True  # its calls block the thread (run them off the event loop)
    placeholder = "?"

    def __init__(self, migrations: dict[int, list[str]] | None) -> None:
        self.migrations = migrations if migrations is not None else _migrations(self.engine)
        self.version: int | None = None  # the schema's, once migrate() has run
        self._lock = threading.Lock()

    # ---- to implement ----

    def _connect(self): ...

    def _is_connection_error(self, exc: Exception) -> bool: ...

    def close(self) -> None:
        conn, self._conn = getattr(self, "_conn", None), None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # closing a connection that is already broken: nothing left to do
                pass

    # ---- the queries ----

    def migrate(self) -> int:
        """Create or bring the schema up to date; the version it is at now."""
        with self._lock:
            self.version = self._guard(self._migrate)
            return self.version

    def upsert(self, row: dict[str, Any]) -> bool:
        """Insert the row, or replace the one with its recording_id if that one is older (revision). True when
        written, False when the catalog already held a newer revision."""
        values = ", ".join(self._value_sql(kind) for _name, kind in COLUMNS)
        updates = ", ".join(f"{name} = excluded.{name}" for name in NAMES if name != "recording_id")
        sql = (f"INSERT INTO {TABLE} ({', '.join(NAMES)}) VALUES ({values}) ON CONFLICT (recording_id) DO UPDATE "
               f"SET {updates} WHERE {TABLE}.revision < excluded.revision")
        params = [self._to_db(kind, row.get(name)) for name, kind in COLUMNS]
        return bool(self._execute(sql, params, rowcount=True))

    def get(self, key: str) -> list[dict[str, Any]]:
        """Every recording of a call (by its uuid), or the one recording_id names; oldest first."""
        p = self.placeholder
        rows = self._execute(f"SELECT {', '.join(NAMES)} FROM {TABLE} WHERE uuid = {p} OR recording_id = {p} "
                             "ORDER BY start_time, recording_id", [key.lower(), key.lower()], fetch=True)
        return [self._row(r) for r in rows]

    def search(self, *, limit: int = 50, offset: int = 0, **criteria) -> list[dict[str, Any]]:
        """Newest first, ``limit`` of them after the first ``offset``; ``criteria`` as in ``_where``."""
        p = self.placeholder
        clause, params = self._where(**criteria)
        params += [max(1, min(int(limit), MAX_LIMIT)), max(0, int(offset))]
        rows = self._execute(f"SELECT {', '.join(NAMES)} FROM {TABLE}{clause} "
                             f"ORDER BY start_time DESC, recording_id DESC LIMIT {p} OFFSET {p}", params, fetch=True)
        return [self._row(r) for r in rows]

    def count(self, **criteria) -> int:
        """How many recordings match (``criteria`` as in ``_where``)."""
        clause, params = self._where(**criteria)
        return int(self._execute(f"SELECT count(*) FROM {TABLE}{clause}", params, fetch=True)[0][0])

    def _where(self, *, caller: str | None = None, destination: str | None = None, rule: str | None = None,
               switch: str | None = None, close_reason: str | None = None, since: str | None = None,
               until: str | None = None, gaps: bool | None = None, relayed: bool | None = None
               ) -> tuple[str, list[Any]]:
        """The WHERE clause and its parameters. since/until: ISO times (start_time at or after since, before
        until); gaps/relayed: True for only those with gaps (relayed to an agent), False for only those without."""
        p = self.placeholder
        where, params = [], []
        for column, value in (("caller", caller), ("destination", destination), ("rule", rule),
                              ("switch", switch), ("close_reason", close_reason)):
            if value is not None:
                where.append(f"{column} = {p}")
                params.append(value)
        for op, value in ((">=", since), ("<", until)):
            if value is not None:
                where.append(f"start_time {op} {self._value_sql('time')}")
                params.append(self._to_db("time", value))
        if gaps is not None:
            where.append("gaps > 0" if gaps else "gaps = 0")
        if relayed is not None:
            where.append("relay IS NOT NULL" if relayed else "relay IS NULL")
        return (f" WHERE {' AND '.join(where)}" if where else ""), params

    def existing(self, recording_ids: Iterable[str]) -> set[str]:
        """Which of these recordings the catalog holds."""
        ids, found = list(recording_ids), set()
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ", ".join([self.placeholder] * len(chunk))
            rows = self._execute(f"SELECT recording_id FROM {TABLE} WHERE recording_id IN ({marks})", chunk,
                                 fetch=True)
            found.update(r[0] for r in rows)
        return found

    def local_expired(self, controller_id: str, uploaded_before: str, limit: int = 500) -> list[dict[str, Any]]:
        """This controller's recordings still on its disk whose upload was verified before the given time."""
        p = self.placeholder
        rows = self._execute(
            f"SELECT {', '.join(NAMES)} FROM {TABLE} WHERE controller_id = {p} AND upload_state = {p} "
            f"AND local_path IS NOT NULL AND uploaded_at < {self._value_sql('time')} ORDER BY uploaded_at LIMIT {p}",
            [controller_id, UPLOAD_VERIFIED, self._to_db("time", uploaded_before), limit], fetch=True)
        return [self._row(r) for r in rows]

    def ping(self) -> None:
        self._execute("SELECT 1", [], fetch=True)

    # ---- plumbing ----

    def _value_sql(self, kind: str) -> str:
        return self.placeholder

    def _to_db(self, kind: str, value: Any) -> Any:
        if value is None:
            return None
        if kind == "json":
            return json.dumps(value, sort_keys=True)
        if kind == "time":
            return iso(value)
        return value

    def _row(self, values) -> dict[str, Any]:
        row = dict(zip(NAMES, values))
        for name in TIME_COLUMNS:
            row[name] = iso(row[name])
        for name in JSON_COLUMNS:
            if isinstance(row[name], str):
                row[name] = json.loads(row[name])
        return row

    def _execute(self, sql: str, params: list, *, fetch: bool = False, rowcount: bool = False):
        with self._lock:
            if self.version is None:
                self.version = self._guard(self._migrate)
            return self._guard(lambda: self._run(sql, params, fetch, rowcount))

    def _guard(self, fn):
        try:
            return fn()
        except CatalogError:
            raise
        except Exception as exc:
            if self._is_connection_error(exc):
                self._drop()
            raise CatalogError(self._describe(exc)) from exc

    def _describe(self, exc: Exception) -> str:
        return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"

    def _drop(self) -> None:
        """Forget a connection that failed: the next query opens a new one."""
        self.close()

    def _run(self, sql, params, fetch, rowcount): ...

    def _migrate(self) -> int: ...

    def _apply_missing(self, cursor, found: int) -> int:
        known = max(self.migrations)
        if found > known:
            log.warning("catalog: its schema is version %d, newer than this controller's %d: writing the columns "
                        "this version knows; upgrade the controller", found, known)
            return found
        for version in sorted(v for v in self.migrations if v > found):
            for statement in self.migrations[version]:
                cursor.execute(statement)
            cursor.execute(f"INSERT INTO {SCHEMA_TABLE} (version, applied_at) VALUES "
                           f"({self.placeholder}, {self.placeholder})", [version, iso(datetime.now(timezone.utc))])
            log.info("catalog: schema migrated to version %d", version)
        return max(found, known)


class SqliteStore(Store):
    engine = "sqlite"

    def __init__(self, path: str, *, migrations: dict[int, list[str]] | None = None) -> None:
        super().__init__(migrations)
        self.path = Path(path)
        self.url = f"sqlite://{path}"
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(str(self.path), timeout=10, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            except (OSError, sqlite3.Error) as exc:
                raise CatalogError(f"cannot open the catalog {self.path}: {exc}") from exc
            self._conn = conn
        return self._conn

    def _is_connection_error(self, exc: Exception) -> bool:
        return isinstance(exc, sqlite3.OperationalError)

    def _run(self, sql, params, fetch, rowcount):
        cursor = self._connect().execute(sql, params)
        if fetch:
            return cursor.fetchall()
        return cursor.rowcount if rowcount else None

    def _migrate(self) -> int:
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (version INTEGER NOT NULL, applied_at TEXT)")
            found = conn.execute(f"SELECT coalesce(max(version), 0) FROM {SCHEMA_TABLE}").fetchone()[0]
            version = self._apply_missing(conn, found)
            conn.execute("COMMIT")
            return version
        except BaseException:
            conn.execute("ROLLBACK")
            raise


class PostgresStore(Store):
    engine = "postgresql"
    blocking = False  # psycopg waits through gevent's select when gevent has patched it
    placeholder = "%s"

    def __init__(self, url: str, *, migrations: dict[int, list[str]] | None = None) -> None:
        super().__init__(migrations)
        self.url = url
        self._conn = None

    def _connect(self):
        import psycopg

        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                                             options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}")
            except psycopg.Error as exc:
                raise CatalogError(f"cannot connect to {shown_url(self.url)}: {self._describe(exc)}") from exc
        return self._conn

    def _describe(self, exc: Exception) -> str:
        # psycopg's messages name the host and the database, never the password.
        return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"

    def _is_connection_error(self, exc: Exception) -> bool:
        import psycopg

        return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)) or (
            self._conn is not None and (self._conn.closed or self._conn.broken))

    def _to_db(self, kind: str, value: Any) -> Any:
        if kind == "json" and value is not None:
            from psycopg.types.json import Jsonb

            return Jsonb(value)
        return super()._to_db(kind, value)

    def _value_sql(self, kind: str) -> str:
        return "%s::timestamptz" if kind == "time" else "%s"

    def _run(self, sql, params, fetch, rowcount):
        with self._connect().cursor() as cursor:
            cursor.execute(sql, params)
            if fetch:
                return cursor.fetchall()
            return cursor.rowcount if rowcount else None

    def _migrate(self) -> int:
        conn = self._connect()
        with conn.transaction():
            with conn.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
                cursor.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (version INTEGER NOT NULL, "
                               "applied_at TIMESTAMPTZ)")
                cursor.execute(f"SELECT coalesce(max(version), 0) FROM {SCHEMA_TABLE}")
                found = cursor.fetchone()[0]
                return self._apply_missing(cursor, found)

    def existing(self, recording_ids: Iterable[str]) -> set[str]:
        ids = list(recording_ids)
        if not ids:
            return set()
        rows = self._execute(f"SELECT recording_id FROM {TABLE} WHERE recording_id = ANY(%s)", [ids], fetch=True)
        return {r[0] for r in rows}


__all__ = ["CatalogError", "SCHEMA_VERSION", "Store", "SqliteStore", "PostgresStore", "open_store", "default_url",
           "shown_url", "iso"]
