"""Request and response bodies of ``/v1/patients/{patient_id}/preferences``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from careflow.kit.schemas import EntityIdField, StrictInput, UTCDatetime
from careflow.patients.service import ChannelPreference, Preferences

PreferenceSource = Literal["host", "sms_stop", "unsubscribe_link", "admin"]


class ChannelPreferenceOut(BaseModel):
    opted_out: bool = Field(description="Whether careflow sends nothing on this channel")
    source: PreferenceSource = Field(
        description=(
            "What decides it: `host` (the host's snapshot flag), `sms_stop` (the patient's "
            "phone texted STOP), `unsubscribe_link` (the email's one-click link) or `admin`"
        )
    )
    updated_at: UTCDatetime | None = Field(description="When that source last set it")

    @classmethod
    def of(cls, preference: ChannelPreference) -> ChannelPreferenceOut:
        return cls(
            opted_out=preference.opted_out,
            source=preference.source,  # type: ignore[arg-type]
            updated_at=preference.updated_at,
        )


class PreferencesOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "patient_id": 123,
                    "email": {
                        "opted_out": True,
                        "source": "unsubscribe_link",
                        "updated_at": "2025-02-15T10:00:00Z",
                    },
                    "sms": {
                        "opted_out": False,
                        "source": "host",
                        "updated_at": "2025-02-14T09:30:00Z",
                    },
                }
            ]
        }
    )

    patient_id: EntityIdField
    email: ChannelPreferenceOut
    sms: ChannelPreferenceOut

    @classmethod
    def of(cls, preferences: Preferences) -> PreferencesOut:
        return cls(
            patient_id=preferences.patient_id,
            email=ChannelPreferenceOut.of(preferences.email),
            sms=ChannelPreferenceOut.of(preferences.sms),
        )


class ChannelPreferenceIn(StrictInput):
    model_config = ConfigDict(extra="forbid", strict=True)

    opted_out: bool = Field(description="true records an admin opt-out; false removes careflow's")


class PreferencesIn(StrictInput):
    """Each channel given is set; one left out is unchanged."""

    email: ChannelPreferenceIn | None = None
    sms: ChannelPreferenceIn | None = None

    def wanted(self) -> dict[str, bool]:
        return {
            channel: value.opted_out
            for channel, value in (("email", self.email), ("sms", self.sms))
            if value is not None
        }
