"""Writes a batch of jobs holds to its end: each statement once, with every row's values.

A worker that runs jobs together in one transaction installs ``HeldWrites`` on the
session (``install``), before its first statement. The hot path's writes whose results
nobody reads back in the transaction (an action's result, a message, an execution
finished, an event marked processed, the next job) go through ``db.write``: with held
writes installed they are held, and sent once for the whole batch, one executemany per
statement, in the order each statement was first used (on PostgreSQL an INSERT's
executemany is sent as multi-row statements: ``db.create_engine``). Without them,
``db.write`` runs the statement now. Domain code never names this module: it speaks to the
session through ``careflow.db``'s small interface (``write``, ``defers_writes``,
``draws_ids``, ``insert_with_drawn_id``, ``amend``, ``want_ids``, ``is_drawn``,
``savepoint``).

Two rules keep the held writes equivalent to running them at once:
- A row written twice by two different statements (an INSERT, then an UPDATE of it) sends
  what is held first, so the second statement finds the first one's row.
- Every statement the session's connection runs goes through a hook (``before_execute``,
  on that connection only) that sends what is held first when the statement needs it: a
  read of a table with held writes; an UPDATE or DELETE of such a table; an INSERT into a
  table with held INSERTs (its unique indexes must see them) or whose foreign keys point
  at a table with held INSERTs (the parent row must exist); a DELETE from a table that
  held rows may point at. Text statements, DDL and anything else whose tables it cannot
  read send what is held first, whatever they touch; savepoints and the draw of ids never
  do. So no caller ever flushes, and reads of other tables leave the writes held.

On PostgreSQL a batch can also hold the INSERTs of rows whose ids the transaction goes on to
use (an execution, then its results and jobs): ``take_id`` hands out ids drawn ahead from
the table's sequence, a block at a time, so the row's id is known before its INSERT is
sent. A later change to such a row while its INSERT is still held (the execution finished
in the same batch) is made to the held values (``amend``): no UPDATE, and no flush.
Such INSERTs are *parents* (other held writes point at them) and are sent first, by rank.

A job that fails gives back what it held (``mark`` / ``discard_since``) instead of rolling
back to a savepoint: two round trips a job fewer. A step that does run in a savepoint
(``savepoint``) gives back what it held if it fails, and raises ``db.SentInSavepoint`` if
earlier jobs' writes were sent inside it, since the savepoint's rollback took them too.
``statements_run`` counts the statements a connection has executed, so the worker can tell
whether a failed job also wrote something at once, which only a rollback of the whole
transaction can take back. Sending what earlier jobs held (before a count of sent SMS, say)
is not such a write: ``statements_sent`` counts the flushes' statements apart.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Hashable, Iterable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import CompoundSelect, Delete, Insert, Select, Update, event, text
from sqlalchemy.dialects.postgresql.dml import OnConflictDoNothing as PgDoNothing
from sqlalchemy.dialects.sqlite.dml import OnConflictDoNothing as SqliteDoNothing
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.sql.elements import (
    ClauseElement,
    ReleaseSavepointClause,
    RollbackToSavepointClause,
    SavepointClause,
)
from sqlalchemy.sql.expression import TableClause
from sqlalchemy.sql.util import find_tables

from careflow.db import WRITE_BUFFER, SentInSavepoint, dialect_of

_COUNT = "careflow.statements_written"


class HeldWrites:
    """The writes held for one transaction, in the order they were made."""

    __slots__ = (
        "_entries",
        "_fresh",
        "_ids",
        "_inserted",
        "_own",
        "_parents",
        "_rows",
        "_sent",
        "_tables",
        "_wanted",
        "draws_ids",
        "statements_sent",
    )

    def __init__(self, *, draws_ids: bool = False) -> None:
        self.draws_ids = draws_ids  # inserts may take ids drawn ahead (PostgreSQL)
        self._sent = 0  # writes already flushed
        self.statements_sent = 0  # the statements those took
        # (statement key, statement, values, row identity or None)
        self._entries: list[tuple[Hashable, Any, dict[str, Any], Hashable | None]] = []
        # row identity -> the key of the statement that holds it, and its held values
        self._rows: dict[Hashable, tuple[Hashable, dict[str, Any]]] = {}
        self._ids: dict[str, list[int]] = {}  # table -> ids drawn ahead, not yet handed out
        self._wanted: dict[str, int] = {}  # table -> how many ids to draw at a time
        self._fresh: set[tuple[str, int]] = set()  # (table, id) handed out by take_id
        self._parents: dict[Hashable, int] = {}  # INSERTs other held writes point at: rank
        self._tables: set[str] = set()  # tables with held writes
        self._inserted: set[str] = set()  # tables with held INSERTs
        self._own = False  # running its own statements: the hook lets them through

    def __len__(self) -> int:
        return len(self._entries)

    def mark(self) -> int:
        return self._sent + len(self._entries)

    def can_discard_since(self, mark: int) -> bool:
        """Whether every write held after ``mark`` is still held (none was sent)."""
        return mark >= self._sent

    def discard_since(self, mark: int) -> None:
        """Forget the writes held after ``mark`` (a job that failed): only while none of
        them has been sent."""
        if mark < self._sent:
            raise RuntimeError("writes after the mark were already sent")
        del self._entries[mark - self._sent :]
        self._rows = {
            row: (key, values) for key, _, values, row in self._entries if row is not None
        }
        self._tables = set()
        self._inserted = set()
        for _, stmt, _, _ in self._entries:
            self._note(stmt)

    def _note(self, stmt: Any) -> None:
        target = _target(stmt)
        if target is not None:
            self._tables.add(target)
            if isinstance(stmt, Insert):
                self._inserted.add(target)

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
    ) -> None:
        """Hold one write; with ``once``, none if ``row`` is already held by ``key``.

        ``parent``: an INSERT of rows that other held writes point at (by a foreign key), and
        its rank: the flush sends such statements before the rest, rank 1 before rank 2 (a
        form, which points at its execution).
        """
        if parent:
            self._parents[key] = parent
        if row is not None:
            held = self._rows.get(row)
            if once and held is not None and held[0] == key:
                return
            if held is not None and held[0] != key:
                await self.flush(session)
            self._rows[row] = (key, values)
        self._entries.append((key, stmt, values, row))
        self._note(stmt)

    @property
    def sent(self) -> int:
        """How many held writes have been sent so far."""
        return self._sent

    def amend(self, row: Hashable, key: Hashable, changes: dict[str, Any]) -> bool:
        """Change the values of ``row``'s write held by ``key`` (its INSERT); False, with
        nothing changed, when that write is not held (sent already, or never made)."""
        held = self._rows.get(row)
        if held is None or held[0] != key:
            return False
        held[1].update(changes)
        return True

    @asynccontextmanager
    async def savepoint(self, session: AsyncSession) -> AsyncIterator[None]:
        """A savepoint whose failure also gives back the writes held inside it; if writes
        held before it were sent inside it, its rollback took them too: ``SentInSavepoint``."""
        mark, sent = self.mark(), self._sent
        try:
            async with session.begin_nested():
                yield
        except BaseException as exc:
            if self._sent != sent:
                raise SentInSavepoint() from exc
            self.discard_since(mark)
            raise

    # --- ids drawn ahead ------------------------------------------------------------------

    async def insert(
        self,
        session: AsyncSession,
        table: str,
        key: Hashable,
        stmt: Any,
        values: dict[str, Any],
        *,
        rank: int = 1,
    ) -> dict[str, Any]:
        """Hold the INSERT of a row of ``table`` with an id drawn ahead (``take_id``), as a
        parent of ``rank`` (``add``); the row's values, id included."""
        row_id = await self.take_id(session, table)
        row = {"id": row_id, **values}
        await self.add(session, key, stmt, row, (table, row_id), parent=rank)
        return row

    def want_ids(self, tables: Iterable[str], count: int) -> None:
        """The batch will take about ``count`` ids of each of ``tables``: the first
        ``take_id`` draws a block for each of them, in one statement."""
        for table in tables:
            self._wanted[_identifier(table)] = max(self._wanted.get(table, 0), count, 1)

    def is_fresh(self, table: str, row_id: int) -> bool:
        """Whether ``take_id`` handed out ``row_id``: its row is new in this transaction."""
        return (table, row_id) in self._fresh

    async def take_id(self, session: AsyncSession, table: str) -> int:
        """An id of ``table``'s sequence for a row this batch will insert (PostgreSQL only:
        ``draws_ids``). An id drawn and never used is a gap, as a rolled-back INSERT's is."""
        block = self._ids.get(table)
        if not block:
            wanted = self._wanted.get(table, 1)
            # The other wanted tables' blocks come in the same statement when they are empty.
            tables = [table] + [t for t in self._wanted if t != table and not self._ids.get(t)]
            await self._draw(session, tables, wanted)
            block = self._ids[table]
        row_id = block.pop()
        self._fresh.add((table, row_id))
        return row_id

    async def _draw(self, session: AsyncSession, tables: list[str], count: int) -> None:
        columns = ", ".join(
            f"nextval(pg_get_serial_sequence('{_identifier(t)}', 'id'))" for t in tables
        )  # names checked: careflow's own tables, never input
        connection = await session.connection()
        self._own = True  # it reads no table: nothing held need go first
        try:
            rows = (
                await connection.execute(
                    text(f"SELECT {columns} FROM generate_series(1, :count)"), {"count": count}
                )
            ).all()
        finally:
            self._own = False
        for position, table in enumerate(tables):
            # Handed out from the end: reversed, so the lowest id goes first.
            self._ids[table] = [row[position] for row in reversed(rows)]

    # --- sending --------------------------------------------------------------------------

    async def flush(self, session: AsyncSession) -> None:
        """Send what is held: one executemany per statement, in first-use order."""
        if self._entries:
            connection = await session.connection()
            await connection.run_sync(self.send)

    def send(self, connection: Connection) -> None:
        """``flush`` on the session's (sync) connection: from the hook, inside the greenlet
        of the statement that needs the held writes."""
        if not self._entries:
            return
        groups: dict[Hashable, tuple[Any, list[dict[str, Any]]]] = {}
        for key, stmt, values, _ in self._entries:
            groups.setdefault(key, (stmt, []))[1].append(values)
        # The rows pointed at first (an episode before its links, whichever was held first),
        # by rank (an execution before its form), then the rest; each part in first-use order.
        order = sorted(groups, key=lambda key: self._parents.get(key, 3))
        self._sent += len(self._entries)
        self._entries = []
        self._rows = {}
        self._tables = set()
        self._inserted = set()
        self._own = True
        try:
            for key in order:
                stmt, rows = groups[key]
                self.statements_sent += 1
                connection.execute(stmt, rows if len(rows) > 1 else rows[0])
        finally:
            self._own = False

    def before_execute(
        self,
        connection: Connection,
        statement: Any,
        _multiparams: Any,
        _params: Any,
        _options: Any,
    ) -> None:
        """The hook on the session's connection: send what is held before a statement that
        needs it (see the module's rules)."""
        if self._own or not self._entries or not self._needs(statement):
            return
        self.send(connection)

    def _needs(self, statement: Any) -> bool:
        access = _access(statement)
        if access is None:
            return True  # tables unknown (text, DDL): send first, to be safe
        reads, target, inserting, parents = access
        if not self._tables.isdisjoint(reads):
            return True
        if target is None:
            return False
        if target in (self._inserted if inserting else self._tables):
            return True
        return not self._inserted.isdisjoint(parents)


