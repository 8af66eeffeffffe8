"""Process-local caches of compiled rule sets, kept exact by a revision row per set.

A writer calls ``bump(session, org, scope)`` in the transaction that changes the set; a
reader asks ``current_revision`` (one primary-key read) and reuses what it built for that
revision. A set written around the services (straight SQL) is not seen until its next
bump. Scopes name a set: ``automation:<trigger_event>``, ``pathway:<trigger_type>``.

A transaction reads each revision once: a worker dispatching a batch of events in one
transaction dispatches them all under the rule set it found first, as if they had come a
moment earlier. A ``bump`` in the transaction forgets what it read.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from typing import Any, Generic, TypeVar

from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from careflow.db import insert_for
from careflow.kit.models import RuleRevision

T = TypeVar("T")


NEVER_WRITTEN = ""
_caches: list[RevisionCache[Any]] = []


# session.info key: the revisions this transaction has read, by (organisation, scope).
_READ = "careflow_revisions_read"


@event.listens_for(Session, "after_commit")
def _forget_revisions_at_commit(session: Session) -> None:
    # Also fired when a savepoint is released: the transaction goes on, and so does what
    # it read.
    if not session.in_nested_transaction():
        session.info.pop(_READ, None)


@event.listens_for(Session, "after_rollback")
def _forget_revisions(session: Session) -> None:
    # A savepoint's rollback too: it may have undone a bump whose token was read since.
    session.info.pop(_READ, None)


async def current_revision(session: AsyncSession, organization_id: int, scope: str) -> str:
    read: dict[tuple[int, str], str] = session.info.setdefault(_READ, {})
    key = (organization_id, scope)
    if key not in read:
        value = await session.scalar(
            select(RuleRevision.revision).where(
                RuleRevision.organization_id == organization_id, RuleRevision.scope == scope
            )
        )
        read[key] = value or NEVER_WRITTEN
    return read[key]


async def bump(session: AsyncSession, organization_id: int, scope: str) -> None:
    """Give the set a new revision, in the caller's transaction (the one changing the set)."""
    session.info.get(_READ, {}).pop((organization_id, scope), None)
    token = secrets.token_hex(16)
    insert = insert_for(session)
    stmt = insert(RuleRevision).values(organization_id=organization_id, scope=scope, revision=token)
    stmt = stmt.on_conflict_do_update(
        index_elements=["organization_id", "scope"], set_={"revision": token}
    )
    await session.execute(stmt)


def clear_all() -> None:
    """Forget every cached rule set of this process (tests that wipe the database)."""
    for cache in _caches:
        cache.clear()


class RevisionCache(Generic[T]):
    """(organisation, scope) → what was built at a revision; least recently used goes first."""

    def __init__(self, maxsize: int = 2048) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[tuple[int, str], tuple[str, T]] = OrderedDict()
        self._lock = threading.Lock()
        _caches.append(self)

    def get(self, organization_id: int, scope: str, revision: str) -> T | None:
        key = (organization_id, scope)
        with self._lock:
            hit = self._items.get(key)
            if hit is None or hit[0] != revision:
                return None
            self._items.move_to_end(key)
            return hit[1]

    def put(self, organization_id: int, scope: str, revision: str, value: T) -> None:
        key = (organization_id, scope)
        with self._lock:
            self._items[key] = (revision, value)
            self._items.move_to_end(key)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
