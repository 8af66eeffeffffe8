"""Request and response bodies of ``/v1/templates``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from careflow.kit.schemas import StrictInput, UTCDatetime
from careflow.templates.rendering import MAX_BODY_CHARS, TemplateSource

ChannelParam = Literal["email", "sms"]
# Keys are what rules name in ``send_email.template``; kept to a URL- and log-safe alphabet.
KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$"


class TemplateIn(StrictInput):
    subject: str | None = Field(
        default=None, max_length=2_000, description="Email subject (Jinja2); email only"
    )
    body: str = Field(min_length=1, max_length=MAX_BODY_CHARS, description="Body (Jinja2)")


class TemplateOut(BaseModel):
    key: str
    channel: ChannelParam
    subject: str | None
    body: str
    built_in: bool = Field(description="True for careflow's own text, false for the org's")
    created_at: UTCDatetime | None
    updated_at: UTCDatetime | None

    @classmethod
    def of(cls, source: TemplateSource) -> TemplateOut:
        return cls(
            key=source.key,
            channel=source.channel,
            subject=source.subject,
            body=source.body,
            built_in=source.built_in,
            created_at=source.created_at,
            updated_at=source.updated_at,
        )
