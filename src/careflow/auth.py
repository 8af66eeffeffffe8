"""Bearer JWT → ``Principal(org_id, sub, role)``, and role dependencies."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request

from careflow.config import Settings
from careflow.errors import ForbiddenError, UnauthorizedError


class Role(StrEnum):
    ADMIN = "admin"
    SPECIALIST = "specialist"
    PATIENT = "patient"
    SUPPORT = "support"
    SERVICE = "service"


REQUIRED_CLAIMS = ("sub", "org_id", "role", "exp")
# An audit entry records the caller's sub (audit_log.actor_sub): a longer one could not be
# stored, so the token is refused rather than every audited write it makes failing.
MAX_SUB_LENGTH = 200
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


@dataclass(frozen=True, slots=True)
class Principal:
    org_id: int
    sub: str
    role: Role


def _algorithms(settings: Settings) -> tuple[list[str], Any]:
    # An explicit list per key type: an HS256 token signed with a public key is refused.
    if settings.jwt_public_key:
        return ["RS256", "ES256"], settings.jwt_public_key
    return ["HS256"], settings.jwt_secret


# Tokens verified before, with their expiry: a client sends the same token on every
# request, and verifying it again gives the same answer until it expires. Only tokens that
# verified are kept; the key material is part of the cache key.
_VERIFIED: dict[tuple[str, str, str | None, str | None], tuple[Principal, float]] = {}
_VERIFIED_MAX = 4096


def decode_token(token: str, settings: Settings) -> Principal:
    cache_key = (token, settings.jwt_secret, settings.jwt_public_key, settings.jwt_audience)
    cached = _VERIFIED.get(cache_key)
    if cached is not None:
        principal, expires = cached
        if time.time() < expires:
            return principal
        del _VERIFIED[cache_key]
    principal, expires = _verify(token, settings)
    if len(_VERIFIED) >= _VERIFIED_MAX:
        del _VERIFIED[next(iter(_VERIFIED))]  # the oldest entry
    _VERIFIED[cache_key] = (principal, expires)
    return principal


def _verify(token: str, settings: Settings) -> tuple[Principal, float]:
    algorithms, key = _algorithms(settings)
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=algorithms,
            audience=settings.jwt_audience or None,
            # SPEC §1: `aud` is required when an audience is set; when none is, the claim
            # is not checked (PyJWT would refuse any token that carries one). SPEC §2's
            # 401s are alg none, a bad signature, a missing claim, a bad role, a past exp.
            options={
                "require": list(REQUIRED_CLAIMS),
                "verify_aud": bool(settings.jwt_audience),
            },
        )
    except jwt.PyJWTError as exc:
        raise UnauthorizedError(f"Invalid token: {exc.__class__.__name__}") from exc
    exp = claims["exp"]
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        # PyJWT takes any value int() accepts ("9999999999" included); RFC 7519 §2 makes a
        # NumericDate a JSON number.
        raise UnauthorizedError("Invalid token: exp must be a number")
    org_id = claims.get("org_id")
    if isinstance(org_id, bool) or not isinstance(org_id, int):
        raise UnauthorizedError("Invalid token: org_id must be an integer")
    if not INT32_MIN <= org_id <= INT32_MAX:
        # Every row's organization_id is a 32-bit INTEGER: such a token could reach nothing,
        # and PostgreSQL would refuse each statement that named it.
        raise UnauthorizedError("Invalid token: org_id out of range")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > MAX_SUB_LENGTH:
        raise UnauthorizedError(
            f"Invalid token: sub must be a non-empty string of at most {MAX_SUB_LENGTH} characters"
        )
    try:
        role = Role(claims["role"])
    except ValueError as exc:
        raise UnauthorizedError("Invalid token: unknown role") from exc
    # PyJWT requires exp and refuses a token once now >= exp (no leeway is configured).
    # Kept until the whole second PyJWT compares (int(exp) <= now refuses it); floor, not
    # float(): an integer past a float's range stays an integer.
    return Principal(org_id=org_id, sub=sub, role=role), math.floor(exp)


def issue_token(
    settings: Settings,
    *,
    org_id: int,
    role: str,
    sub: str = "usr_1",
    ttl_seconds: int = 3600,
    **extra: Any,
) -> str:
    """Sign an HS256 token with the configured secret (local use and tests)."""
    now = int(time.time())
    claims = {"sub": sub, "org_id": org_id, "role": role, "iat": now, "exp": now + ttl_seconds}
    if settings.jwt_audience and "aud" not in extra:
        claims["aud"] = settings.jwt_audience
    claims.update(extra)
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")


def bearer_token(header: str) -> str | None:
    """The token of an ``Authorization: Bearer …`` header; None for any other scheme."""
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


async def get_principal(request: Request) -> Principal:
    header = request.headers.get("authorization")
    if not header:
        raise UnauthorizedError("Missing Authorization header")
    token = bearer_token(header)
    if token is None:
        raise UnauthorizedError("Authorization must use the Bearer scheme")
    principal = decode_token(token, request.app.state.settings)
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require_roles(*roles: Role) -> Any:
    allowed = frozenset(roles)

    # One dependency that authenticates and authorises, rather than one on top of
    # ``get_principal``: FastAPI's cost is per dependency, and this runs on every request.
    async def dependency(request: Request) -> Principal:
        principal = await get_principal(request)
        if principal.role not in allowed:
            raise ForbiddenError()
        return principal

    # Read by ``access_problem`` when a route fails before its dependencies run.
    dependency.allowed_roles = allowed  # type: ignore[attr-defined]
    return Depends(dependency)


def _route_roles(dependant: Any) -> frozenset[Role] | None:
    """The roles a route admits (every role when it only authenticates), None if it is open."""
    for sub in getattr(dependant, "dependencies", ()):
        allowed = getattr(sub.call, "allowed_roles", None)
        if allowed is not None:
            return allowed  # type: ignore[no-any-return]
        if sub.call is get_principal:
            return frozenset(Role)
        found = _route_roles(sub)
        if found is not None:
            return found
    return None


async def access_problem(request: Request) -> UnauthorizedError | ForbiddenError | None:
    """The 401 or 403 the matched route would have answered, or None.

    FastAPI reads a JSON body before it runs the route's dependencies, so a body that is not
    JSON would answer 400 to a caller who may not call the route at all. The error handler
    asks this first, so the role checks keep their precedence over the body.
    """
    roles = _route_roles(getattr(request.scope.get("route"), "dependant", None))
    if roles is None:
        return None
    try:
        principal = await get_principal(request)
    except UnauthorizedError as exc:
        return exc
    if principal.role not in roles:
        return ForbiddenError()
    return None


AdminDep = Annotated[Principal, require_roles(Role.ADMIN)]
StaffDep = Annotated[Principal, require_roles(Role.ADMIN, Role.SPECIALIST)]
INGEST_ROLES = frozenset({Role.ADMIN, Role.SERVICE})
IngestDep = Annotated[Principal, require_roles(*INGEST_ROLES)]
FormsReadDep = Annotated[Principal, require_roles(Role.ADMIN, Role.SPECIALIST, Role.SERVICE)]
