from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel

from careflow.kit.schemas import UTCDatetime, documented_as


class AuditEntryOut(BaseModel):
    id: int
    organization_id: int
    actor_sub: str
    actor_role: Annotated[str, documented_as("ActorRole")]
    action: str
    object_type: str
    object_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    request_id: str | None
    created_at: UTCDatetime
