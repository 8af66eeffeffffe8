"""The console's signed values: the session cookie, its CSRF token, the sign-in form's
token and the one-time sign-in ticket of ``careflow console-url``.

Each is signed by ``itsdangerous`` with the installation's signing key (``installation/``)
and a salt per purpose, so a value signed for one use is refused by every other. Pure: no
I/O, time passed in.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer

MAX_VALUE_LENGTH = 8192


@dataclass(frozen=True, slots=True)
class Keys:
    session: URLSafeSerializer
    csrf: URLSafeSerializer
    login: URLSafeSerializer
    ticket: URLSafeSerializer

    @classmethod
    def derive(cls, signing_key: str) -> Keys:
        return cls(
            *(
                URLSafeSerializer(signing_key, salt=f"careflow-console-{purpose}")
                for purpose in ("session", "csrf", "login", "ticket")
            )
        )


def sign(key: URLSafeSerializer, claims: dict[str, Any]) -> str:
    return str(key.dumps(claims))


def unsign(key: URLSafeSerializer, value: str, *, now: float) -> dict[str, Any] | None:
    """The claims of a value this key signed that has not expired (``exp``), else None."""
    if len(value) > MAX_VALUE_LENGTH:
        return None
    try:
        claims = key.loads(value)
    except BadSignature:
        return None
    if not isinstance(claims, dict):
        return None
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool) or exp <= now:
        return None
    return claims


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    org_id: int
    sub: str
    role: str
    expires: int  # epoch seconds: when the token it came from stops being accepted
    sid: str  # random per sign-in; the CSRF token is derived from it

    def claims(self) -> dict[str, Any]:
        return {
            "org": self.org_id,
            "sub": self.sub,
            "role": self.role,
            "exp": self.expires,
            "sid": self.sid,
        }

    @classmethod
    def from_claims(cls, claims: dict[str, Any]) -> ConsoleSession | None:
        org, sub, role, sid = (claims.get(k) for k in ("org", "sub", "role", "sid"))
        if isinstance(org, bool) or not isinstance(org, int):
            return None
        if not (isinstance(sub, str) and isinstance(role, str) and isinstance(sid, str)):
            return None
        return cls(org_id=org, sub=sub, role=role, expires=int(claims["exp"]), sid=sid)


def new_sid() -> str:
    return secrets.token_urlsafe(18)


def csrf_token(key: URLSafeSerializer, sid: str) -> str:
    """The CSRF token of a session (or of a sign-in form's nonce): fixed per sid."""
    return str(key.dumps(sid))


def csrf_matches(key: URLSafeSerializer, sid: str, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(csrf_token(key, sid), sent or "")
