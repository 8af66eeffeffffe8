"""Per-organisation SMS quiet hours and hourly cap, set through the API and used at send time."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.config import Settings
from careflow.db import create_sessionmaker
from careflow.kit.clock import FrozenClock
from careflow.organizations.models import MAX_SMS_HOURLY_LIMIT, OrganizationSettings
from careflow.organizations.service import effective_settings, merged
from tests.conftest import make_settings

Auth = Callable[..., dict[str, str]]
URL = "/v1/organization/settings"


class TestOrganizationSettings:
    async def test_defaults_then_overrides_then_back(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        settings: Settings,
        engine: AsyncEngine,
        clock: FrozenClock,
    ) -> None:
        r = await client.get(URL, headers=auth())
        assert r.status_code == 200
        assert r.json()["data"]["quiet_hours_start"] == settings.quiet_hours_start
        assert r.json()["data"]["updated_at"] is None

        body = {"quiet_hours_start": 20, "quiet_hours_end": 9, "sms_hourly_limit": 5}
        r = await client.put(URL, json=body, headers=auth())
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        assert (data["quiet_hours_start"], data["quiet_hours_end"], data["sms_hourly_limit"]) == (
            20,
            9,
            5,
        )
        assert data["overrides"] == {**body, "default_region": None, "actions_per_second": None}
        assert data["updated_at"].endswith("Z")
        async with create_sessionmaker(engine)() as session:
            policy = await effective_settings(session, settings, 1)
        assert (policy.quiet_hours_start, policy.quiet_hours_end, policy.sms_hourly_limit) == (
            20,
            9,
            5,
        )

        r = await client.put(URL, json={"quiet_hours_start": None}, headers=auth())
        assert r.json()["data"]["quiet_hours_start"] == settings.quiet_hours_start
        assert r.json()["data"]["sms_hourly_limit"] == settings.sms_hourly_limit

        audit = (
            await client.get("/v1/audit-log?object_type=organization_settings", headers=auth())
        ).json()
        assert audit["meta"]["total"] == 2

    async def test_other_organisations_keep_their_own(
        self, client: httpx.AsyncClient, auth: Auth, settings: Settings
    ) -> None:
        await client.put(URL, json={"sms_hourly_limit": 1}, headers=auth())
        r = await client.get(URL, headers=auth("admin", org=2))
        assert r.json()["data"]["sms_hourly_limit"] == settings.sms_hourly_limit

    @pytest.mark.parametrize(
        "body",
        [
            {"quiet_hours_start": 24},
            {"quiet_hours_end": -1},
            {"sms_hourly_limit": -5},
            {"quiet_hours_start": "21"},
            {"timezone": "UTC"},
            {"organization_id": 2},
            {"default_region": "gb"},
            {"default_region": "UK"},  # not ISO 3166: the United Kingdom is GB
            {"default_region": "GBR"},
            {"default_region": 44},
            {"sms_numbers": ["07700 900000"]},  # not E.164
            {"sms_numbers": ["+0447700900000"]},  # no country code starts with 0
            {"sms_numbers": ["+44770090000012345"]},  # more than 15 digits
            {"sms_numbers": ["+447700900000", "+447700900000"]},
            {"sms_numbers": "+447700900000"},
        ],
    )
    async def test_bad_values_are_400(
        self, client: httpx.AsyncClient, auth: Auth, body: dict[str, object]
    ) -> None:
        r = await client.put(URL, json=body, headers=auth())
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "validation_error"

    async def test_sms_numbers_belong_to_one_organisation(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        r = await client.get(URL, headers=auth())
        assert r.json()["data"]["sms_numbers"] == []
        numbers = ["+447700900000", "+15550002222"]
        r = await client.put(URL, json={"sms_numbers": numbers}, headers=auth())
        assert r.status_code == 200, r.text
        assert r.json()["data"]["sms_numbers"] == numbers
        assert (await client.get(URL, headers=auth())).json()["data"]["sms_numbers"] == numbers

        r = await client.put(URL, json={"sms_numbers": ["+447700900000"]}, headers=auth(org=2))
        assert r.status_code == 409
        assert r.json()["error"]["code"] == "sms_number_taken"
        assert (await client.get(URL, headers=auth(org=2))).json()["data"]["sms_numbers"] == []

        # Given up by the first, the number is free for the second.
        await client.put(URL, json={"sms_numbers": ["+15550002222"]}, headers=auth())
        r = await client.put(URL, json={"sms_numbers": ["+447700900000"]}, headers=auth(org=2))
        assert r.status_code == 200, r.text

        entries = (
            await client.get("/v1/audit-log?object_type=organization_settings", headers=auth())
        ).json()["data"]
        mine = sorted(
            (e["created_at"], e["id"], e["after"]) for e in entries if e["object_id"] == "1"
        )
        assert [after for _, _, after in mine] == [
            {"sms_numbers": numbers},
            {"sms_numbers": ["+15550002222"]},
        ]

    @pytest.mark.parametrize(
        ("role", "get", "put"),
        [
            ("admin", 200, 200),
            ("specialist", 200, 403),
            ("patient", 403, 403),
            ("support", 403, 403),
            ("service", 403, 403),
        ],
    )
    async def test_access(
        self, client: httpx.AsyncClient, auth: Auth, role: str, get: int, put: int
    ) -> None:
        assert (await client.get(URL, headers=auth(role))).status_code == get
        r = await client.put(URL, json={"sms_hourly_limit": 3}, headers=auth(role))
        assert r.status_code == put

    async def test_default_region_is_the_service_default_until_set(
        self, client: httpx.AsyncClient, auth: Auth, settings: Settings
    ) -> None:
        data = (await client.get(URL, headers=auth())).json()["data"]
        assert (data["default_region"], settings.default_region) == ("GB", "GB")

        r = await client.put(URL, json={"default_region": "US"}, headers=auth())
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        assert (data["default_region"], data["overrides"]["default_region"]) == ("US", "US")
        audit = (
            await client.get("/v1/audit-log?object_type=organization_settings", headers=auth())
        ).json()["data"]
        assert audit[0]["after"] == {"default_region": "US"}

        r = await client.put(URL, json={"default_region": None}, headers=auth())
        assert r.json()["data"]["default_region"] == "GB"

    def test_the_service_default_region_is_checked(self, database_url: str) -> None:
        assert make_settings(database_url, default_region="us").default_region == "US"
        with pytest.raises(ValueError, match="CAREFLOW_DEFAULT_REGION"):
            make_settings(database_url, default_region="XX")


def stored(clock: FrozenClock, **values: int | str | None) -> OrganizationSettings:
    return OrganizationSettings(organization_id=1, updated_at=clock.now(), **values)


class TestEffectiveSettings:
    """One merge of the defaults and the stored values, for the API and for ``send_sms``: a
    stored value applies when the API would accept it, else the default does."""

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("quiet_hours_start", 0),
            ("quiet_hours_start", 23),
            ("quiet_hours_end", 0),
            ("quiet_hours_end", 23),
            ("sms_hourly_limit", 0),  # sends no SMS at all
            ("sms_hourly_limit", MAX_SMS_HOURLY_LIMIT),
        ],
    )
    def test_a_value_in_range_applies(
        self, settings: Settings, clock: FrozenClock, field: str, value: int
    ) -> None:
        effective = merged(settings, stored(clock, **{field: value}))
        assert getattr(effective, field) == value
        assert effective.overrides[field] == value

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("quiet_hours_start", 24),
            ("quiet_hours_start", -1),
            ("quiet_hours_end", 99),
            ("sms_hourly_limit", -5),
            ("sms_hourly_limit", MAX_SMS_HOURLY_LIMIT + 1),
        ],
    )
    def test_a_value_out_of_range_falls_back_to_the_default(
        self, settings: Settings, clock: FrozenClock, field: str, value: int
    ) -> None:
        effective = merged(settings, stored(clock, **{field: value}))
        assert getattr(effective, field) == getattr(settings, field)
        assert effective.overrides[field] is None

    def test_no_row_is_the_defaults(self, settings: Settings) -> None:
        effective = merged(settings, None)
        assert (
            effective.quiet_hours_start,
            effective.quiet_hours_end,
            effective.sms_hourly_limit,
            effective.updated_at,
        ) == (settings.quiet_hours_start, settings.quiet_hours_end, settings.sms_hourly_limit, None)
        assert effective.overrides == dict.fromkeys(effective.overrides)

    async def test_the_api_shows_what_a_send_applies(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        settings: Settings,
        engine: AsyncEngine,
        clock: FrozenClock,
    ) -> None:
        # Written to the table by hand, past the API's checks: the hour is ignored everywhere.
        async with create_sessionmaker(engine)() as session, session.begin():
            session.add(stored(clock, quiet_hours_start=25, quiet_hours_end=7))
        data = (await client.get(URL, headers=auth())).json()["data"]
        async with create_sessionmaker(engine)() as session:
            policy = await effective_settings(session, settings, 1)
        assert data["quiet_hours_start"] == policy.quiet_hours_start == settings.quiet_hours_start
        assert data["quiet_hours_end"] == policy.quiet_hours_end == 7
        assert (
            data["overrides"]
            == policy.overrides
            == {
                "quiet_hours_start": None,
                "quiet_hours_end": 7,
                "sms_hourly_limit": None,
                "default_region": None,
                "actions_per_second": None,
            }
        )
