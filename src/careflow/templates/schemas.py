"""Request and response bodies of ``/v1/templates``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from careflow.kit.schemas import NOT_BLANK_PATTERN, StrictInput, UTCDatetime
from careflow.templates.rendering import MAX_BODY_CHARS, TemplateSource

ChannelParam = Literal["email", "sms"]
# Keys are what rules name in ``send_email.template``; kept to a URL- and log-safe alphabet.
KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$"


class TemplateIn(StrictInput):
    subject: str | None = Field(
        default=None, max_length=2_000, description="Email subject (Jinja2); email only"
    )
    body: str = Field(
        default="",
        max_length=MAX_BODY_CHARS,
        description="Body (Jinja2): an SMS's text, an email's text part. An email template "
        "gives a body, an html_body, or both; without a body its text is made from the HTML",
    )
    html_body: str | None = Field(
        default=None,
        max_length=MAX_BODY_CHARS,
        pattern=NOT_BLANK_PATTERN,
        description="Email only: the HTML part (Jinja2, every printed value HTML-escaped); "
        "without it the HTML is made from the body",
    )


class TemplateOut(BaseModel):
    key: str
    channel: ChannelParam
    subject: str | None
    body: str
    html_body: str | None
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
            html_body=source.html_body,
            built_in=source.built_in,
            created_at=source.created_at,
            updated_at=source.updated_at,
        )
