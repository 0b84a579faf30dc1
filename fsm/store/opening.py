"""`open_store`: a store from a database URL (SQLite file or PostgreSQL server)."""

from __future__ import annotations

from typing import Any

import peewee

from fsm.store.store import DEFAULT_LEASE_TTL, Store


def open_store(url: str, **kwargs: Any) -> Store:
    """A store from a URL.

    ``sqlite:///relative/path``, ``sqlite:////abs/path`` or a plain file path: SQLite (WAL).
    ``postgresql://user@host:port/dbname`` (``postgres://`` too): PostgreSQL through psycopg
    (``pip install 'fsm[postgres]'``); ``?options=-c%20search_path%3Dmyschema`` and other
    query parameters are passed to the driver. Raises ``ValueError`` naming the accepted
    forms for anything else.

    ``readonly=True`` opens an existing database for inspection only (see `Store`): nothing
    is created, migrated or switched, on SQLite or PostgreSQL; a SQLite file that is not
    there raises `DatabaseNotFound`.
    """
    path = sqlite_path(url)
    if path is not None:
        return Store.sqlite(path, **kwargs)
    from playhouse.db_url import parse

    params = parse(url)
    params.pop("autorollback", None)
    return _postgres(params, **kwargs)


def sqlite_path(url: str) -> str | None:
    """The SQLite file a URL names (the forms `open_store` accepts), or ``None`` for a
    PostgreSQL URL; raises ``ValueError`` for any other scheme."""
    if url.startswith("sqlite:///"):
        return url[len("sqlite:///") :]
    scheme = url.split("://", 1)[0] if "://" in url else None
    if scheme is None:
        return url
    if scheme in ("postgres", "postgresql"):
        return None
    raise ValueError(
        f"unsupported database URL scheme {scheme!r}: use sqlite:///PATH, a file path, "
        "or postgresql://USER@HOST:PORT/DB"
    )


CONNECT_TIMEOUT = 10
"""Seconds a PostgreSQL connection attempt may take (libpq's ``connect_timeout``)."""

PG_TIMEOUTS: dict[str, Any] = {
    "connect_timeout": CONNECT_TIMEOUT,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}
"""libpq parameters every PostgreSQL store connects with unless its URL says otherwise: a
dead peer is noticed after about 10 + 3 x 5 = 25 seconds of silence, within a lease."""


def _postgres(params: dict[str, Any], **kwargs: Any) -> Store:
    """A store on PostgreSQL; ``params`` are peewee/psycopg connection parameters."""
    try:
        import psycopg  # noqa: F401  (peewee picks psycopg 3 when it is importable)
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ValueError(
            "PostgreSQL needs the psycopg driver: pip install 'fsm[postgres]'"
        ) from exc
    database = params.pop("database")
    # A connection attempt or a statement must not wait for ever on a server that stopped
    # answering (a partition, a proxy or load balancer that accepts and forwards nothing):
    # the committer's thread would hang with it, and the worker with its committer. A
    # connect gives up after CONNECT_TIMEOUT; TCP keepalives end a connection whose peer is
    # gone within about KEEPALIVE seconds. The URL's own values win.
    for name, value in PG_TIMEOUTS.items():
        params.setdefault(name, value)
    # A session stopped inside a transaction (SIGSTOP, a frozen VM) holds its row locks, and
    # the other workers' claims skip locked rows for ever: the server ends such a session
    # once it has idled in a transaction for a lease's time, so its rows are freed (the
    # paused worker, resumed, finds its connection gone and retries). Given first, so an
    # ``options`` of the URL can override it.
    ttl = float(kwargs.get("lease_ttl", DEFAULT_LEASE_TTL))
    idle = f"-c idle_in_transaction_session_timeout={max(1, round(ttl * 1000))}"
    params["options"] = f"{idle} {params.get('options', '')}".strip()
    if kwargs.get("readonly"):
        # A session setting given at connect time, so it holds on every reconnection too.
        params["options"] = f"{params.get('options', '')} -c default_transaction_read_only=on"
    return Store(peewee.PostgresqlDatabase(database, **params), **kwargs)
