"""One SQLite file, one connection, explicit transactions that commit before returning.

Nested `Db.transaction` blocks join the outer one, so an RPC that touches the server, the
chain and the ledger commits all of it at once or nothing (a SIGKILL in between loses the
whole call, as a remote server's crash would).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import orjson

import fsm

T = TypeVar("T")


class Db:
    def __init__(self, path: Path, schema: str) -> None:
        self.path = path
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=10.0)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self._depth = 0
        with self.transaction():
            for statement in schema.split(";"):
                if statement.strip():
                    self.conn.execute(statement)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self.conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        finally:
            self._depth = 0
        self.conn.execute("COMMIT")

    def run(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def one(self, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self.conn.execute(sql, params).fetchone()
        return row

    def all(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return list(self.conn.execute(sql, params).fetchall())

    def meta(self, key: str, default: str) -> str:
        row = self.one("SELECT value FROM meta WHERE key = ?", (key,))
        return default if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.run(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )


def dump(value: object) -> str:
    """A record as JSON text, through fsm's converter (no pickle)."""
    return orjson.dumps(fsm.CONVERTER.unstructure(value)).decode()


def load(text: str | bytes, tp: Any) -> Any:
    """JSON text back into ``tp`` (an attrs class, ``list[Vtxo]``, ``NoneType``...)."""
    if tp is type(None):
        return None
    return fsm.CONVERTER.structure(orjson.loads(text), tp)


META_SCHEMA = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
