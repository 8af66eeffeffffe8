"""Unsubscribe links: signing one for a patient's email, and honouring one.

A token names the organisation, the patient and the channel, signed with the installation's
key (``itsdangerous``): it carries ids only, so a link leaks no address, and a token
altered in any character, or signed by another deployment, is refused.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from datetime import datetime
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy.ext.asyncio import AsyncSession

from careflow.errors import not_found
from careflow.installation import service as installation
from careflow.kit.types import EntityRef
from careflow.patients import service as patients

_SALT = "careflow.unsubscribe"
PATH = "/v1/unsubscribe/"


def _serializer(signing_key: str) -> URLSafeSerializer:
    return URLSafeSerializer(signing_key, salt=_SALT)


def token_for(signing_key: str, organization_id: int, patient_id: EntityRef) -> str:
    return str(_serializer(signing_key).dumps([organization_id, patient_id, patients.EMAIL]))


async def link_for(
    session: AsyncSession,
    *,
    public_url: str,
    organization_id: int,
    patient_id: EntityRef,
    now: datetime,
    services: MutableMapping[str, Any] | None = None,
) -> str:
    """The URL that unsubscribes this patient from this organisation's emails."""
    key = (await installation.identity(session, now, services)).signing_key
    return f"{public_url}{PATH}{token_for(key, organization_id, patient_id)}"


def _read(signing_key: str, token: str) -> tuple[int, EntityRef]:
    try:
        payload = _serializer(signing_key).loads(token)
    except BadSignature:
        raise not_found("unsubscribe_link") from None
    match payload:
        case [int() as organization_id, int() | str() as patient_id, patients.EMAIL]:
            return organization_id, patient_id
    raise not_found("unsubscribe_link")


async def check(session: AsyncSession, token: str, now: datetime) -> None:
    """Raise the 404 of a link careflow did not sign; nothing else happens."""
    _read((await installation.identity(session, now)).signing_key, token)


async def unsubscribe(session: AsyncSession, token: str, now: datetime) -> None:
    """Record the link's patient's email opt-out (once; following it again changes nothing)."""
    signing_key = (await installation.identity(session, now)).signing_key
    organization_id, patient_id = _read(signing_key, token)
    await patients.record_opt_out(
        session,
        organization_id,
        patient_id,
        channel=patients.EMAIL,
        source=patients.UNSUBSCRIBE_LINK,
        now=now,
    )