# What a statement touches: (tables it reads, the table it writes, whether that write is a
# plain INSERT, the tables that table's foreign keys point at); None when not known.
_Access = tuple[frozenset[str], str | None, bool, frozenset[str]]
_NO_ACCESS: _Access = (frozenset(), None, False, frozenset())
# What statements touch, found once per statement shape: by the statement object (kept
# alive by its entry, so its id is not reused), for the hot path's statements built once;
# else by its cache key, which SQLAlchemy computes for its compiled cache anyway and keeps
# on the statement, so a statement built per call costs a lookup, not a walk of its tree.
# Each is emptied when it grows past its bound.
_BY_ID: dict[int, tuple[Any, _Access | None]] = {}
_BY_SHAPE: dict[Any, _Access | None] = {}
_BOUND = 4096


def _access(statement: Any) -> _Access | None:
    found = _BY_ID.get(id(statement))
    if found is not None and found[0] is statement:
        return found[1]
    if not isinstance(statement, ClauseElement):
        return None  # SQL text given as a string
    key = statement._generate_cache_key()
    if key is None:  # a statement SQLAlchemy does not cache either
        return _read_access(statement)
    if key.key in _BY_SHAPE:
        access = _BY_SHAPE[key.key]
    else:
        access = _read_access(statement)
        if len(_BY_SHAPE) >= _BOUND:
            _BY_SHAPE.clear()
        _BY_SHAPE[key.key] = access
    if len(_BY_ID) >= _BOUND:
        _BY_ID.clear()
    _BY_ID[id(statement)] = (statement, access)
    return access


