"""GET/PUT /v1/organization/settings: the caller's organisation's SMS quiet hours and cap."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from careflow.auth import AdminDep, StaffDep
from careflow.kit.deps import ClockDep, SessionDep, SettingsDep
from careflow.kit.schemas import DataEnvelope, StrictInput, UTCDatetime
from careflow.organizations import service

router = APIRouter(prefix="/v1/organization", tags=["organization"])

Hour = Annotated[int, Field(ge=0, le=23)]


class SettingsIn(StrictInput):
    """Each field overrides the service default; ``null`` (or absent) goes back to it."""

    model_config = ConfigDict(extra="forbid", strict=True)  # "21" is not an hour

    quiet_hours_start: Hour | None = Field(
        None, description="Hour (0-23, patient's local time) SMS quiet hours begin"
    )
    quiet_hours_end: Hour | None = Field(None, description="Hour (0-23) SMS may be sent again")
    sms_hourly_limit: Annotated[int, Field(ge=0, le=1_000_000)] | None = Field(
        None, description="SMS the organisation may send per hour"
    )


class SettingsOut(BaseModel):
    quiet_hours_start: int
    quiet_hours_end: int
    sms_hourly_limit: int
    overrides: dict[str, int | None]
    updated_at: UTCDatetime | None


def _out(effective: service.EffectiveSettings) -> DataEnvelope[SettingsOut]:
    return DataEnvelope[SettingsOut](
        data=SettingsOut(
            quiet_hours_start=effective.quiet_hours_start,
            quiet_hours_end=effective.quiet_hours_end,
            sms_hourly_limit=effective.sms_hourly_limit,
            overrides=effective.overrides,
            updated_at=effective.updated_at,
        )
    )


@router.get("/settings", summary="The organisation's effective settings")
async def get_settings(
    session: SessionDep, principal: StaffDep, settings: SettingsDep
) -> DataEnvelope[SettingsOut]:
    return _out(await service.get_settings(session, principal, settings))


@router.put("/settings", summary="Set the organisation's overrides (admin)")
async def put_settings(
    body: SettingsIn,
    session: SessionDep,
    principal: AdminDep,
    settings: SettingsDep,
    clock: ClockDep,
) -> DataEnvelope[SettingsOut]:
    values = body.model_dump()
    return _out(await service.put_settings(session, principal, settings, values, now=clock.now()))
