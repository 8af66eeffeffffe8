"""The keys that verify bearer tokens: a shared secret, a public key, or a JWKS URL.

Each source says which key and algorithms verify a token. A setting that cannot be used
raises ``KeyConfigError`` with one line naming the setting, so ``careflow serve`` refuses to
start rather than answering 401 to every request.

A JWKS is fetched and cached by PyJWT's ``PyJWKClient`` (a JWK set kept 5 minutes, a
forced refresh for an unknown ``kid`` at most once per cooldown). Its fetches are
synchronous: they run in a worker thread, and a token whose key is in the cached set is
verified without leaving the event loop.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import jwt
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt import PyJWK, PyJWKClient, PyJWKSet

# Seconds a fetched JWK set is used before it is fetched again (PyJWKClient's default).
JWKS_LIFESPAN_SECONDS = 300.0
# Seconds a JWKS request may take.
JWKS_TIMEOUT_SECONDS = 5.0
# The longest kid a 401 message repeats.
MAX_SHOWN_KID = 64
# Seconds after a failed fetch during which the last set fetched serves, untried.
JWKS_RETRY_SECONDS = 30.0
# Algorithms a JWKS key may verify: asymmetric only. A symmetric (``oct``) key published
# in a JWKS is not a secret, so it can verify nothing.
JWKS_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)

log = structlog.get_logger("careflow.auth")


class KeyConfigError(Exception):
    """A key setting that cannot be used. The message is one line naming the setting."""


class KeyNotFound(Exception):
    """No key verifies this token; the message says why, for the 401."""


@dataclass(frozen=True, slots=True)
class VerificationKey:
    key: Any
    algorithms: list[str]


class StaticKey:
    """A shared HMAC secret or one public key: nothing to fetch, usable once loaded."""

    def __init__(self, key: Any, algorithms: list[str]) -> None:
        self._key = VerificationKey(key, algorithms)

    def prepare(self) -> None:
        """Nothing to fetch: the key was loaded when the source was built."""

    async def key_for(self, header: dict[str, Any]) -> VerificationKey:
        return self._key

    def holds(self, kid: str | None) -> bool:
        return True

    async def usable(self) -> bool:
        return True


def load_public_key(pem: str) -> StaticKey:
    """``CAREFLOW_JWT_PUBLIC_KEY``: a PEM ``PUBLIC KEY`` (RSA, or EC on P-256).

    A PEM written on one line with literal ``\\n`` sequences (as env files and secret
    stores often hold it) is read after turning them into line breaks; the result must
    still parse as a PEM public key, so nothing else is accepted by this.
    """
    text = pem.strip()
    if "\n" not in text and "\\n" in text:
        text = text.replace("\\n", "\n")
    if "BEGIN CERTIFICATE" in text:
        raise KeyConfigError(
            "CAREFLOW_JWT_PUBLIC_KEY is an X.509 certificate, not a public key: "
            "extract its key with `openssl x509 -in cert.pem -pubkey -noout`"
        )
    if "PRIVATE KEY" in text:
        raise KeyConfigError(
            "CAREFLOW_JWT_PUBLIC_KEY is a private key: give careflow the public key only"
        )
    try:
        key = serialization.load_pem_public_key(text.encode())
    except (ValueError, TypeError):
        raise KeyConfigError(
            "CAREFLOW_JWT_PUBLIC_KEY is not a PEM public key "
            "(expected -----BEGIN PUBLIC KEY----- … -----END PUBLIC KEY-----)"
        ) from None
    if isinstance(key, rsa.RSAPublicKey):
        return StaticKey(key, ["RS256"])
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise KeyConfigError(
                f"CAREFLOW_JWT_PUBLIC_KEY is an EC key on {key.curve.name}: "
                "ES256 needs a P-256 (secp256r1) key"
            )
        return StaticKey(key, ["ES256"])
    raise KeyConfigError("CAREFLOW_JWT_PUBLIC_KEY must be an RSA or EC (P-256) public key")


class JwksKeys:
    """The signing keys an identity provider publishes at a JWKS URL, selected by ``kid``.

    When a fetch fails (the provider is down), the last set fetched keeps verifying tokens
    of the kids it held, and no fetch is tried again for ``retry_seconds``: an outage of the
    provider refuses no token it had already published a key for, and requests do not
    queue behind fetches that time out.
    """

    def __init__(
        self,
        url: str,
        *,
        cooldown_seconds: float,
        lifespan_seconds: float = JWKS_LIFESPAN_SECONDS,
        retry_seconds: float = JWKS_RETRY_SECONDS,
    ) -> None:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise KeyConfigError("CAREFLOW_JWT_JWKS_URL must be an http:// or https:// URL")
        self._client = PyJWKClient(
            url,
            cache_jwk_set=True,
            lifespan=lifespan_seconds,
            timeout=JWKS_TIMEOUT_SECONDS,
            cooldown_duration=cooldown_seconds,
        )
        self._retry_seconds = retry_seconds
        # The last set fetched and its keys by kid, rebuilt when PyJWKClient caches a new one.
        self._indexed: tuple[PyJWKSet | None, dict[str, PyJWK]] = (None, {})
        # Until then (monotonic), a failed fetch is not tried again: the last set serves.
        self._failed_until = -math.inf

    def prepare(self) -> None:
        """Fetch the set now (blocking): an unusable URL or answer raises KeyConfigError."""
        try:
            keys = self._client.get_signing_keys(refresh=True)
        except jwt.PyJWKClientConnectionError as exc:
            reason = str(exc.__cause__ or exc).replace("\n", " ")
            raise KeyConfigError(f"CAREFLOW_JWT_JWKS_URL could not be fetched: {reason}") from None
        except jwt.PyJWTError as exc:
            reason = str(exc).replace("\n", " ")
            raise KeyConfigError(
                f"CAREFLOW_JWT_JWKS_URL did not answer a usable JWK set: {reason}"
            ) from None
        except ValueError:  # the answer is not JSON
            raise KeyConfigError(
                "CAREFLOW_JWT_JWKS_URL did not answer a usable JWK set: the answer is not JSON"
            ) from None
        if not any(k.algorithm_name in JWKS_ALGORITHMS for k in keys):
            raise KeyConfigError(
                "CAREFLOW_JWT_JWKS_URL did not answer a usable JWK set: "
                "no RSA, EC or OKP signing key"
            )

    def _keys(self) -> dict[str, PyJWK] | None:
        """The usable keys by kid, with no I/O: the cached set's, or the last set's while a
        failed fetch is not to be retried; None when a fetch is due."""
        cache = self._client.jwk_set_cache
        jwk_set = cache.get() if cache is not None else None
        if jwk_set is None:
            if time.monotonic() < self._failed_until and self._indexed[0] is not None:
                return self._indexed[1]
            return None
        indexed_set, by_kid = self._indexed
        if indexed_set is not jwk_set:
            by_kid = {
                k.key_id: k
                for k in jwk_set.keys
                if k.key_id
                and k.public_key_use in ("sig", None)
                and k.algorithm_name in JWKS_ALGORITHMS
            }
            self._indexed = (jwk_set, by_kid)
        return by_kid

    def holds(self, kid: str | None) -> bool:
        """Whether the current keys still hold ``kid`` (a remembered token stays valid)."""
        keys = self._keys()
        return keys is not None and kid is not None and kid in keys

    async def _fetch(self, call: Callable[[], Any]) -> bool:
        """Run a PyJWKClient call that may fetch, in a thread; False when the fetch failed
        (then the last set serves for ``retry_seconds``)."""
        try:
            await asyncio.to_thread(call)
        except jwt.PyJWKClientConnectionError:
            log.warning("jwks.fetch_failed", retry_in_seconds=self._retry_seconds)
            self._failed_until = time.monotonic() + self._retry_seconds
            return False
        return True

    async def key_for(self, header: dict[str, Any]) -> VerificationKey:
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise KeyNotFound("token header has no kid")
        keys = self._keys()
        jwk = keys.get(kid) if keys is not None else None
        if jwk is None:
            if time.monotonic() < self._failed_until:
                # A fetch failed lately: no other is tried yet.
                if keys is None:
                    raise KeyNotFound("signing keys unavailable")
                raise KeyNotFound(f"no signing key with kid {_shown(kid)}")
            # An expired set or an unknown kid: PyJWKClient fetches (an unknown kid at most
            # once per cooldown), in a thread so the event loop keeps serving.
            found: list[PyJWK] = []
            try:
                fetched = await self._fetch(lambda: found.append(self._client.get_signing_key(kid)))
            except (jwt.PyJWTError, ValueError):
                raise KeyNotFound(f"no signing key with kid {_shown(kid)}") from None
            # The provider is down: the last set fetched serves the kids it held.
            jwk = found[0] if fetched else self._indexed[1].get(kid)
            if jwk is None:
                raise KeyNotFound("signing keys unavailable")
        if jwk.algorithm_name not in JWKS_ALGORITHMS:
            raise KeyNotFound(f"no signing key with kid {_shown(kid)}")
        return VerificationKey(jwk, [jwk.algorithm_name])

    async def usable(self) -> bool:
        """Whether keys are at hand, fetching a set if none is (unless a fetch failed lately)."""
        if self._keys():
            return True
        if time.monotonic() < self._failed_until:
            return False
        try:
            await self._fetch(self._client.get_signing_keys)
        except (jwt.PyJWTError, ValueError):
            return False
        return bool(self._keys())


def _shown(kid: str) -> str:
    """The kid as a 401 may echo it: a caller's text, so short and printable only."""
    return kid if len(kid) <= MAX_SHOWN_KID and kid.isprintable() else "(not shown)"


KeySource = StaticKey | JwksKeys
