"""Settings: environment variables with the ``CAREFLOW_`` prefix, also read from ``.env``."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DEV_JWT_SECRET = "careflow-development-secret-change-me"
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

    jwt_secret: str = DEV_JWT_SECRET
    jwt_public_key: str | None = None
    jwt_audience: str | None = None

    smtp_url: str | None = None
    smtp_timeout_seconds: float = 10.0
    email_from: str = "no-reply@careflow.local"

    sms_provider: Literal["log", "twilio"] = "log"
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_from: str | None = None
    twilio_base_url: str = "https://api.twilio.com"

    # SMS quiet hours in the patient's time zone; organisations may override them.
    quiet_hours_start: int = 21
    quiet_hours_end: int = 8
    sms_hourly_limit: int = 1000

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
    # `careflow worker` serves its own /metrics on this port when set (per-process exposition).
    worker_metrics_port: int | None = None

    max_body_bytes: int = 1_048_576
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

    @field_validator("database_pooler", "database_listen_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object, info: ValidationInfo) -> object:
        # An exported but empty variable (VAR= in an env file) means "not set".
        if value == "":
            return "none" if info.field_name == "database_pooler" else None
        return value

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
        return self.jwt_secret == DEV_JWT_SECRET and self.jwt_public_key is None

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
