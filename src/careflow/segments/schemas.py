"""Response bodies of ``/v1/segments``."""

from __future__ import annotations

from pydantic import BaseModel

from careflow.kit.schemas import EntityIdField, UTCDatetime
from careflow.segments.models import SegmentMember


class SegmentMemberOut(BaseModel):
    patient_id: EntityIdField
    added_at: UTCDatetime

    @classmethod
    def of(cls, row: SegmentMember) -> SegmentMemberOut:
        return cls(patient_id=row.patient_id, added_at=row.added_at)
