"""Row ids in URL paths (automations family).

An id careflow issued is a positive 64-bit integer; any other path segment names no row, so
it answers the resource's 404 (``execution_not_found``, ``form_not_found``, …) exactly as a
missing or another organisation's row does, never a 400 about the id's type. The check runs
in the endpoint, after the role checks, so a caller without access learns nothing.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import Path

from careflow.errors import not_found
from careflow.kit.schemas import MAX_ROW_ID

_ROW_ID = re.compile(r"[1-9][0-9]{0,18}")


def row_id(raw: str, thing: str) -> int:
    """``raw`` as a row id, or 404 ``<thing>_not_found``."""
    if _ROW_ID.fullmatch(raw):
        value = int(raw)
        if value <= MAX_ROW_ID:
            return value
    raise not_found(thing)


def row_id_path(alias: str | None = None, description: str | None = None) -> Any:
    """A path parameter read as text and documented as the integer id it should be."""
    return Path(
        alias=alias,
        description=description,
        json_schema_extra={"type": "integer", "format": "int64", "minimum": 1},
    )
