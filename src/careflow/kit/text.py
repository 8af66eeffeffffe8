"""Input a database can store: no NUL characters, no unpaired surrogates, no NaN/Infinity.

PostgreSQL stores none of them (in text or JSONB) and answers a driver error at insert or
even in a ``WHERE``; SQLite takes them silently, so the two would disagree. Every input is
checked at the edge instead, and refused as a 400 naming where the bad value is.
"""

from __future__ import annotations

import math
from typing import Any

UNSTORABLE_MESSAGE = (
    "strings may not contain NUL characters or unpaired surrogates, and numbers must be finite"
)


def is_storable(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def unstorable_path(value: Any) -> str | None:
    """Where in ``value`` a string (or a key) or a number cannot be stored, as
    ``data.patient.name`` or ``actions[2]``; ``""`` for ``value`` itself; None when
    everything can be stored.

    Iterative, so a deeply nested body cannot exhaust the stack.
    """
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if not is_storable(item):
                return path
        elif isinstance(item, float):
            if not math.isfinite(item):
                return path
        elif isinstance(item, dict):
            for key, child in item.items():
                child_path = f"{path}.{key}" if path else str(key)
                if isinstance(key, str) and not is_storable(key):
                    # The key itself is the problem: name its parent, never the bad text.
                    return path
                stack.append((child, child_path))
        elif isinstance(item, list | tuple):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(item))
    return None
