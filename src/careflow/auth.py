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
from careflow.token_keys import (
    JwksKeys,
    KeyNotFound,
    KeySource,
    StaticKey,
    load_public_key,
)


class Role(StrEnum):
    ADMIN = "admin"
    SPECIALIST = "specialist"
    PATIENT = "patient"
    SUPPORT = "support"
    SERVICE = "service"


# Tokens remembered per verifier (per app) once they verified.
VERIFIED_MAX = 4096
# An audit entry records the caller's sub (audit_log.actor_sub): a longer one could not be
# stored, so the token is refused rather than every audited write it makes failing.
MAX_SUB_LENGTH = 200
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


@dataclass(frozen=True, slots=True)
class Principal:
    org_id: int
    sub: str
    role: Role


def key_source(settings: Settings) -> KeySource:
    """The source of verification keys the settings name; KeyConfigError if unusable."""
    if settings.jwt_jwks_url is not None:
        return JwksKeys(settings.jwt_jwks_url, cooldown_seconds=settings.jwt_jwks_cooldown_seconds)
    if settings.jwt_public_key is not None:
        # An explicit algorithm per key type: an HS256 token signed with a public key, or an
        # ES256 token against an RSA key, is refused.
        return load_public_key(settings.jwt_public_key)
    return StaticKey(settings.jwt_secret, ["HS256"])


class TokenVerifier:
    """Verifies bearer tokens against one app's settings: key, audience, issuer, leeway and
    the claims naming the organisation and the role.

    Tokens verified before are remembered with their expiry: a client sends the same token
    on every request, and verifying it again gives the same answer until it expires (or, for
    a JWKS, until its key leaves the set). Only tokens that verified are kept.
    """

    def __init__(self, settings: Settings) -> None:
        self.keys = key_source(settings)
        self.audience = settings.jwt_audience
        self.issuer = settings.jwt_issuer
        self.leeway = settings.jwt_leeway_seconds
        self.org_claim = settings.jwt_org_claim
        self.role_claim = settings.jwt_role_claim
        required = ["sub", self.org_claim, self.role_claim, "exp"]
        if self.issuer is not None:
            required.append("iss")
        self._required = required
        self._verified: dict[str, tuple[Principal, float, str | None]] = {}

    def prepare(self) -> None:
        """Fetch what the keys need before serving (blocking); KeyConfigError if unusable."""
        self.keys.prepare()

    async def usable(self) -> bool:
        return await self.keys.usable()

    async def verify(self, token: str) -> Principal:
        principal, _ = await self.verify_until(token)
        return principal

    async def verify_until(self, token: str) -> tuple[Principal, float]:
        """The token's principal and the epoch second it stops being accepted (its ``exp``
        plus the leeway): the console's session ends then."""
        cached = self._verified.get(token)
        if cached is not None:
            principal, expires, kid = cached
            if time.time() < expires and self.keys.holds(kid):
                return principal, expires
            del self._verified[token]
        principal, expires, kid = await self._verify(token)
        if len(self._verified) >= VERIFIED_MAX:
            del self._verified[next(iter(self._verified))]  # the oldest entry
        self._verified[token] = (principal, expires, kid)
        return principal, expires

    async def _verify(self, token: str) -> tuple[Principal, float, str | None]:
        try:
            header = jwt.get_unverified_header(token)
            key = await self.keys.key_for(header)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=key.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                # SPEC §1: `aud` is required when an audience is set; when none is, the
                # claim is not checked (PyJWT would refuse any token that carries one).
                options={"require": self._required, "verify_aud": self.audience is not None},
            )
        except KeyNotFound as exc:
            raise UnauthorizedError(str(exc)) from None
        except jwt.PyJWTError as exc:
            raise UnauthorizedError(refusal(exc)) from None
        exp = claims["exp"]
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            # PyJWT takes any value int() accepts ("9999999999" included); RFC 7519 §2 makes
            # a NumericDate a JSON number.
            raise UnauthorizedError("claim exp must be a number")
        org_id = claims[self.org_claim]
        if isinstance(org_id, bool) or not isinstance(org_id, int):
            raise UnauthorizedError(f"claim {self.org_claim} must be an integer")
        if not INT32_MIN <= org_id <= INT32_MAX:
            # Every row's organization_id is a 32-bit INTEGER: such a token could reach
            # nothing, and PostgreSQL would refuse each statement that named it.
            raise UnauthorizedError(f"claim {self.org_claim} out of range")
        sub = claims["sub"]
        if not isinstance(sub, str) or not sub or len(sub) > MAX_SUB_LENGTH:
            raise UnauthorizedError(
                f"claim sub must be a non-empty string of at most {MAX_SUB_LENGTH} characters"
            )
        try:
            role = Role(claims[self.role_claim])
        except (ValueError, TypeError):
            raise UnauthorizedError(f"claim {self.role_claim} is not a known role") from None
        # PyJWT refuses a token once now >= exp + leeway. Kept until the whole second PyJWT
        # compares; floor, not float(): an integer past a float's range stays an integer.
        expires = math.floor(exp) + self.leeway
        kid = header.get("kid") if isinstance(header.get("kid"), str) else None
        return Principal(org_id=org_id, sub=sub, role=role), expires, kid


def refusal(exc: jwt.PyJWTError) -> str:
    """The 401 message for a token PyJWT refused: the check or claim that failed."""
    text = str(exc)
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "token expired"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "token not yet valid (iat)" if "(iat)" in text else "token not yet valid (nbf)"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"missing claim {exc.claim}"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "issuer not accepted"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "audience not accepted"
    if isinstance(exc, jwt.InvalidIssuedAtError):
        return "claim iat must be a number"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "signature does not verify"
    if isinstance(exc, jwt.InvalidAlgorithmError | jwt.InvalidKeyError):
        return "algorithm not accepted"
    if isinstance(exc, jwt.DecodeError):
        for claim in ("exp", "nbf", "iat"):
            if f"({claim})" in text:
                return f"claim {claim} must be a number"
        return "token is not a well-formed JWT"
    return "token refused"


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
    principal = await request.app.state.token_verifier.verify(token)
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


def route_roles(dependant: Any) -> frozenset[Role] | None:
    """The roles a route admits (every role when it only authenticates), None if it is open."""
    for sub in getattr(dependant, "dependencies", ()):
        allowed = getattr(sub.call, "allowed_roles", None)
        if allowed is not None:
            return allowed  # type: ignore[no-any-return]
        if sub.call is get_principal:
            return frozenset(Role)
        found = route_roles(sub)
        if found is not None:
            return found
    return None


async def access_problem(request: Request) -> UnauthorizedError | ForbiddenError | None:
    """The 401 or 403 the matched route would have answered, or None.

    FastAPI reads a JSON body before it runs the route's dependencies, so a body that is not
    JSON would answer 400 to a caller who may not call the route at all. The error handler
    asks this first, so the role checks keep their precedence over the body.
    """
    roles = route_roles(getattr(request.scope.get("route"), "dependant", None))
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
