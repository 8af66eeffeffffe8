"""Forged and ill-timed bearer tokens (SPEC §2), beyond tests/automations/test_access.py.

That module covers the HS256 basics (wrong secret, ``alg: none``, expired, each missing
claim, unknown role, bad ``org_id``/``sub``). Here: algorithm confusion against a configured
public key, RS256 and ES256 tokens, not-yet-valid tokens, and the audience.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import RSAAlgorithm

from tests.conftest import TEST_SECRET, make_settings
from tests.jobs.conftest import eventually
from tests.security.conftest import ClientFactory

PROBE = "/v1/automations/rules"  # any endpoint behind the bearer check


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _json_b64(data: dict[str, Any]) -> str:
    return _b64(json.dumps(data, separators=(",", ":")).encode())


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    values: dict[str, Any] = {
        "sub": "usr_1",
        "org_id": 1,
        "role": "admin",
        "iat": now,
        "exp": now + 600,
    }
    values.update(overrides)
    return values


def hs256_by_hand(payload: dict[str, Any], key: bytes) -> str:
    """HS256 over any key bytes: PyJWT refuses to use a PEM public key as an HMAC secret,
    which is exactly what an attacker who read the public key would do."""
    signing_input = f"{_json_b64({'alg': 'HS256', 'typ': 'JWT'})}.{_json_b64(payload)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def unsigned(payload: dict[str, Any]) -> str:
    return f"{_json_b64({'alg': 'none', 'typ': 'JWT'})}.{_json_b64(payload)}."


def public_pem(private_key: Any) -> bytes:
    return private_key.public_key().public_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ATTACKER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ATTACKER_EC_KEY = ec.generate_private_key(ec.SECP256R1())


async def status_of(client: httpx.AsyncClient, token: str) -> int:
    r = await client.get(PROBE, headers={"Authorization": f"Bearer {token}"})
    if r.status_code == 401:
        # Always the automations envelope's code, with the challenge header.
        assert r.json()["error"]["code"] == "unauthorized", r.text
        assert r.headers["www-authenticate"] == "Bearer"
    return r.status_code


def _attacker_jwk_header() -> dict[str, Any]:
    jwk = json.loads(RSAAlgorithm.to_jwk(ATTACKER_RSA_KEY.public_key()))
    return {"jwk": jwk, "kid": "attacker"}


# (case, token maker) for an app configured with the RSA public key. 200 = accepted.
RSA_CASES: list[tuple[str, Callable[[], str], int]] = [
    ("RS256 signed with the private key", lambda: jwt.encode(claims(), RSA_KEY, "RS256"), 200),
    (
        "HS256 keyed with the public key PEM (algorithm confusion)",
        lambda: hs256_by_hand(claims(), public_pem(RSA_KEY)),
        401,
    ),
    (
        "HS256 with the HMAC secret, which public-key mode must ignore",
        lambda: jwt.encode(claims(), TEST_SECRET, "HS256"),
        401,
    ),
    ("alg none", lambda: unsigned(claims()), 401),
    (
        "RS256 signed by another key",
        lambda: jwt.encode(claims(), ATTACKER_RSA_KEY, "RS256"),
        401,
    ),
    (
        "RS256 by another key that ships its own jwk header",
        lambda: jwt.encode(claims(), ATTACKER_RSA_KEY, "RS256", headers=_attacker_jwk_header()),
        401,
    ),
    (
        "RS512 (not an accepted algorithm)",
        lambda: jwt.encode(claims(), RSA_KEY, "RS512"),
        401,
    ),
    (
        "RS256 but expired",
        lambda: jwt.encode(claims(exp=int(time.time()) - 60), RSA_KEY, "RS256"),
        401,
    ),
    (
        "RS256 but an unknown role",
        lambda: jwt.encode(claims(role="root"), RSA_KEY, "RS256"),
        401,
    ),
]

EC_CASES: list[tuple[str, Callable[[], str], int]] = [
    ("ES256 signed with the private key", lambda: jwt.encode(claims(), EC_KEY, "ES256"), 200),
    (
        "HS256 keyed with the public key PEM (algorithm confusion)",
        lambda: hs256_by_hand(claims(), public_pem(EC_KEY)),
        401,
    ),
    ("ES256 signed by another key", lambda: jwt.encode(claims(), ATTACKER_EC_KEY, "ES256"), 401),
    ("alg none", lambda: unsigned(claims()), 401),
]


class TestPublicKeyMode:
    @pytest.mark.parametrize(("case", "make", "status"), RSA_CASES, ids=[c[0] for c in RSA_CASES])
    async def test_rsa_public_key(
        self, client_with: ClientFactory, case: str, make: Callable[[], str], status: int
    ) -> None:
        client = await client_with(jwt_public_key=public_pem(RSA_KEY).decode())
        assert await status_of(client, make()) == status, case

    @pytest.mark.parametrize(("case", "make", "status"), EC_CASES, ids=[c[0] for c in EC_CASES])
    async def test_ec_public_key(
        self, client_with: ClientFactory, case: str, make: Callable[[], str], status: int
    ) -> None:
        client = await client_with(jwt_public_key=public_pem(EC_KEY).decode())
        assert await status_of(client, make()) == status, case

    @pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
    async def test_asymmetric_tokens_are_refused_in_secret_mode(
        self, client_with: ClientFactory
    ) -> None:
        # Without a public key only HS256 is accepted: an RS256 token names a key type the
        # server does not hold, whatever it claims.
        client = await client_with()
        assert await status_of(client, jwt.encode(claims(), RSA_KEY, "RS256")) == 401
        assert await status_of(client, jwt.encode(claims(), TEST_SECRET, "HS256")) == 200
        assert await status_of(client, jwt.encode(claims(), TEST_SECRET, "HS512")) == 401


def _hs(**overrides: Any) -> str:
    return jwt.encode(claims(**overrides), TEST_SECRET, "HS256")


# Time claims are checked against the real clock (PyJWT's); these run with no leeway
# (tests/security/test_identity_providers.py covers CAREFLOW_JWT_LEEWAY_SECONDS).
TIME_CASES: list[tuple[str, Callable[[], str], int]] = [
    ("nbf in the future", lambda: _hs(nbf=int(time.time()) + 600), 401),
    ("nbf in the past", lambda: _hs(nbf=int(time.time()) - 600), 200),
    # PyJWT refuses a token issued in the future (ImmatureSignatureError on iat).
    ("iat in the future", lambda: _hs(iat=int(time.time()) + 600), 401),
    ("iat not a number", lambda: _hs(iat="yesterday"), 401),
    ("exp not a number", lambda: _hs(exp="tomorrow"), 401),
    ("exp a string of digits", lambda: _hs(exp=str(int(time.time()) + 600)), 401),
    ("exp a boolean", lambda: _hs(exp=True), 401),
    ("exp a float", lambda: _hs(exp=time.time() + 600), 200),
    ("exp past a float's range", lambda: _hs(exp=10**400), 200),
    ("exp one second ago", lambda: _hs(exp=int(time.time()) - 1), 401),
    ("role in another case", lambda: _hs(role="Admin"), 401),
    ("role null", lambda: _hs(role=None), 401),
    ("sub not a string", lambda: _hs(sub=42), 401),
    ("sub of 200 characters", lambda: _hs(sub="u" * 200), 200),
    ("org_id at the top of a 32-bit integer", lambda: _hs(org_id=2**31 - 1), 200),
    ("org_id past a 32-bit integer", lambda: _hs(org_id=2**31), 401),
    ("org_id far below", lambda: _hs(org_id=-(2**40)), 401),
    ("sub longer than an audit entry holds", lambda: _hs(sub="u" * 201), 401),
]


class TestClaims:
    @pytest.mark.parametrize(("case", "make", "status"), TIME_CASES, ids=[c[0] for c in TIME_CASES])
    async def test_claim(
        self, client_with: ClientFactory, case: str, make: Callable[[], str], status: int
    ) -> None:
        client = await client_with(jwt_leeway_seconds=0)
        assert await status_of(client, make()) == status, case


AUDIENCE = "careflow-api"

AUDIENCE_CASES: list[tuple[str, Callable[[], str], int]] = [
    ("the configured audience", lambda: _hs(aud=AUDIENCE), 200),
    ("a list holding the configured audience", lambda: _hs(aud=["other", AUDIENCE]), 200),
    ("another audience", lambda: _hs(aud="another-api"), 401),
    ("a list without it", lambda: _hs(aud=["another-api"]), 401),
    ("no aud claim", lambda: _hs(), 401),
    ("an empty aud", lambda: _hs(aud=""), 401),
]


class TestAudience:
    @pytest.mark.parametrize(
        ("case", "make", "status"), AUDIENCE_CASES, ids=[c[0] for c in AUDIENCE_CASES]
    )
    async def test_audience(
        self, client_with: ClientFactory, case: str, make: Callable[[], str], status: int
    ) -> None:
        client = await client_with(jwt_audience=AUDIENCE)
        assert await status_of(client, make()) == status, case

    async def test_without_a_configured_audience_aud_is_not_checked(
        self, client_with: ClientFactory
    ) -> None:
        # SPEC §1: aud is required *when* CAREFLOW_JWT_AUDIENCE is set; the 401s of SPEC §2
        # do not include an aud nobody asked for. The signature still decides.
        client = await client_with()
        assert await status_of(client, _hs(aud="another-api")) == 200
        assert await status_of(client, _hs(aud=["a", "b"])) == 200
        assert await status_of(client, _hs()) == 200


class TestVerifiedTokens:
    """A verified token is remembered until it expires; the cache changes no answer."""

    async def test_a_remembered_token_is_refused_once_it_expires(
        self, client_with: ClientFactory
    ) -> None:
        client = await client_with(jwt_leeway_seconds=0)
        expires = int(time.time()) + 2
        token = _hs(exp=expires)
        assert await status_of(client, token) == 200
        assert await status_of(client, token) == 200  # from the cache

        async def refused() -> bool:
            return await status_of(client, token) == 401

        await eventually(refused, within=6, interval=0.1)
        assert time.time() >= expires

    async def test_a_token_remembered_under_one_secret_is_refused_under_another(
        self, client_with: ClientFactory
    ) -> None:
        token = _hs()
        assert await status_of(await client_with(), token) == 200
        other = await client_with(jwt_secret="another-secret-of-enough-length-0123456789")
        assert await status_of(other, token) == 401

    async def test_the_cache_stays_bounded(self) -> None:
        from careflow import auth

        verifier = auth.TokenVerifier(make_settings("sqlite+aiosqlite:///unused.db"))
        for n in range(auth.VERIFIED_MAX + 10):
            token = jwt.encode(claims(sub=f"usr_{n}"), TEST_SECRET, "HS256")
            assert (await verifier.verify(token)).sub == f"usr_{n}"
        assert len(verifier._verified) <= auth.VERIFIED_MAX
