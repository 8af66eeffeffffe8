"""The template an organisation sends under a key: its own, else the built-in."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.db import create_sessionmaker
from careflow.templates.builtin import BUILTIN_TEMPLATES
from careflow.templates.models import Template
from careflow.templates.rendering import render
from careflow.templates.service import resolve_template, template_exists
from tests.conftest import T0


async def add_override(
    engine: AsyncEngine, org: int, key: str, channel: str, body: str, subject: str | None = None
) -> None:
    async with create_sessionmaker(engine)() as session, session.begin():
        session.add(
            Template(
                organization_id=org,
                key=key,
                channel=channel,
                subject=subject,
                body=body,
                created_at=T0,
                updated_at=T0,
            )
        )


class TestResolve:
    async def test_an_org_override_beats_the_builtin(self, engine: AsyncEngine) -> None:
        await add_override(
            engine, 1, "welcome_patient", "email", "Hi {{ patient.first_name }}!", "Our welcome"
        )
        async with create_sessionmaker(engine)() as session:
            own = await resolve_template(session, 1, "welcome_patient", "email")
            other = await resolve_template(session, 2, "welcome_patient", "email")
            sms = await resolve_template(session, 1, "welcome_patient", "sms")

        assert own is not None and not own.built_in
        assert render(own, {"patient": {"first_name": "Kim"}}).body == "Hi Kim!"
        assert render(own, {}).subject == "Our welcome"
        assert other == BUILTIN_TEMPLATES[("welcome_patient", "email")]
        assert sms == BUILTIN_TEMPLATES[("welcome_patient", "sms")]

    async def test_a_custom_key_exists_for_its_org_only(self, engine: AsyncEngine) -> None:
        await add_override(engine, 1, "dental_recall", "sms", "Time for a check-up")
        async with create_sessionmaker(engine)() as session:
            assert await template_exists(session, 1, "dental_recall", "sms")
            assert not await template_exists(session, 1, "dental_recall", "email")
            assert not await template_exists(session, 2, "dental_recall", "sms")
            assert await template_exists(session, 2, "form_reminder", "sms")
            assert await resolve_template(session, 2, "dental_recall", "sms") is None
