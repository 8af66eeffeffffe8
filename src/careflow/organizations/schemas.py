"""Request and response bodies of ``/v1/organization/settings``."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from careflow.kit.phones import E164_PATTERN, REGIONS, is_region
from careflow.kit.schemas import StrictInput, UTCDatetime
from careflow.organizations.models import (
    FIRST_HOUR,
    LAST_HOUR,
    MAX_ACTIONS_PER_SECOND,
    MAX_E164_LENGTH,
    MAX_SMS_HOURLY_LIMIT,
    MAX_SMS_NUMBERS,
    MIN_ACTIONS_PER_SECOND,
)

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
    default_region: str | None = Field(
        None,
        description=(
            "ISO 3166 alpha-2 region (GB, US, …) phone numbers without a country code are "
            "read in before they are sent in E.164"
        ),
        examples=["GB"],
        json_schema_extra={"enum": list(REGIONS)},
    )
    actions_per_second: (
        Annotated[float, Field(ge=MIN_ACTIONS_PER_SECOND, le=MAX_ACTIONS_PER_SECOND)] | None
    ) = Field(
        None,
        description=(
            "Action steps the organisation's executions may run a second, across every "
            "worker (a step held back waits, shown `throttled`, and never fails for it). "
            "`null` or absent: no limit"
        ),
        examples=[20],
    )

    sms_numbers: (
        Annotated[
            list[Annotated[str, Field(max_length=MAX_E164_LENGTH, pattern=E164_PATTERN)]],
            Field(max_length=MAX_SMS_NUMBERS),
        ]
        | None
    ) = Field(
        None,
        description=(
            "The numbers (E.164) the organisation receives texts on: a text to one of them "
            "(POST /v1/providers/twilio/inbound) is this organisation's. A number belongs to "
            "one organisation; one another organisation holds is a 409. `null` or absent: none"
        ),
        examples=[["+447700900000"]],
    )

    @field_validator("sms_numbers")
    @classmethod
    def _e164_numbers(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        # Each is E.164 by the field's pattern: ``+``, a country code, at most 15 digits.
        if len(set(value)) != len(value):
            raise ValueError("numbers must not repeat")
        return value

    @field_validator("default_region")
    @classmethod
    def _known_region(cls, value: str | None) -> str | None:
        if value is not None and not is_region(value):
            raise ValueError("must be an ISO 3166 alpha-2 region code, in capitals (GB, US, …)")
        return value


class SettingsOut(BaseModel):
    quiet_hours_start: int
    quiet_hours_end: int
    sms_hourly_limit: int
    default_region: str
    actions_per_second: float | None = Field(
        description="Action steps the organisation may run a second; `null`: no limit"
    )
    sms_numbers: list[str] = Field(
        description="The numbers (E.164) the organisation receives texts on"
    )
    overrides: dict[str, int | float | str | None]
    updated_at: UTCDatetime | None