def _read_access(statement: Any) -> _Access | None:
    if isinstance(statement, SavepointClause | RollbackToSavepointClause | ReleaseSavepointClause):
        return _NO_ACCESS
    if not isinstance(statement, Select | CompoundSelect | Insert | Update | Delete):
        return None
    # Every table the statement names, in subqueries too (careflow maps no relationships,
    # so no join hides a table behind an attribute).
    names = {
        table.name
        for table in find_tables(statement, check_columns=True, include_crud=True)
        if isinstance(table, TableClause)
    }
    if not isinstance(statement, Insert | Update | Delete):
        return frozenset(names), None, False, frozenset()
    table: Any = statement.table  # a Table: careflow writes no join or alias
    target: str = table.name
    # A plain INSERT's order among other INSERTs matters to unique indexes only; one that
    # updates on conflict, or takes its rows from a SELECT, is also a read of its table.
    inserting = (
        isinstance(statement, Insert)
        and statement.select is None
        and isinstance(
            getattr(statement, "_post_values_clause", None),
            type(None) | PgDoNothing | SqliteDoNothing,
        )
    )
    if inserting or not isinstance(statement, Insert):
        names.discard(target)
    parents = frozenset(_referred(fk) for fk in table.foreign_keys)
    if isinstance(statement, Delete):
        # A held row that points at a deleted one goes first: the DELETE then cascades to
        # it, or is refused, as it would have been with the row written at once.
        names.update(
            other.name
            for other in table.metadata.tables.values()
            if any(_referred(fk) == target for fk in other.foreign_keys)
        )
    return frozenset(names), target, inserting, parents


