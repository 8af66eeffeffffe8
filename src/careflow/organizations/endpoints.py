"""GET/PUT /v1/organization/settings: the caller's organisation's SMS quiet hours, cap,
phone region, rate limit and the numbers it receives texts on."""

from __future__ import annotations

from fastapi import APIRouter

from careflow.auth import AdminDep, StaffDep
from careflow.kit.deps import ClockDep, SessionDep, SettingsDep
from careflow.kit.schemas import DataEnvelope
from careflow.organizations import service
from careflow.organizations.schemas import SettingsIn, SettingsOut

router = APIRouter(prefix="/v1/organization", tags=["organization"])


def _out(view: service.OrganizationView) -> DataEnvelope[SettingsOut]:
    effective = view.effective
    return DataEnvelope[SettingsOut](
        data=SettingsOut(
            quiet_hours_start=effective.quiet_hours_start,
            quiet_hours_end=effective.quiet_hours_end,
            sms_hourly_limit=effective.sms_hourly_limit,
            default_region=effective.default_region,
            actions_per_second=effective.actions_per_second,
            sms_numbers=view.sms_numbers,
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
