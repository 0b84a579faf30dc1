"""SQLite files: created owner-only, opened read-only without writing, never by mistake.

A read-write open creates a missing file (a new database); a read-only open is inspection,
so a missing file is a mistyped path (`DatabaseNotFound`), never a new empty database.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from pathlib import Path
from typing import Literal

import peewee

from fsm.errors import DatabaseNotFound


def sqlite_database(
    path: str | os.PathLike[str],
    *,
    synchronous: Literal["OFF", "NORMAL", "FULL"],
    busy_timeout: float,
    readonly: bool,
) -> peewee.SqliteDatabase:
    """The peewee database of a SQLite file: WAL, foreign keys on; or read-only.

    ``readonly``: the existing file through a ``mode=ro`` URI, without switching its
    journal mode (see `_readonly_uri`); raises `DatabaseNotFound` if there is no such file.
    """
    if readonly:
        _must_exist(path)
        return peewee.SqliteDatabase(_readonly_uri(path), uri=True, timeout=busy_timeout)
    _create_private(path)
    return _ExistingFile(
        os.fspath(path),
        pragmas={
            "journal_mode": "wal",
            "synchronous": synchronous,
            "foreign_keys": 1,
            "wal_autocheckpoint": 0,  # the store checkpoints off the callers' path (committer)
        },
        timeout=busy_timeout,
    )


class _ExistingFile(peewee.SqliteDatabase):
    """A SQLite database whose connections never create its file.

    The file is created once, when the store is opened (`_create_private`); every connection
    after that (a new thread's, the committer's after a pause, a reconnection) opens it with
    ``mode=rw``. Left to SQLite, a connection made after the file was deleted under a worker
    would create a new empty database at that path: a stray file, in which the worker reads
    "no such table" and `fsm.worker.dbfile` sees "replaced" where the truth is "deleted".
    """

    def _connect(self) -> sqlite3.Connection:
        name = str(self.database)
        params = dict(self.connect_params)
        if not _not_a_file(name):  # in memory, or a URI of the caller's: as peewee opens it
            name = f"file:{urllib.parse.quote(os.path.abspath(name))}?mode=rw"
            params["uri"] = True
        timeout = self._timeout  # type: ignore[attr-defined]
        conn: sqlite3.Connection = sqlite3.connect(
            name, timeout=timeout, isolation_level=None, **params
        )
        try:
            self._add_conn_hooks(conn)  # type: ignore[attr-defined]
        except Exception:
            conn.close()
            raise
        return conn


def _must_exist(path: str | os.PathLike[str]) -> None:
    """Refuse a read-only open of a file that is not there (an in-memory name is left be)."""
    name = os.fspath(path)
    if _not_a_file(name) or Path(name).is_file():
        return
    raise DatabaseNotFound(f"no database at {name!r}")


def _not_a_file(name: str) -> bool:
    """Names SQLite opens without a file of that name: in memory, or a ``file:`` URI."""
    return name in ("", ":memory:") or name.startswith("file:")


def _readonly_uri(path: str | os.PathLike[str]) -> str:
    """A ``mode=ro`` SQLite URI for ``path``, which reads without ever writing the file.

    A WAL database needs its ``-shm`` file to be read; in a directory nobody can write (a
    read-only mount) SQLite cannot create it. When there is also no ``-wal`` file, nothing
    can be writing the database (a writer needs one), so the file is opened ``immutable``.
    """
    absolute = os.path.abspath(os.fspath(path))
    query = "mode=ro"
    folder = os.path.dirname(absolute)
    if not os.access(folder, os.W_OK) and not os.path.exists(absolute + "-wal"):
        query += "&immutable=1"
    return f"file:{urllib.parse.quote(absolute)}?{query}"


def _create_private(path: str | os.PathLike[str]) -> None:
    """Create a new database file owner-only (0600): SQLite gives its -wal and -shm files the
    main file's mode, so the actions and their payloads are never world-readable.

    An existing file is left as it is; any other failure is left for SQLite to report.
    """
    name = os.fspath(path)
    if _not_a_file(name):
        return
    try:
        os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError:
        return
