"""Settings: environment variables with the ``CAREFLOW_`` prefix, also read from ``.env``."""

from __future__ import annotations

import re
from email.utils import parseaddr
from functools import lru_cache
from typing import Literal

import phonenumbers
from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DEV_JWT_SECRET = "careflow-development-secret-change-me"
# A URL that goes into a header as it is: printable ASCII, no space.
_PRINTABLE_URL = re.compile(r"[!-~]+")
_POSTGRESQL_SCHEMES = ("postgresql://", "postgresql+asyncpg://", "postgres://")
# careflow runs on asyncio: the async driver of each database it supports.
_DATABASE_DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAREFLOW_", env_file=".env", extra="ignore")

    env: Literal["development", "test", "production"] = "development"
    database_url: str = "sqlite+aiosqlite:///./careflow.db"
    # What sits between careflow and PostgreSQL. "none": careflow talks to PostgreSQL itself
    # (prepared statements cached per connection, session settings at connect). "transaction"
    # (or "pgbouncer", its most common instance): a pooler in transaction mode, which hands
    # each transaction whatever server connection is free, so nothing may outlive one:
    # no cached prepared statements, no startup parameters but application_name, LISTEN
    # only on ``database_listen_url``.
    database_pooler: Literal["none", "transaction", "pgbouncer"] = "none"
    # A direct connection to PostgreSQL (not through the pooler) for the workers' LISTEN.
    # Unset behind a pooler: workers poll alone (``job_poll_interval_seconds``).
    database_listen_url: str | None = None

    # Tokens are verified with one of: the HMAC secret (HS256), a PEM public key (RS256 or
    # ES256), or an identity provider's JWKS (keys selected by the token's kid).
    jwt_secret: str = DEV_JWT_SECRET
    jwt_public_key: str | None = None
    jwt_jwks_url: str | None = None
    # A forced JWKS fetch for an unknown kid happens at most once per this many seconds.
    jwt_jwks_cooldown_seconds: float = Field(default=30.0, ge=0, le=3600)
    jwt_audience: str | None = None
    # When set, `iss` is required and must equal it.
    jwt_issuer: str | None = None
    # Clock skew tolerated on exp, nbf and iat.
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=300)
    # The claims holding the organisation and the role (providers namespace custom claims,
    # e.g. https://example.com/org_id).
    jwt_org_claim: str = Field(default="org_id", min_length=1)
    jwt_role_claim: str = Field(default="role", min_length=1)

    smtp_url: str | None = None
    smtp_timeout_seconds: float = 10.0
    email_from: str = "no-reply@careflow.local"
    # Where replies to careflow's emails go (``Reply-To``); unset: no Reply-To header.
    email_reply_to: str | None = None
    # The right-hand side of every Message-ID; unset: the domain of ``email_from``.
    message_id_domain: str | None = None
    # careflow's address as patients' mail clients and the SMS provider reach it, without a
    # trailing slash (``https://careflow.example.com``): the base of unsubscribe links and of
    # the SMS status callbacks. Unset: emails carry no List-Unsubscribe header and no SMS
    # asks for delivery status.
    public_url: str | None = None

    sms_provider: Literal["log", "twilio"] = "log"
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_from: str | None = None
    twilio_base_url: str = "https://api.twilio.com"
    # Where phone numbers written without a country code are read from (ISO 3166 alpha-2);
    # organisations may override it.
    default_region: str = "GB"

    # SMS quiet hours in the patient's time zone; organisations may override them.
    quiet_hours_start: int = 21
    quiet_hours_end: int = 8
    sms_hourly_limit: int = 1000

    # Provider rate limits, shared by every worker through token buckets in the database
    # (``ratelimits/``): SMS a second per sending number, emails a second per SMTP relay.
    # Unset (the default): no limit, and no database work for one.
    sms_per_second: float | None = Field(default=None, gt=0, le=1_000_000)
    email_per_second: float | None = Field(default=None, gt=0, le=1_000_000)
    # How long careflow leaves a provider alone after it refused for rate (Twilio's HTTP 429
    # without a Retry-After, SMTP 421 or 451) before trying again.
    provider_backoff_seconds: float = Field(default=5.0, gt=0, le=3600)
    # How often a worker re-reads the organisations' ``actions_per_second`` (0: every batch).
    rate_limit_refresh_seconds: float = Field(default=5.0, ge=0, le=300)

    # Job queue
    job_lease_seconds: float = 30.0
    job_poll_interval_seconds: float = 1.0
    job_max_attempts: int = 5
    job_backoff_base_seconds: float = 2.0
    worker_concurrency: int = 8
    # Jobs of batchable kinds that share one transaction. 50, not 10: once a batch's writes
    # go as one statement per table, its fixed cost (claim, reads, flush, commit) is most of
    # what is left, and 50 drained ~30 % more executions a second (docs/benchmarks.md).
    worker_batch_size: int = Field(default=50, ge=1, le=100)
    # Organisations with a series of their own in the per-organisation queue gauges (the
    # most due jobs first); the rest share one `other` series (docs/operations.md).
    metrics_top_organizations: int = Field(default=10, ge=0, le=100)
    # `careflow worker` serves its own /metrics on this port when set (per-process exposition).
    worker_metrics_port: int | None = None

    max_body_bytes: int = 1_048_576
    # OpenTelemetry traces: "none" (nothing of OpenTelemetry is loaded) or "otlp" (exported
    # over OTLP/HTTP as the standard OTEL_EXPORTER_OTLP_* variables say; careflow[tracing]).
    tracing: Literal["none", "otlp"] = "none"
    log_level: str = "INFO"
    log_json: bool = True

    @field_validator("database_url")
    @classmethod
    def _supported_database_url(cls, value: str) -> str:
        try:
            driver = make_url(value).drivername
        except (ArgumentError, ValueError):  # not a URL; a port that is not a number
            driver = None
        if driver not in _DATABASE_DRIVERS:
            raise ValueError("must be a sqlite+aiosqlite:// or postgresql+asyncpg:// URL")
        return value

    @field_validator(
        "database_pooler",
        "database_listen_url",
        "email_reply_to",
        "message_id_domain",
        "public_url",
        "tracing",
        "sms_per_second",
        "email_per_second",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object, info: ValidationInfo) -> object:
        # An exported but empty variable (VAR= in an env file) means "not set".
        if value == "":
            return "none" if info.field_name in ("database_pooler", "tracing") else None
        return value

    @field_validator("default_region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        region = value.upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(
                f"CAREFLOW_DEFAULT_REGION {value!r} is not a region phone numbers know"
            )
        return region

    @field_validator("jwt_public_key", "jwt_jwks_url", "jwt_audience", "jwt_issuer", mode="before")
    @classmethod
    def _empty_key_setting_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _one_key_source(self) -> Settings:
        if self.jwt_public_key is not None and self.jwt_jwks_url is not None:
            raise ValueError(
                "set one of CAREFLOW_JWT_PUBLIC_KEY and CAREFLOW_JWT_JWKS_URL, not both"
            )
        return self

    @model_validator(mode="after")
    def _refuse_nonsensical_database_settings(self) -> Settings:
        if self.behind_pooler and not self.is_postgresql:
            raise ValueError(
                "CAREFLOW_DATABASE_POOLER applies to PostgreSQL only: "
                "CAREFLOW_DATABASE_URL is not a postgresql+asyncpg URL"
            )
        listen = self.database_listen_url
        if listen is not None:
            if not self.is_postgresql:
                raise ValueError(
                    "CAREFLOW_DATABASE_LISTEN_URL applies to PostgreSQL only: "
                    "CAREFLOW_DATABASE_URL is not a postgresql+asyncpg URL"
                )
            if not listen.startswith(_POSTGRESQL_SCHEMES):
                raise ValueError(
                    "CAREFLOW_DATABASE_LISTEN_URL must be a postgresql:// or "
                    "postgresql+asyncpg:// URL"
                )
            if self.behind_pooler and listen == self.database_url:
                # LISTEN through a transaction pooler is lost with the transaction.
                raise ValueError(
                    "CAREFLOW_DATABASE_LISTEN_URL must reach PostgreSQL directly, "
                    "not through the pooler of CAREFLOW_DATABASE_URL"
                )
        return self

    @field_validator("public_url")
    @classmethod
    def _public_url_is_a_base(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.rstrip("/")
        if not value.startswith(("https://", "http://")) or not _PRINTABLE_URL.fullmatch(value):
            raise ValueError("CAREFLOW_PUBLIC_URL must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _refuse_dev_secret_in_production(self) -> Settings:
        if self.uses_development_secret and self.env == "production":
            raise ValueError(
                "CAREFLOW_JWT_SECRET must be set in production; the development secret is refused"
            )
        return self

    @property
    def uses_development_secret(self) -> bool:
        """Tokens are signed with the published development secret: fine for a demo, never
        for real data. ``careflow serve`` and ``careflow worker`` log a warning about it."""
        return (
            self.jwt_secret == DEV_JWT_SECRET
            and self.jwt_public_key is None
            and self.jwt_jwks_url is None
        )

    @property
    def email_domain(self) -> str:
        """The domain of careflow's Message-IDs: ``message_id_domain``, else the sender's."""
        if self.message_id_domain:
            return self.message_id_domain
        _, address = parseaddr(self.email_from)
        domain = address.rpartition("@")[2].strip().lower()
        return domain or "careflow.local"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def is_postgresql(self) -> bool:
        return self.database_url.startswith("postgresql")

    @property
    def behind_pooler(self) -> bool:
        """Whether a transaction-mode pooler stands between careflow and PostgreSQL."""
        return self.database_pooler != "none"


@lru_cache
def get_settings() -> Settings:
    return Settings()