def _referred(fk: Any) -> str:
    """The name of the table a foreign key points at (``executions.id``: executions)."""
    name: str = fk.target_fullname.rsplit(".", 1)[0]
    return name


def _target(stmt: Any) -> str | None:
    """The table an INSERT, UPDATE or DELETE writes; None for anything else."""
    if isinstance(stmt, Insert | Update | Delete):
        table: Any = stmt.table
        name: str = table.name
        return name
    return None


def _identifier(name: str) -> str:
    """A table name of careflow's own, checked before it goes into SQL text."""
    if not name.replace("_", "").isalnum() or not name.isascii():
        raise ValueError(f"not a table name: {name!r}")
    return name


def install(session: AsyncSession) -> HeldWrites:
    """Hold the session's writes from now on, and send them by themselves before any
    statement of the session's connection that needs them. Call it before the session's
    first statement: the hook goes on the connection the session begins."""
    transaction = session.sync_session.get_transaction()
    if transaction is not None and getattr(transaction, "_connections", None):
        # Its connection is already begun: the hook would never see its statements.
        raise RuntimeError("held writes are installed before the session's first statement")
    held = HeldWrites(draws_ids=dialect_of(session) == "postgresql")
    session.info[WRITE_BUFFER] = held

    def begun(_session: Session, _transaction: SessionTransaction, connection: Any) -> None:
        # On this connection only, which ends with the transaction: other sessions pay
        # nothing for it.
        event.listen(connection, "before_execute", held.before_execute)

    event.listen(session.sync_session, "after_begin", begun)
    return held


def held_by(session: AsyncSession) -> HeldWrites | None:
    held: HeldWrites | None = session.info.get(WRITE_BUFFER)
    return held


def draws_ids(session: AsyncSession) -> HeldWrites | None:
    """The session's held writes when its inserts may take ids drawn ahead (PostgreSQL's
    sequences); None otherwise, and the INSERT runs at once and returns its id."""
    held = held_by(session)
    return held if held is not None and held.draws_ids else None


async def flush(session: AsyncSession) -> None:
    """Send the held writes (a no-op without any): the worker's, at a batch's end."""
    held = held_by(session)
    if held is not None:
        await held.flush(session)


def count_statements(engine: AsyncEngine) -> None:
    """Count, per connection, the statements other than reads that it executes."""
    sync_engine = engine.sync_engine
    if not event.contains(sync_engine, "before_cursor_execute", _count):
        event.listen(sync_engine, "before_cursor_execute", _count)


def _count(
    conn: Any, _cursor: Any, statement: str, _parameters: Any, _context: Any, _many: bool
) -> None:
    if not statement.startswith("SELECT"):
        conn.info[_COUNT] = conn.info.get(_COUNT, 0) + 1


async def statements_run(session: AsyncSession) -> int:
    """How many statements other than reads the session's connection has executed."""
    connection = await session.connection()
    count: int = connection.sync_connection.info.get(_COUNT, 0) if connection.sync_connection else 0
    return count
