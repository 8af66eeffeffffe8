"""careflow behind a transaction-mode pooler (PgBouncer's ``pool_mode = transaction``).

Such a pooler hands each transaction whatever server connection is free, so nothing may
outlive a transaction: cached prepared statements, startup parameters, a LISTEN. The
settings that say a pooler is in front are checked here without a database; the run
through one needs the suite's database to be reached through a pooler
(``CAREFLOW_TEST_DATABASE_POOLER``, as ``.ci/run`` sets for its PgBouncer run).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from careflow.config import Settings
from careflow.db import postgresql_connect_args
from careflow.jobs.listener import listen_dsn
from tests.conftest import TEST_SECRET
from tests.fixtures.factories import PATIENT, create_rule, post_event
from tests.fixtures.smtp import SmtpServer
from tests.jobs.conftest import MakeWorker, all_jobs, eventually

Auth = Callable[..., dict[str, str]]
Maker = async_sessionmaker[AsyncSession]

POOLED = "postgresql+asyncpg://careflow@pgbouncer.example:6432/careflow"
DIRECT = "postgresql+asyncpg://careflow@db.example:5432/careflow"
EVENTS = 12


def settings_of(**values: Any) -> Settings:
    return Settings(_env_file=None, env="test", jwt_secret=TEST_SECRET, **values)  # type: ignore[call-arg]


class TestPoolerSettings:
    def test_behind_a_pooler_listen_goes_to_the_direct_url(self) -> None:
        settings = settings_of(
            database_url=POOLED, database_pooler="pgbouncer", database_listen_url=DIRECT
        )
        assert settings.behind_pooler
        assert listen_dsn(make_url(POOLED), settings) == (
            "postgresql://careflow@db.example:5432/careflow"
        )

    def test_behind_a_pooler_without_a_listen_url_workers_poll_alone(self) -> None:
        settings = settings_of(database_url=POOLED, database_pooler="transaction")
        assert listen_dsn(make_url(POOLED), settings) is None

    def test_without_a_pooler_listen_uses_the_database_itself(self) -> None:
        settings = settings_of(database_url=DIRECT)
        assert not settings.behind_pooler
        assert listen_dsn(make_url(DIRECT), settings) == (
            "postgresql://careflow@db.example:5432/careflow"
        )

    def test_sqlite_listens_nowhere(self) -> None:
        url = "sqlite+aiosqlite:///./careflow.db"
        assert listen_dsn(make_url(url), settings_of(database_url=url)) is None

    @pytest.mark.parametrize(
        ("values", "refusal"),
        [
            (
                {"database_url": "sqlite+aiosqlite:///./c.db", "database_pooler": "pgbouncer"},
                "PostgreSQL only",
            ),
            (
                {"database_url": "sqlite+aiosqlite:///./c.db", "database_listen_url": DIRECT},
                "PostgreSQL only",
            ),
            (
                {"database_url": DIRECT, "database_listen_url": "mysql://db.example/careflow"},
                "must be a postgresql:// or",
            ),
            (
                {
                    "database_url": POOLED,
                    "database_pooler": "transaction",
                    "database_listen_url": POOLED,
                },
                "not through the pooler",
            ),
            ({"database_url": POOLED, "database_pooler": "session"}, "database_pooler"),
        ],
    )
    def test_nonsensical_settings_are_refused(self, values: dict[str, Any], refusal: str) -> None:
        with pytest.raises(ValueError, match=refusal):
            settings_of(**values)

    def test_empty_variables_mean_unset(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("CAREFLOW_DATABASE_POOLER", "")
        monkeypatch.setenv("CAREFLOW_DATABASE_LISTEN_URL", "")
        settings = settings_of(database_url=DIRECT)
        assert not settings.behind_pooler and settings.database_listen_url is None

    def test_the_pooler_is_read_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("CAREFLOW_DATABASE_URL", POOLED)
        monkeypatch.setenv("CAREFLOW_DATABASE_POOLER", "pgbouncer")
        monkeypatch.setenv("CAREFLOW_DATABASE_LISTEN_URL", DIRECT)
        settings = settings_of()
        assert settings.behind_pooler and settings.database_listen_url == DIRECT


class TestConnectArguments:
    def test_direct_connections_cache_statements_and_bound_idle_transactions(self) -> None:
        args = postgresql_connect_args(behind_pooler=False)
        assert args["server_settings"]["idle_in_transaction_session_timeout"] == "120000"
        assert "statement_cache_size" not in args  # asyncpg's default cache stays on
        assert "prepared_statement_cache_size" not in args

    def test_pooled_connections_keep_nothing_beyond_a_transaction(self) -> None:
        args = postgresql_connect_args(behind_pooler=True)
        # application_name is the one startup parameter poolers pass on.
        assert args["server_settings"] == {"application_name": "careflow"}
        assert args["statement_cache_size"] == 0
        assert args["prepared_statement_cache_size"] == 0
        assert args["prepared_statement_name_func"]() == ""  # the unnamed statement


@pytest.fixture
def _through_a_pooler(settings: Settings) -> None:
    if not settings.behind_pooler:
        pytest.skip(
            "the test database is not behind a pooler: set CAREFLOW_TEST_DATABASE_POOLER "
            "(and CAREFLOW_TEST_DATABASE_LISTEN_URL) as .ci/run's PgBouncer run does"
        )


@pytest.mark.usefixtures("_through_a_pooler")
class TestThroughAPooler:
    async def test_ingestion_and_a_worker_drain_through_the_pooler(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        smtp: SmtpServer,
        settings: Settings,
        make_worker: MakeWorker,
        sessionmaker: Maker,
    ) -> None:
        await create_rule(client, auth)
        # At once: the API's pooled connections share the pooler's server connections, where
        # a statement prepared under a reused name would collide.
        await asyncio.gather(
            *(
                post_event(
                    client,
                    auth,
                    "patient.onboarded",
                    {"patient": {**PATIENT, "id": 3000 + i, "email": f"pooled{i}@example.com"}},
                )
                for i in range(EVENTS)
            )
        )

        worker = make_worker(job_poll_interval_seconds=0.1, smtp_url=smtp.url)
        await worker.start()

        async def drained() -> bool:
            return await all_jobs(sessionmaker) == []

        await eventually(drained, within=60, interval=0.1)
        assert sorted(r for m in smtp.sink.messages for r in m.rcpt_tos) == sorted(
            f"pooled{i}@example.com" for i in range(EVENTS)
        )
        if settings.database_listen_url is not None:
            await eventually(lambda: worker.listening)
        else:
            assert not worker.listening  # polling alone: no LISTEN through the pooler
