"""Tokens from identity providers: keys from a JWKS URL, the issuer, clock-skew leeway,
namespaced claim names, 401 messages that name the failed check, and key settings that
cannot be used (refused when the verifier is built, and by ``careflow serve`` at start).

The JWKS is a real HTTP server on 127.0.0.1; ``serve`` runs as a real process.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from careflow.auth import TokenVerifier
from careflow.token_keys import JwksKeys, KeyConfigError, KeyNotFound
from tests.conftest import TEST_SECRET, make_settings
from tests.fixtures.jwks import JwksServer, SigningKey
from tests.fixtures.smtp import free_port
from tests.jobs.conftest import eventually
from tests.security.conftest import ClientFactory
from tests.security.test_tokens import claims, public_pem, unsigned

PROBE = "/v1/automations/rules"  # any endpoint behind the bearer check
K1, K2, K3 = SigningKey("k1"), SigningKey("k2"), SigningKey("k3")


async def answer(client: httpx.AsyncClient, token: str) -> tuple[int, str]:
    """The status, and for a 401 its message (with the envelope and challenge checked)."""
    r = await client.get(PROBE, headers={"Authorization": f"Bearer {token}"})
    if r.status_code != 401:
        return r.status_code, ""
    assert r.headers["www-authenticate"] == "Bearer"
    error = r.json()["error"]
    assert error["code"] == "unauthorized", r.text
    message: str = error["message"]
    # The message names a claim or a check, never the library's exception class.
    assert "Error" not in message and "PyJWT" not in message, message
    return 401, message


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    server = JwksServer()
    server.publish(K1, K2)
    server.start()
    yield server
    server.stop()


class TestJwks:
    async def test_two_keys_then_a_rotated_set(
        self, jwks: JwksServer, client_with: ClientFactory
    ) -> None:
        client = await client_with(jwt_jwks_url=jwks.url, jwt_jwks_cooldown_seconds=0.2)
        old = K1.sign(claims())
        assert await answer(client, old) == (200, "")
        assert await answer(client, K2.sign(claims())) == (200, "")
        assert jwks.fetches == 1  # both keys from one fetch, then from the cache

        jwks.publish(K2, K3)  # the provider rotates: k1 retired, k3 added
        new = K3.sign(claims())

        async def new_kid_accepted() -> bool:
            return (await answer(client, new))[0] == 200

        # The unknown kid refreshes the set once the cooldown since the last fetch is over.
        await eventually(new_kid_accepted, within=5, interval=0.05)
        assert jwks.fetches == 2
        # The retired kid is refused, a token remembered from before the rotation included.
        assert await answer(client, old) == (401, "no signing key with kid k1")
        assert await answer(client, K1.sign(claims(sub="usr_2"))) == (
            401,
            "no signing key with kid k1",
        )
        assert await answer(client, K2.sign(claims(sub="usr_3"))) == (200, "")

    async def test_unknown_kids_fetch_at_most_once_per_cooldown(
        self, jwks: JwksServer, client_with: ClientFactory
    ) -> None:
        client = await client_with(jwt_jwks_url=jwks.url)  # the default cooldown, 30 s
        assert await answer(client, K1.sign(claims())) == (200, "")
        for n in range(5):
            token = K3.sign(claims(), kid=f"made-up-{n}")
            assert await answer(client, token) == (401, f"no signing key with kid made-up-{n}")
        assert jwks.fetches == 1
        # A kid is the caller's text: a 401 repeats only a short, printable one.
        assert await answer(client, K3.sign(claims(), kid="k" * 65)) == (
            401,
            "no signing key with kid (not shown)",
        )

    async def test_what_a_published_kid_does_not_make_valid(
        self, jwks: JwksServer, client_with: ClientFactory
    ) -> None:
        client = await client_with(jwt_jwks_url=jwks.url)
        # Another key's signature under a published kid.
        assert await answer(client, K3.sign(claims(), kid="k1")) == (
            401,
            "signature does not verify",
        )
        # HS256 keyed with the HMAC secret, which JWKS mode does not use.
        hs = jwt.encode(claims(), TEST_SECRET, "HS256", headers={"kid": "k1"})
        assert await answer(client, hs) == (401, "algorithm not accepted")
        assert await answer(client, unsigned(claims())) == (401, "token header has no kid")
        assert await answer(client, K1.sign(claims(), kid=None)) == (
            401,
            "token header has no kid",
        )

    async def test_a_fetch_leaves_the_event_loop_free(
        self, jwks: JwksServer, client_with: ClientFactory
    ) -> None:
        client = await client_with(jwt_jwks_url=jwks.url)
        jwks.gate.clear()  # the provider is slow: the first fetch hangs until released
        pending = asyncio.create_task(answer(client, K1.sign(claims())))
        await eventually(lambda: jwks.fetches == 1)
        # While the fetch waits on the network, the same app answers other requests.
        assert (await client.get("/healthz")).status_code == 200
        assert not pending.done()
        jwks.gate.set()
        assert await pending == (200, "")

    async def test_readyz_is_not_ok_without_signing_keys(
        self, jwks: JwksServer, client_with: ClientFactory
    ) -> None:
        unreachable = await client_with(
            jwt_jwks_url=f"http://127.0.0.1:{free_port()}/.well-known/jwks.json"
        )
        r = await unreachable.get("/readyz")
        assert r.status_code == 503, r.text
        assert r.json()["signing_keys"] == "unavailable"
        assert await answer(unreachable, K1.sign(claims())) == (401, "signing keys unavailable")

        reachable = await client_with(jwt_jwks_url=jwks.url)
        r = await reachable.get("/readyz")
        assert (r.status_code, r.json()["status"]) == (200, "ok"), r.text


ISSUER = "https://login.example.com/"


class TestIssuer:
    @pytest.mark.parametrize(
        ("case", "extra", "expected"),
        [
            ("the configured issuer", {"iss": ISSUER}, (200, "")),
            ("another issuer", {"iss": "https://evil.example.com/"}, (401, "issuer not accepted")),
            ("no iss", {}, (401, "missing claim iss")),
        ],
    )
    async def test_issuer_is_required_and_checked_when_set(
        self,
        client_with: ClientFactory,
        case: str,
        extra: dict[str, Any],
        expected: tuple[int, str],
    ) -> None:
        client = await client_with(jwt_issuer=ISSUER)
        token = jwt.encode(claims(**extra), TEST_SECRET, "HS256")
        assert await answer(client, token) == expected, case

    async def test_unset_issuer_is_not_checked(self, client_with: ClientFactory) -> None:
        client = await client_with()
        token = jwt.encode(claims(iss="https://any.example.com/"), TEST_SECRET, "HS256")
        assert await answer(client, token) == (200, "")


def _hs(**overrides: Any) -> str:
    return jwt.encode(claims(**overrides), TEST_SECRET, "HS256")


def _in(seconds: int) -> int:
    return int(time.time()) + seconds


LEEWAY_CASES: list[tuple[str, dict[str, Any], Callable[[], str], tuple[int, str]]] = [
    # The default, 30 s: a provider's clock a little ahead or behind is tolerated.
    ("iat 2 s ahead", {}, lambda: _hs(iat=_in(2)), (200, "")),
    ("nbf 2 s ahead", {}, lambda: _hs(nbf=_in(2)), (200, "")),
    ("exp 10 s ago", {}, lambda: _hs(exp=_in(-10)), (200, "")),
    ("exp 60 s ago", {}, lambda: _hs(exp=_in(-60)), (401, "token expired")),
    ("iat 120 s ahead", {}, lambda: _hs(iat=_in(120)), (401, "token not yet valid (iat)")),
    ("nbf 120 s ahead", {}, lambda: _hs(nbf=_in(120)), (401, "token not yet valid (nbf)")),
    # Set explicitly.
    ("no leeway, iat 5 s ahead", {"jwt_leeway_seconds": 0}, lambda: _hs(iat=_in(5)), (401, "token not yet valid (iat)")),
    ("no leeway, exp 2 s ago", {"jwt_leeway_seconds": 0}, lambda: _hs(exp=_in(-2)), (401, "token expired")),
    ("120 s leeway, exp 60 s ago", {"jwt_leeway_seconds": 120}, lambda: _hs(exp=_in(-60)), (200, "")),
]  # fmt: skip


class TestLeeway:
    @pytest.mark.parametrize(
        ("case", "settings", "make", "expected"), LEEWAY_CASES, ids=[c[0] for c in LEEWAY_CASES]
    )
    async def test_leeway(
        self,
        client_with: ClientFactory,
        case: str,
        settings: dict[str, Any],
        make: Callable[[], str],
        expected: tuple[int, str],
    ) -> None:
        client = await client_with(**settings)
        assert await answer(client, make()) == expected, case

    def test_leeway_is_bounded(self) -> None:
        for bad in (-1, 301):
            with pytest.raises(ValidationError):
                make_settings("sqlite+aiosqlite:///unused.db", jwt_leeway_seconds=bad)


ORG_CLAIM = "https://careflow.example.com/org_id"
ROLE_CLAIM = "https://careflow.example.com/role"


class TestClaimNames:
    async def test_namespaced_claims(self, client_with: ClientFactory) -> None:
        client = await client_with(jwt_org_claim=ORG_CLAIM, jwt_role_claim=ROLE_CLAIM)

        def token(namespaced_role: str, **extra: Any) -> str:
            body = {"sub": "usr_1", ORG_CLAIM: 1, ROLE_CLAIM: namespaced_role, "exp": _in(600)}
            return jwt.encode({**body, **extra}, TEST_SECRET, "HS256")

        assert await answer(client, token("admin")) == (200, "")
        # The role is read from the configured claim: a patient may not list rules.
        assert await answer(client, token("patient", role="admin")) == (403, "")
        assert await answer(client, _hs()) == (401, f"missing claim {ORG_CLAIM}")
        assert await answer(client, token("root")) == (401, f"claim {ROLE_CLAIM} is not a known role")
        bad_org = jwt.encode(
            {"sub": "u", ORG_CLAIM: "1", ROLE_CLAIM: "admin", "exp": _in(600)}, TEST_SECRET, "HS256"
        )
        assert await answer(client, bad_org) == (401, f"claim {ORG_CLAIM} must be an integer")

    async def test_the_organisation_comes_from_the_configured_claim(
        self, client_with: ClientFactory
    ) -> None:
        client = await client_with(jwt_org_claim=ORG_CLAIM)
        rule = {
            "name": "Welcome",
            "trigger_event": "patient.onboarded",
            "conditions": {},
            "actions": [{"type": "send_email", "template": "welcome_patient"}],
        }

        def headers(org: int) -> dict[str, str]:
            body = {"sub": "usr_1", ORG_CLAIM: org, "org_id": 1, "role": "admin", "exp": _in(600)}
            return {"Authorization": "Bearer " + jwt.encode(body, TEST_SECRET, "HS256")}

        r = await client.post(PROBE, json=rule, headers=headers(2))
        assert r.status_code == 201, r.text
        assert len((await client.get(PROBE, headers=headers(2))).json()["data"]) == 1
        assert (await client.get(PROBE, headers=headers(1))).json()["data"] == []


MESSAGE_CASES: list[tuple[str, Callable[[], str], str]] = [
    ("expired", lambda: _hs(exp=_in(-3600)), "token expired"),
    ("no org_id", lambda: _hs(org_id=None), "missing claim org_id"),
    ("no role", lambda: _hs(role=None), "missing claim role"),
    ("no sub", lambda: _hs(sub=None), "missing claim sub"),
    ("no exp", lambda: _hs(exp=None), "missing claim exp"),
    ("another secret", lambda: jwt.encode(claims(), "another-secret-of-enough-length-012345", "HS256"), "signature does not verify"),
    ("alg none", lambda: unsigned(claims()), "algorithm not accepted"),
    ("not a JWT", lambda: "x.y.z", "token is not a well-formed JWT"),
    ("unknown role", lambda: _hs(role="root"), "claim role is not a known role"),
    ("org_id a string", lambda: _hs(org_id="1"), "claim org_id must be an integer"),
    ("org_id too large", lambda: _hs(org_id=2**31), "claim org_id out of range"),
    ("exp a string", lambda: _hs(exp="tomorrow"), "claim exp must be a number"),
    ("iat a string", lambda: _hs(iat="yesterday"), "claim iat must be a number"),
    ("sub too long", lambda: _hs(sub="u" * 201), "claim sub must be a non-empty string of at most 200 characters"),
]  # fmt: skip


class TestMessages:
    @pytest.mark.parametrize(
        ("case", "make", "message"), MESSAGE_CASES, ids=[c[0] for c in MESSAGE_CASES]
    )
    async def test_a_401_names_what_failed(
        self, client_with: ClientFactory, case: str, make: Callable[[], str], message: str
    ) -> None:
        client = await client_with()
        assert await answer(client, make()) == (401, message), case

    async def test_audience(self, client_with: ClientFactory) -> None:
        client = await client_with(jwt_audience="careflow-api")
        assert await answer(client, _hs(aud="another-api")) == (401, "audience not accepted")
        assert await answer(client, _hs()) == (401, "missing claim aud")

    async def test_a_pathway_route_says_the_same(self, client_with: ClientFactory) -> None:
        client = await client_with()
        token = _hs(exp=_in(-3600))
        r = await client.get("/v1/pathway-rules", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401
        assert "token expired" in r.text


# Key material an operator might paste into CAREFLOW_JWT_PUBLIC_KEY.
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def certificate_pem() -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "login.example.com")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(RSA_KEY.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(RSA_KEY, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def private_pem() -> str:
    return RSA_KEY.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def one_line(pem: str) -> str:
    """The PEM as an env file holds it: one line, with literal backslash-n sequences."""
    return pem.strip().replace("\n", "\\n")


UNUSABLE_KEYS: list[tuple[str, dict[str, Any], str]] = [
    ("a certificate", {"jwt_public_key": certificate_pem()}, "CAREFLOW_JWT_PUBLIC_KEY is an X.509 certificate"),
    ("a private key", {"jwt_public_key": private_pem()}, "CAREFLOW_JWT_PUBLIC_KEY is a private key"),
    ("garbage", {"jwt_public_key": "not-a-key"}, "CAREFLOW_JWT_PUBLIC_KEY is not a PEM public key"),
    ("a truncated PEM", {"jwt_public_key": public_pem(RSA_KEY).decode()[:120]}, "CAREFLOW_JWT_PUBLIC_KEY is not a PEM public key"),
    ("an EC key on P-384", {"jwt_public_key": public_pem(ec.generate_private_key(ec.SECP384R1())).decode()}, "ES256 needs a P-256"),
    ("a JWKS URL without a scheme", {"jwt_jwks_url": "login.example.com/jwks.json"}, "CAREFLOW_JWT_JWKS_URL must be an http:// or https:// URL"),
    ("a file JWKS URL", {"jwt_jwks_url": "file:///etc/passwd"}, "CAREFLOW_JWT_JWKS_URL must be an http:// or https:// URL"),
]  # fmt: skip


class TestKeySettings:
    @pytest.mark.parametrize(
        ("case", "settings", "message"), UNUSABLE_KEYS, ids=[c[0] for c in UNUSABLE_KEYS]
    )
    def test_an_unusable_key_is_refused_when_the_verifier_is_built(
        self, case: str, settings: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(KeyConfigError) as raised:
            TokenVerifier(make_settings("sqlite+aiosqlite:///unused.db", **settings))
        assert message in str(raised.value), case
        assert "\n" not in str(raised.value)

    async def test_a_one_line_pem_with_literal_newlines_is_read(
        self, client_with: ClientFactory
    ) -> None:
        client = await client_with(jwt_public_key=one_line(public_pem(RSA_KEY).decode()))
        assert await answer(client, jwt.encode(claims(), RSA_KEY, "RS256")) == (200, "")
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        assert await answer(client, jwt.encode(claims(), other, "RS256")) == (
            401,
            "signature does not verify",
        )

    def test_a_public_key_and_a_jwks_url_together_are_refused(self) -> None:
        with pytest.raises(ValidationError, match="not both"):
            make_settings(
                "sqlite+aiosqlite:///unused.db",
                jwt_public_key=public_pem(RSA_KEY).decode(),
                jwt_jwks_url="https://login.example.com/jwks.json",
            )


# ---- careflow serve, as an operator starts it ------------------------------------------


def _serve_env(directory: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREFLOW_")}
    env.update(
        {
            "CAREFLOW_DATABASE_URL": f"sqlite+aiosqlite:///{directory / 'careflow.db'}",
            "CAREFLOW_JWT_SECRET": TEST_SECRET,
            **settings,
        }
    )
    return env


def serve(directory: Path, port: int, **settings: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "careflow.cli", "serve", "--port", str(port)],
        cwd=directory,
        env=_serve_env(directory, **settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def bad_jwks() -> Iterator[JwksServer]:
    server = JwksServer()
    server.start()
    yield server
    server.stop()


SERVE_REFUSALS: list[tuple[str, Callable[[JwksServer], dict[str, str]], str]] = [
    ("a certificate", lambda _: {"CAREFLOW_JWT_PUBLIC_KEY": certificate_pem()}, "CAREFLOW_JWT_PUBLIC_KEY is an X.509 certificate"),
    ("garbage", lambda _: {"CAREFLOW_JWT_PUBLIC_KEY": "-----BEGIN PUBLIC KEY-----\\ngarbage\\n-----END PUBLIC KEY-----"}, "CAREFLOW_JWT_PUBLIC_KEY is not a PEM public key"),
    ("an unreachable JWKS URL", lambda _: {"CAREFLOW_JWT_JWKS_URL": f"http://127.0.0.1:{free_port()}/jwks.json"}, "CAREFLOW_JWT_JWKS_URL could not be fetched"),
    ("a malformed JWKS URL", lambda _: {"CAREFLOW_JWT_JWKS_URL": "login.example.com/jwks.json"}, "CAREFLOW_JWT_JWKS_URL must be an http:// or https:// URL"),
    ("a JWKS URL answering HTML", lambda s: {"CAREFLOW_JWT_JWKS_URL": s.url, "_body": "<html>sign in</html>"}, "CAREFLOW_JWT_JWKS_URL did not answer a usable JWK set"),
    ("a JWKS URL answering no keys", lambda s: {"CAREFLOW_JWT_JWKS_URL": s.url, "_body": '{"keys": []}'}, "CAREFLOW_JWT_JWKS_URL did not answer a usable JWK set"),
    ("a JWKS URL answering 404", lambda s: {"CAREFLOW_JWT_JWKS_URL": s.url, "_status": "404"}, "CAREFLOW_JWT_JWKS_URL could not be fetched"),
    ("a negative leeway", lambda _: {"CAREFLOW_JWT_LEEWAY_SECONDS": "-5"}, "CAREFLOW_JWT_LEEWAY_SECONDS"),
]  # fmt: skip


class TestServe:
    @pytest.mark.parametrize(
        ("case", "make", "message"), SERVE_REFUSALS, ids=[c[0] for c in SERVE_REFUSALS]
    )
    def test_serve_refuses_to_start_with_an_unusable_key(
        self,
        tmp_path: Path,
        bad_jwks: JwksServer,
        case: str,
        make: Callable[[JwksServer], dict[str, str]],
        message: str,
    ) -> None:
        settings = make(bad_jwks)
        bad_jwks.body = settings.pop("_body", bad_jwks.body.decode()).encode()
        bad_jwks.status = int(settings.pop("_status", "200"))
        proc = serve(tmp_path, free_port(), **settings)
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode not in (0, None), case
        lines = stderr.strip().splitlines()
        assert len(lines) == 1, stderr
        assert lines[0].startswith("careflow: error: "), stderr
        assert message in lines[0], stderr

    def test_serve_with_a_jwks_url_accepts_its_tokens(
        self, tmp_path: Path, jwks: JwksServer
    ) -> None:
        port = free_port()
        proc = serve(
            tmp_path,
            port,
            CAREFLOW_JWT_JWKS_URL=jwks.url,
            CAREFLOW_JWT_ISSUER=ISSUER,
            CAREFLOW_JWT_ORG_CLAIM=ORG_CLAIM,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, proc.communicate()[1]
                try:
                    ready = httpx.get(f"{base}/readyz", timeout=1)
                    if ready.status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "serve did not become ready"
                time.sleep(0.1)
            body = {"sub": "usr_1", ORG_CLAIM: 1, "role": "admin", "iss": ISSUER, "exp": _in(600)}
            r = httpx.get(
                f"{base}{PROBE}", headers={"Authorization": "Bearer " + K2.sign(body)}, timeout=10
            )
            assert r.status_code == 200, r.text
            body.pop("iss")
            r = httpx.get(
                f"{base}{PROBE}", headers={"Authorization": "Bearer " + K2.sign(body)}, timeout=10
            )
            assert (r.status_code, r.json()["error"]["message"]) == (401, "missing claim iss")
        finally:
            proc.terminate()
            proc.communicate(timeout=30)


class TestProviderOutage:
    """The provider's JWKS answering 503: what careflow fetched before keeps serving."""

    async def test_the_last_set_serves_while_the_provider_is_down(self, jwks: JwksServer) -> None:
        keys = JwksKeys(jwks.url, cooldown_seconds=0, lifespan_seconds=0.3, retry_seconds=60)
        keys.prepare()
        assert jwks.fetches == 1
        jwks.status = 503

        async def refetched() -> bool:
            # Each call verifies k1 tokens from the cache, until the set expires and a fetch
            # is tried (and fails).
            assert (await keys.key_for({"kid": "k1"})).algorithms == ["RS256"]
            return jwks.fetches == 2

        await eventually(refetched, within=5, interval=0.05)
        # The failed fetch is not retried for retry_seconds; the last set serves meanwhile.
        for _ in range(3):
            assert (await keys.key_for({"kid": "k2"})).algorithms == ["RS256"]
            with pytest.raises(KeyNotFound, match="no signing key with kid k9"):
                await keys.key_for({"kid": "k9"})
        assert await keys.usable()
        assert keys.holds("k1")
        assert jwks.fetches == 2

    async def test_nothing_fetched_yet_is_unavailable(self, jwks: JwksServer) -> None:
        jwks.status = 503
        keys = JwksKeys(jwks.url, cooldown_seconds=0, retry_seconds=60)
        assert not await keys.usable()
        with pytest.raises(KeyNotFound, match="signing keys unavailable"):
            await keys.key_for({"kid": "k1"})
        assert jwks.fetches == 1  # the failure holds further fetches back
