"""Writes a batch of jobs defers to its end: each statement once, with every row's values.

A worker that runs jobs together in one transaction installs a ``WriteBehind`` on the
session (``install``). The hot path's writes whose results nobody reads back in the
transaction (an action's result, a message, an execution finished, an event marked
processed, the next job) then go through ``write``: with a write-behind installed they
are held, and ``flush`` sends each statement once for the whole batch as an executemany,
in the order each statement was first used. Without one, ``write`` runs the statement now,
as before.

Two rules keep the held writes equivalent to running them at once:
- A row written twice by two different statements (an INSERT, then an UPDATE of it) flushes
  what is held first, so the second statement finds the first one's row.
- Whoever reads a table whose writes may be held, outside the batch's own read-ahead,
  flushes first (``flush``): the fallback reads of a step or a dispatch that its batch did
  not read ahead.

On PostgreSQL a batch can also hold the INSERTs of rows whose ids the transaction goes on to
use (an execution, then its results and jobs): ``take_id`` hands out ids drawn ahead from
the table's sequence, a block at a time, so the row's id is known before its INSERT is
sent. A later change to such a row while its INSERT is still held (the execution finished
in the same batch) is made to the held values (``amend``): no UPDATE, and no flush.

A job that fails gives back what it held (``mark`` / ``discard_since``) instead of rolling
back to a savepoint: two round trips a job fewer. ``statements_run`` counts the statements
a connection has executed, so the worker can tell whether a failed job also wrote
something at once, which only a rollback of the whole transaction can take back. A flush
during a job of what earlier jobs held (before a count of sent SMS, say) is not such a
write: ``statements_sent`` counts the flushes' statements apart.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

_KEY = "careflow.write_behind"
_COUNT = "careflow.statements_written"


class WriteBehind:
    """The writes held for one transaction, in the order they were made."""

    __slots__ = (
        "_entries",
        "_fresh",
        "_ids",
        "_parents",
        "_rows",
        "_sent",
        "_wanted",
        "statements_sent",
    )

    def __init__(self) -> None:
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
        rows = (
            await connection.execute(
                text(f"SELECT {columns} FROM generate_series(1, :count)"), {"count": count}
            )
        ).all()
        for position, table in enumerate(tables):
            # Handed out from the end: reversed, so the lowest id goes first.
            self._ids[table] = [row[position] for row in reversed(rows)]

    async def flush(self, session: AsyncSession) -> None:
        """Send what is held: one executemany per statement, in first-use order."""
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
        connection = await session.connection()
        for key in order:
            stmt, rows = groups[key]
            self.statements_sent += 1
            await connection.execute(stmt, rows if len(rows) > 1 else rows[0])


def _identifier(name: str) -> str:
    """A table name of careflow's own, checked before it goes into SQL text."""
    if not name.replace("_", "").isalnum() or not name.isascii():
        raise ValueError(f"not a table name: {name!r}")
    return name


def draws_ids(session: AsyncSession) -> WriteBehind | None:
    """The session's write-behind when its inserts may take ids drawn ahead (PostgreSQL's
    sequences); None otherwise, and the INSERT runs at once and returns its id."""
    held = held_by(session)
    if held is None or session.bind is None or session.bind.dialect.name != "postgresql":
        return None
    return held


def install(session: AsyncSession) -> WriteBehind:
    held = WriteBehind()
    session.info[_KEY] = held
    return held


def held_by(session: AsyncSession) -> WriteBehind | None:
    held: WriteBehind | None = session.info.get(_KEY)
    return held


async def write(
    session: AsyncSession,
    key: Hashable,
    stmt: Any,
    values: dict[str, Any],
    *,
    row: Hashable | None = None,
) -> None:
    """Run ``stmt`` with ``values`` now, or hold it for the batch's flush.

    ``key`` names the statement (its values are grouped under it), ``row`` the row it writes
    (table and key), for the rule that a row's second statement flushes first.
    """
    held = held_by(session)
    if held is not None:
        await held.add(session, key, stmt, values, row)
        return
    connection = await session.connection()
    await connection.execute(stmt, values)


async def flush(session: AsyncSession) -> None:
    """Send the held writes before a read of their tables (a no-op without any)."""
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
