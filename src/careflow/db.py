"""Engine, session maker and the declarative ``Base`` every model shares; and the small
interface through which repositories write what a session may hold back.

A session may carry a buffer of writes to send later (the worker's batches install one,
``jobs.held_writes``). Repositories do not know whether it does: ``write`` runs a statement
now or leaves it to the buffer, and the buffer sends what it holds by itself before any
statement that needs it. The other functions let a repository make the most of a buffer
when there is one (an INSERT with an id drawn ahead, a change made to a held INSERT) and
fall back to plain statements when there is none.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Hashable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Integer,
    MetaData,
    any_,
    bindparam,
    event,
    exc,
    func,
    select,
    tuple_,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, configure_mappers
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL gets 64-bit ids.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")

# JSONB on PostgreSQL (indexable, compact), plain JSON text elsewhere.
JSONType = JSON().with_variant(postgresql.JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every engine.

    SQLite keeps no offset, so values are normalised to UTC on the way in and
    tagged as UTC on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sqlite.DATETIME(truncate_microseconds=False))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # careflow emits BEGIN itself: see _sqlite_begin
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    # The driver's own implicit BEGIN comes only before DML, so a SAVEPOINT issued first
    # would open (and on RELEASE commit) a transaction of its own, out of reach of a later
    # rollback. careflow begins every transaction itself instead. IMMEDIATE takes the write
    # lock up front: with several connections in one process (API and worker), a deferred
    # transaction that reads and then writes could fail at once with SQLITE_BUSY rather
    # than wait its turn.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


async def _ping(driver_connection: Any) -> None:
    # No arguments: asyncpg sends it as a simple query, one round trip, no prepare. (Not
    # ";": asyncpg fails on the empty query's missing command tag.)
    await driver_connection.execute("SELECT 1")


_FRESH = "careflow.fresh"


def _mark_fresh(_dbapi_connection: Any, record: Any) -> None:
    record.info[_FRESH] = True


def _ping_on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """``pool_pre_ping`` in one round trip instead of its three.

    SQLAlchemy's asyncpg ping wraps a prepared statement in BEGIN and ROLLBACK (which keep
    it on one server connection under pgbouncer's transaction mode): three round trips on
    every checkout, a few per job. A simple query prepares nothing. As with pre-ping:
    - a connection just made is not pinged: its first statement is the test, and fails as
      a statement does (a 503 in the API), not as a checkout that ran out of attempts;
    - a ping that finds the connection closed invalidates every pooled connection older
      than now, and the pool retries with a new one: after a database restart none of the
      old ones work. Any other error is raised as it is.
    """
    if record.info.pop(_FRESH, False):
        return
    try:
        dbapi_connection.run_async(_ping)
    except Exception as error:
        if not dbapi_connection.driver_connection.is_closed():
            raise
        raise exc.InvalidatePoolError(f"ping failed: {type(error).__name__}") from error


# A process frozen mid-transaction (SIGSTOP, a stuck host) must not hold its row locks for
# ever: past this, PostgreSQL ends its session. Longer than any job holds a transaction open
# (a lease, an SMTP timeout). Behind a pooler it is the role's setting instead (a pooler
# refuses it as a startup parameter): docs/operations.md.
IDLE_IN_TRANSACTION_TIMEOUT_MS = 120_000


def _unnamed_statement() -> str:
    # asyncpg's empty name: the unnamed statement, which the next Parse replaces, so it can
    # neither collide with another client's nor pile up on a pooled server connection.
    return ""


def postgresql_connect_args(*, behind_pooler: bool) -> dict[str, Any]:
    """asyncpg's connect arguments for careflow's engines.

    Direct: prepared statements cached per connection (SQLAlchemy's cache and asyncpg's),
    and the session settings sent at connect. Behind a transaction-mode pooler each
    transaction may run on another server connection, so nothing may outlive one: no
    cached statement (each is parsed again in the transaction that runs it, unnamed) and
    no startup parameter but ``application_name``, the one poolers pass on.
    """
    if not behind_pooler:
        return {
            "server_settings": {
                "application_name": "careflow",
                "idle_in_transaction_session_timeout": str(IDLE_IN_TRANSACTION_TIMEOUT_MS),
            }
        }
    return {
        "server_settings": {"application_name": "careflow"},
        "statement_cache_size": 0,
        "prepared_statement_cache_size": 0,
        "prepared_statement_name_func": _unnamed_statement,
    }


def create_engine(url: str, *, behind_pooler: bool = False, **kwargs: Any) -> AsyncEngine:
    """careflow's engine for ``url``. ``behind_pooler``: PostgreSQL is reached through a
    transaction-mode pooler (``CAREFLOW_DATABASE_POOLER``); see ``postgresql_connect_args``."""
    if url.startswith("sqlite"):
        if behind_pooler:
            raise ValueError("a pooler applies to PostgreSQL only")
        # SQLite has one writer at a time. One pooled connection makes the process's
        # transactions queue for it in order, instead of several connections polling
        # SQLite's busy handler (sleeps of up to 100 ms, in no order: a long latency tail).
        kwargs.setdefault("pool_size", 1)
        kwargs.setdefault("max_overflow", 0)
        kwargs.setdefault("pool_timeout", 60)
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    ping = kwargs.pop("pool_pre_ping", True)
    kwargs.setdefault("connect_args", postgresql_connect_args(behind_pooler=behind_pooler))
    engine = create_async_engine(url, **kwargs)
    # Many rows to INSERT go as INSERT … VALUES (…), (…) (SQLAlchemy's "insertmanyvalues",
    # pages of 1,000 rows), not one execution of the statement a row: the lists' count
    # triggers (``kit.listcounts``) are statement triggers, so they fire once a statement,
    # not once a row. A batch of 50 executions' held INSERTs (``jobs.held_writes``) cost
    # PostgreSQL about 0.3 ms of CPU an execution in trigger calls, row by row.
    engine.sync_engine.dialect.use_insertmanyvalues_wo_returning = True
    if ping:
        event.listen(engine.sync_engine.pool, "connect", _mark_fresh)
        event.listen(engine.sync_engine.pool, "checkout", _ping_on_checkout)
    return engine


_Model = TypeVar("_Model", bound="Base")


def built(model: type[_Model], values: Mapping[Any, Any]) -> _Model:
    """An instance of ``model`` holding ``values`` (column names), made the way the ORM makes
    one it loads: no ``__init__``, no attribute events. About 4 µs here against 50 for
    ``model(**values)``, which the worker paid for every row it read or wrote.

    The instance is transient (in no session), as one from ``model(**values)`` is; changes
    made to it later are tracked as usual. The hot path writes them with explicit statements.
    The constructor configures the mappers on first use and ``new_instance`` does not, so a
    fresh process that builds before it constructs does it here.
    """
    manager = model._sa_class_manager  # type: ignore[attr-defined]
    if not manager.mapper.configured:
        configure_mappers()
    instance: _Model = manager.new_instance()
    instance.__dict__.update(values)
    return instance


def dialect_of(session: AsyncSession) -> str:
    return session.bind.dialect.name if session.bind is not None else "sqlite"


def insert_for(session: AsyncSession) -> Any:
    """The session's database's ``insert`` construct, the one with ``on_conflict_do_*``."""
    return postgresql.insert if dialect_of(session) == "postgresql" else sqlite.insert


_PREBUILT: dict[tuple[str, Hashable], Any] = {}


def prebuilt(session: AsyncSession, key: Hashable, build: Callable[[Any], Any]) -> Any:
    """A statement built once per database dialect: ``build(insert)`` is given the dialect's
    ``insert`` construct. Run it with its values as parameters (``connection.execute(stmt,
    values)``), not ``.values()``: a statement built per call is compiled and keyed per call
    (a few hundred microseconds), where a prebuilt one is found in the compiled cache."""
    dialect = dialect_of(session)
    stmt = _PREBUILT.get((dialect, key))
    if stmt is None:
        stmt = _PREBUILT[dialect, key] = build(
            postgresql.insert if dialect == "postgresql" else sqlite.insert
        )
    return stmt


async def insert_if_absent(
    session: AsyncSession, model: Any, values: dict[str, Any], index_elements: list[str]
) -> int | None:
    """INSERT … ON CONFLICT DO NOTHING on a unique index: the new row's id, or None if taken.

    Preferred to a savepoint around a plain INSERT: no aborted transaction to recover on
    PostgreSQL, and on SQLite the statement opens the transaction itself, where a leading
    SAVEPOINT would have started (and on release committed) one of its own.
    """
    table = model.__table__
    stmt = prebuilt(
        session,
        ("insert_if_absent", table.name, tuple(index_elements)),
        lambda insert: (
            insert(table)
            .on_conflict_do_nothing(index_elements=index_elements)
            .returning(table.c.id)
        ),
    )
    connection = await session.connection()
    return (await connection.execute(stmt, values)).scalar()  # type: ignore[no-any-return]


def one_of(column: Any, name: str, *, postgresql_array: bool) -> Any:
    """``column IN (:name…)`` for a list parameter ``name``.

    On PostgreSQL (``postgresql_array``) it is ``column = ANY(:name)``, the list bound as one
    array: the statement's text is then the same whatever the list's length, so asyncpg
    prepares it once. An expanding ``IN`` is new text for each length, and each new text
    costs a prepare: a round trip more, and the server's parse and plan. Elsewhere it is
    the expanding ``IN``.
    """
    if postgresql_array:
        return column == any_(bindparam(name, type_=postgresql.ARRAY(column.type)))
    return column.in_(bindparam(name, expanding=True))


def pairs_of(columns: tuple[Any, Any], names: tuple[str, str], types: tuple[Any, Any]) -> Any:
    """``(a, b) IN (SELECT unnest(:x), unnest(:y))``: PostgreSQL's ``one_of`` for pairs, the
    two lists bound as arrays of one length and zipped by the two ``unnest``s."""
    arrays = [
        func.unnest(bindparam(name, type_=postgresql.ARRAY(type_)))
        for name, type_ in zip(names, types, strict=True)
    ]
    return tuple_(*columns).in_(select(*arrays))


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


# --- Writes a session may hold back ---------------------------------------------------------

WRITE_BUFFER = "careflow.write_buffer"  # session.info key of the session's buffer, if any


class SentInSavepoint(RuntimeError):
    """A step that failed in its savepoint (``savepoint``) had sent writes the buffer held
    from before it: the savepoint's rollback took them too, so the transaction must fail as
    a whole."""


class WriteBuffer(Protocol):
    """What a session's buffer of writes offers (``jobs.held_writes.HeldWrites``)."""

    draws_ids: bool

    async def add(
        self,
        session: AsyncSession,
        key: Hashable,
        stmt: Any,
        values: dict[str, Any],
        row: Hashable | None,
        *,
        once: bool = False,
        parent: int = 0,
    ) -> None: ...

    async def insert(
        self,
        session: AsyncSession,
        table: str,
        key: Hashable,
        stmt: Any,
        values: dict[str, Any],
        *,
        rank: int = 1,
    ) -> dict[str, Any]: ...

    def amend(self, row: Hashable, key: Hashable, changes: dict[str, Any]) -> bool: ...

    def want_ids(self, tables: Iterable[str], count: int) -> None: ...

    def is_fresh(self, table: str, row_id: int) -> bool: ...

    def savepoint(self, session: AsyncSession) -> AbstractAsyncContextManager[None]: ...


