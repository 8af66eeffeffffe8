from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from careflow.kit.schemas import UTCDatetime


class AuditEntryOut(BaseModel):
    id: int
    organization_id: int
    actor_sub: str
    actor_role: str
    action: str
    object_type: str
    object_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    request_id: str | None
    created_at: UTCDatetime
