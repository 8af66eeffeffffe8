"""Column types shared by several domains."""

from __future__ import annotations

from typing import Any

from sqlalchemy import String
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

EntityRef = int | str


def canonical_entity_id(value: Any) -> EntityRef:
    """The producer's id as careflow keys it: a decimal string is the integer it spells."""
    if isinstance(value, bool):
        raise TypeError("an entity id is an integer or a string")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        # ASCII digits only: str.isdigit() also holds for "²" (int() refuses it) and for
        # other scripts' digits ("١٢" would become 12, the same entity as "12").
        decimal = value.isascii() and value.isdigit()
        if decimal and (value == "0" or not value.startswith("0")) and len(value) < 19:
            return int(value)
        return value
    raise TypeError("an entity id is an integer or a string")


class EntityId(TypeDecorator[EntityRef]):
    """A producer's entity id (integer or string), stored as text and echoed back as given."""

    impl = String(128)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return str(canonical_entity_id(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> EntityRef | None:
        if value is None:
            return None
        return canonical_entity_id(value)