def _buffer(session: AsyncSession) -> WriteBuffer | None:
    buffer: WriteBuffer | None = session.info.get(WRITE_BUFFER)
    return buffer


async def write(
    session: AsyncSession,
    key: Hashable,
    stmt: Any,
    values: dict[str, Any],
    *,
    row: Hashable | None = None,
) -> None:
    """Run ``stmt`` with ``values`` now, or leave it to the session's buffer, which sends it
    later with the other rows of the same ``key`` (the statement's name).

    Only for a write whose result nothing reads back. ``row`` names the row it writes (table
    and key): a second statement on a row the buffer holds sends what it holds first.
    """
    buffer = _buffer(session)
    if buffer is not None:
        await buffer.add(session, key, stmt, values, row)
        return
    connection = await session.connection()
    await connection.execute(stmt, values)


def defers_writes(session: AsyncSession) -> bool:
    """Whether ``write`` leaves writes to a buffer (so a write's outcome is not known yet)."""
    return _buffer(session) is not None


def amend(session: AsyncSession, row: Hashable, key: Hashable, changes: dict[str, Any]) -> bool:
    """Change the values of ``row``'s INSERT the buffer still holds under ``key``; False,
    with nothing changed, when there is no such held INSERT (write the change instead)."""
    buffer = _buffer(session)
    return buffer is not None and buffer.amend(row, key, changes)


