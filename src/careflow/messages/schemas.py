"""Response bodies of ``/v1/messages``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel

from careflow.kit.schemas import EntityIdField, UTCDatetime, documented_as
from careflow.messages.models import Message

ChannelParam = Literal["email", "sms"]


class MessageOut(BaseModel):
    id: str
    channel: Annotated[str, documented_as("MessageChannel")]
    recipient: str
    template: str
    subject: str | None
    status: Annotated[str, documented_as("MessageStatus")]
    provider: str
    provider_message_id: str | None
    error: str | None
    execution_id: int | None
    action_index: int | None
    patient_id: EntityIdField | None
    created_at: UTCDatetime
    # The steps of delivery, each when it happened (statuses.py): the provider accepted it
    # (an SMS's ``queued``), sent it on, delivered it, or gave up (undelivered or failed).
    queued_at: UTCDatetime | None
    sent_at: UTCDatetime | None
    delivered_at: UTCDatetime | None
    failed_at: UTCDatetime | None
    # The provider's error code for an undelivered or failed message.
    error_code: str | None

    @classmethod
    def of(cls, row: Message) -> MessageOut:
        return cls(**_fields(row))


class MessageDetail(MessageOut):
    body: str

    @classmethod
    def of(cls, row: Message) -> MessageDetail:
        return cls(**_fields(row), body=row.body)


def _fields(row: Message) -> dict[str, object]:
    return {name: getattr(row, name) for name in MessageOut.model_fields}
