"""Request and response bodies of ``/v1/organization/settings``."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from careflow.kit.schemas import StrictInput, UTCDatetime
from careflow.organizations.models import FIRST_HOUR, LAST_HOUR, MAX_SMS_HOURLY_LIMIT

Hour = Annotated[int, Field(ge=FIRST_HOUR, le=LAST_HOUR)]


class SettingsIn(StrictInput):
    """Each field overrides the service default; ``null`` (or absent) goes back to it."""

    model_config = ConfigDict(extra="forbid", strict=True)  # "21" is not an hour

    quiet_hours_start: Hour | None = Field(
        None, description="Hour (0-23, patient's local time) SMS quiet hours begin"
    )
    quiet_hours_end: Hour | None = Field(None, description="Hour (0-23) SMS may be sent again")
    sms_hourly_limit: Annotated[int, Field(ge=0, le=MAX_SMS_HOURLY_LIMIT)] | None = Field(
        None, description="SMS the organisation may send per hour"
    )


class SettingsOut(BaseModel):
    quiet_hours_start: int
    quiet_hours_end: int
    sms_hourly_limit: int
    overrides: dict[str, int | None]
    updated_at: UTCDatetime | None
