"""Compiled rule conditions, cached per rule version so no event re-parses them.

Any rule with an ``id``, a ``version`` and its ``conditions`` (an automation rule, stored or
as the dispatcher's snapshot) is compiled once per (id, version).
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from typing import Any, Protocol

from careflow.conditions.compiler import CompiledCondition, compile_condition

MAX_ENTRIES = 4096

_lock = threading.Lock()
_cache: OrderedDict[tuple[int, int], CompiledCondition] = OrderedDict()


class VersionedConditions(Protocol):
    """What the cache reads of a rule."""

    @property
    def id(self) -> int: ...

    @property
    def version(self) -> int: ...

    @property
    def conditions(self) -> Any: ...


def compiled_conditions(rule: VersionedConditions) -> CompiledCondition:
    """The rule's conditions as a ``CompiledCondition``, compiled once per (id, version).

    A hit is also checked against the rule's stored conditions: SQLite may hand a deleted
    rule's id to a new rule, and a test database restarts its ids, so (id, version) alone
    could name two different rules.
    """
    key = (rule.id, rule.version)
    source: Any = rule.conditions or {}
    with _lock:
        hit = _cache.get(key)
        if hit is not None and hit.source == source:
            _cache.move_to_end(key)
            return hit
    # A private copy: the closures must not change if the caller mutates the rule's dict.
    compiled = compile_condition(copy.deepcopy(source))
    with _lock:
        _cache[key] = compiled
        _cache.move_to_end(key)
        while len(_cache) > MAX_ENTRIES:
            _cache.popitem(last=False)
    return compiled


def clear_cache() -> None:
    with _lock:
        _cache.clear()