def draws_ids(session: AsyncSession) -> bool:
    """Whether ``insert_with_drawn_id`` can hold an INSERT with its id known before it is
    sent (PostgreSQL's sequences, under a buffer)."""
    buffer = _buffer(session)
    return buffer is not None and buffer.draws_ids


async def insert_with_drawn_id(
    session: AsyncSession,
    table: str,
    key: Hashable,
    stmt: Any,
    values: dict[str, Any],
    *,
    rank: int = 1,
) -> dict[str, Any]:
    """Hold a plain INSERT of a row of ``table`` with an id drawn from its sequence ahead
    (only where ``draws_ids``); the row's values, id included. ``rank``: other held writes
    point at this row, so it is sent before them (rank 1 before rank 2)."""
    buffer = _buffer(session)
    if buffer is None or not buffer.draws_ids:
        raise RuntimeError("this session draws no ids ahead")
    return await buffer.insert(session, table, key, stmt, values, rank=rank)


def want_ids(session: AsyncSession, tables: Iterable[str], count: int) -> None:
    """About ``count`` rows of each of ``tables`` will be inserted with drawn ids: draw
    them in one statement at the first need (a no-op where ids are not drawn ahead)."""
    buffer = _buffer(session)
    if buffer is not None and buffer.draws_ids:
        buffer.want_ids(tables, count)


def is_drawn(session: AsyncSession, table: str, row_id: int) -> bool:
    """Whether ``row_id`` was drawn for an INSERT of this transaction: the row is new."""
    buffer = _buffer(session)
    return buffer is not None and buffer.is_fresh(table, row_id)


@asynccontextmanager
async def savepoint(session: AsyncSession) -> AsyncIterator[None]:
    """``session.begin_nested()``, whose failure also gives back what the buffer held inside
    it; ``SentInSavepoint`` when the buffer had to send earlier writes inside it."""
    buffer = _buffer(session)
    nested = buffer.savepoint(session) if buffer is not None else session.begin_nested()
    async with nested:
        yield
