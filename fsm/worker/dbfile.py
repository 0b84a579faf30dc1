"""The watch a worker keeps on its SQLite file, which may vanish under it without an error."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import attrs

from fsm.errors import DatabaseUnavailable

if TYPE_CHECKING:
    from fsm.store import Store

log = logging.getLogger("fsm.worker")


@attrs.frozen
class DatabaseFile:
    """The SQLite file a worker opened, to notice when it is deleted or replaced.

    SQLite keeps working on an unlinked file, so without this a worker whose database was
    removed (or restored from a copy) would go on driving actions into a file no one sees.
    """

    path: str
    device: int
    inode: int

    @classmethod
    def of(cls, store: Store) -> DatabaseFile | None:
        """The file under ``store``; ``None`` for PostgreSQL and in-memory databases."""
        if not store.is_sqlite:
            return None
        name = str(store.db.database)
        if name == ":memory:" or name.startswith("file:"):
            return None
        path = os.path.abspath(name)
        found = os.stat(path)
        return cls(path, found.st_dev, found.st_ino)

    def check(self) -> None:
        """Raise `DatabaseUnavailable` (after one log line) if the file is gone or another."""
        try:
            found = os.stat(self.path)
        except FileNotFoundError:
            problem = "was deleted"
        else:
            if (found.st_dev, found.st_ino) == (self.device, self.inode):
                return
            problem = "was replaced by another file"
        message = f"the database file {self.path} {problem} under the worker; stopping"
        log.error("%s", message)
        raise DatabaseUnavailable(message)
