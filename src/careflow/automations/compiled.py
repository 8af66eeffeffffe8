"""Compiled rule conditions, cached per rule version so no event re-parses them."""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from typing import Any

from careflow.automations.models import AutomationRule
from careflow.conditions import CompiledCondition, compile_condition

MAX_ENTRIES = 4096

_lock = threading.Lock()
_cache: OrderedDict[tuple[int, int], CompiledCondition] = OrderedDict()


def compiled_conditions(rule: AutomationRule | Any) -> CompiledCondition:
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
