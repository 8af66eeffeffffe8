from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.audit.models import AuditEntry
from careflow.db import create_sessionmaker
from careflow.errors import IdempotencyKeyInUseError, IdempotencyKeyReusedError
from careflow.kit.clock import FrozenClock
from careflow.kit.idempotency import (
    COMPLETED,
    IN_FLIGHT,
    Claim,
    Replay,
    begin,
    complete,
    fingerprint,
    purge_expired,
    release,
)
from careflow.kit.models import IdempotencyKey
from careflow.pathways.models import PathwayRule
from tests.conftest import T0
from tests.fixtures.assertions import assert_pathway_error
from tests.fixtures.factories import PATHWAY_RULES, Auth, pathway_rule_body

ENDPOINT = "pathway-rules.create"


async def count(engine: AsyncEngine, model: type[Any]) -> int:
    async with create_sessionmaker(engine)() as s:
        return await s.scalar(select(func.count()).select_from(model)) or 0


async def keys(engine: AsyncEngine) -> list[IdempotencyKey]:
    async with create_sessionmaker(engine)() as s:
        return list((await s.scalars(select(IdempotencyKey))).all())


async def insert_key(engine: AsyncEngine, **values: Any) -> None:
    row: dict[str, Any] = {
        "organization_id": 1,
        "endpoint": ENDPOINT,
        "key": "k1",
        "fingerprint": fingerprint(pathway_rule_body()),
        "status": IN_FLIGHT,
        "response_body": None,
        "created_at": T0,
        "expires_at": T0 + timedelta(minutes=5),
    }
    row.update(values)
    async with create_sessionmaker(engine)() as s:
        s.add(IdempotencyKey(**row))
        await s.commit()


def post(
    client: httpx.AsyncClient, auth: Auth, key: str | None, body: Any = None, **kw: Any
) -> Any:
    headers = {**auth(kw.pop("role", "admin"), org=kw.pop("org", 1))}
    if key is not None:
        headers["Idempotency-Key"] = key
    body = pathway_rule_body() if body is None else body
    return client.post(PATHWAY_RULES, json=body, headers=headers)


class TestFingerprint:
    def test_canonical_json(self) -> None:
        assert fingerprint({"a": 1, "b": [1, {"c": 2, "d": 3}]}) == fingerprint(
            {"b": [1, {"d": 3, "c": 2}], "a": 1}
        )
        assert fingerprint({"a": 1}) != fingerprint({"a": 2})
        assert fingerprint([1, 2]) != fingerprint([2, 1])
        assert len(fingerprint({})) == 64


class TestIdempotentCreate:
    async def test_same_key_same_body_replays_the_first_response(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        first = await post(client, auth, "k1")
        assert first.status_code == 201
        assert "idempotent-replayed" not in first.headers
        again = await post(client, auth, "k1")
        assert again.status_code == 201
        assert again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"
        # Same JSON, other key order and spacing: still the same request.
        reordered = json.dumps(dict(reversed(list(pathway_rule_body().items()))), indent=2)
        third = await client.post(
            PATHWAY_RULES,
            content=reordered,
            headers={**auth(), "Idempotency-Key": "k1", "Content-Type": "application/json"},
        )
        assert third.json() == first.json()
        assert third.headers["idempotent-replayed"] == "true"
        assert await count(engine, PathwayRule) == 1
        assert await count(engine, AuditEntry) == 1
        [stored] = await keys(engine)
        assert (stored.status, stored.response_status, stored.expires_at) == (
            COMPLETED,
            201,
            T0 + timedelta(hours=24),
        )

    async def test_same_key_other_body_is_422(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        assert (await post(client, auth, "k1")).status_code == 201
        r = await post(client, auth, "k1", pathway_rule_body(priority=1))
        assert_pathway_error(r, 422, "IDEMPOTENCY_KEY_REUSED")
        assert await count(engine, PathwayRule) == 1

    async def test_same_key_in_flight_is_409(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        await insert_key(engine)
        r = await post(client, auth, "k1")
        assert_pathway_error(r, 409, "IDEMPOTENCY_KEY_IN_USE")
        assert await count(engine, PathwayRule) == 0
        # A different body under a key in flight is still a misuse of the key.
        r = await post(client, auth, "k1", pathway_rule_body(priority=3))
        assert_pathway_error(r, 422, "IDEMPOTENCY_KEY_REUSED")

    async def test_expired_key_is_treated_as_new(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        engine: AsyncEngine,
        clock: FrozenClock,
    ) -> None:
        first = await post(client, auth, "k1")
        assert first.status_code == 201
        clock.advance(hours=25)
        # A different body is no longer a conflict: the old key is gone.
        r = await post(client, auth, "k1", pathway_rule_body(priority=1))
        assert r.status_code == 201, r.text
        assert "idempotent-replayed" not in r.headers
        assert r.json()["data"]["id"] != first.json()["data"]["id"]
        [stored] = await keys(engine)
        assert stored.fingerprint == fingerprint(pathway_rule_body(priority=1))
        assert stored.created_at == T0 + timedelta(hours=25)

    async def test_a_stale_in_flight_claim_is_taken_over(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine, clock: FrozenClock
    ) -> None:
        # Its holder died without finishing: the lease ran out.
        await insert_key(engine)
        clock.advance(minutes=6)
        r = await post(client, auth, "k1")
        assert r.status_code == 201, r.text
        assert (await keys(engine))[0].status == COMPLETED

    async def test_failed_work_releases_the_key(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        blocker = await post(client, auth, None)
        assert blocker.status_code == 201
        r = await post(client, auth, "k1")
        assert_pathway_error(r, 409, "CONFLICT")
        assert await keys(engine) == []
        # The failure was not stored: once the cause is gone, the same retry succeeds.
        await client.delete(f"{PATHWAY_RULES}/{blocker.json()['data']['id']}", headers=auth())
        r = await post(client, auth, "k1")
        assert r.status_code == 201, r.text
        assert "idempotent-replayed" not in r.headers

    async def test_keys_are_scoped_to_the_organisation(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        one = await post(client, auth, "k1")
        two = await post(client, auth, "k1", org=2)
        assert (one.status_code, two.status_code) == (201, 201)
        assert "idempotent-replayed" not in two.headers
        assert one.json()["data"]["id"] != two.json()["data"]["id"]
        assert await count(engine, IdempotencyKey) == 2

    async def test_a_key_is_the_organisations_across_endpoints(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        assert (await post(client, auth, "k1")).status_code == 201
        automation = {
            "name": "Welcome",
            "trigger_event": "patient.onboarded",
            "actions": [{"type": "send_email", "template": "welcome_patient"}],
        }
        r = await client.post(
            "/v1/automations/rules",
            json=automation,
            headers={**auth(), "Idempotency-Key": "k1"},
        )
        assert r.status_code == 422
        assert r.json()["error"]["code"] == "idempotency_key_reused"
        event = {"type": "patient.onboarded", "data": {"patient": {"id": 100}}}
        r = await client.post(
            "/v1/events", json=event, headers={**auth("service"), "Idempotency-Key": "k1"}
        )
        assert (r.status_code, r.json()["error"]["code"]) == (422, "idempotency_key_reused")
        # Nothing was done or claimed for the refused requests; another org's k1 is its own.
        assert await count(engine, IdempotencyKey) == 1
        # And the other way round: keys first used on those endpoints bind the pathway one.
        r = await client.post(
            "/v1/automations/rules", json=automation, headers={**auth(), "Idempotency-Key": "k2"}
        )
        assert r.status_code == 201, r.text
        r = await client.post(
            "/v1/events", json=event, headers={**auth("service"), "Idempotency-Key": "k3"}
        )
        assert r.status_code == 202, r.text
        for key in ("k2", "k3"):
            assert_pathway_error(
                await post(client, auth, key, pathway_rule_body(priority=5)),
                422,
                "IDEMPOTENCY_KEY_REUSED",
            )
        r = await client.post(
            "/v1/automations/rules",
            json=automation,
            headers={**auth("admin", org=2), "Idempotency-Key": "k1"},
        )
        assert r.status_code == 201, r.text

    async def test_a_key_expired_on_another_endpoint_is_free(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine, clock: FrozenClock
    ) -> None:
        await insert_key(
            engine, endpoint="events.ingest", status=COMPLETED, expires_at=T0 - timedelta(1)
        )
        assert (await post(client, auth, "k1")).status_code == 201

    async def test_without_a_key_nothing_is_stored(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        assert (await post(client, auth, None)).status_code == 201
        assert await keys(engine) == []

    @pytest.mark.parametrize("key", ["", "   ", "k" * 256])
    async def test_malformed_key_is_400(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine, key: str
    ) -> None:
        r = await post(client, auth, key)
        assert_pathway_error(r, 400, "VALIDATION_ERROR")
        assert await count(engine, PathwayRule) == 0

    async def test_refused_requests_claim_nothing(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        assert_pathway_error(await post(client, auth, "k1", role="specialist"), 403, "FORBIDDEN")
        bad = await post(client, auth, "k1", pathway_rule_body(priority=-1))
        assert_pathway_error(bad, 400, "VALIDATION_ERROR")
        assert await keys(engine) == []

    async def test_concurrent_retries_do_the_work_once(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        results = await asyncio.gather(*(post(client, auth, "k1") for _ in range(3)))
        statuses = [r.status_code for r in results]
        assert statuses.count(201) >= 1
        assert set(statuses) <= {201, 409}
        for r in results:
            if r.status_code == 409:
                assert r.json()["error"]["code"] == "IDEMPOTENCY_KEY_IN_USE"
        assert await count(engine, PathwayRule) == 1


class TestIdempotencyFunctions:
    async def test_claim_complete_replay(self, engine: AsyncEngine) -> None:
        maker = create_sessionmaker(engine)
        args: dict[str, Any] = {
            "organization_id": 1,
            "endpoint": "events.create",
            "key": "abc",
            "body": {"x": 1},
            "now": T0,
        }
        claim = await begin(maker, **args)
        assert isinstance(claim, Claim)
        with pytest.raises(IdempotencyKeyInUseError):
            await begin(maker, **args)
        with pytest.raises(IdempotencyKeyReusedError):
            await begin(maker, **{**args, "body": {"x": 2}})
        async with maker() as s:
            await complete(s, claim, status_code=202, body={"data": {"id": 7}}, now=T0)
            await s.commit()
        replay = await begin(maker, **{**args, "now": T0 + timedelta(hours=23)})
        assert replay == Replay(202, {"data": {"id": 7}})
        response = replay.response()
        assert response.status_code == 202
        assert response.headers["idempotent-replayed"] == "true"
        # The key is the organisation's (SPEC §8): on another endpoint it names another
        # request, whatever the body; another organisation's same key is its own.
        with pytest.raises(IdempotencyKeyReusedError):
            await begin(maker, **{**args, "endpoint": "automations.create", "now": T0})
        with pytest.raises(IdempotencyKeyReusedError):
            await begin(maker, **{**args, "endpoint": "automations.create", "body": {"y": 1}})
        assert isinstance(await begin(maker, **{**args, "organization_id": 2}), Claim)

    async def test_first_uses_on_two_endpoints_at_once_hold_the_key_once(
        self, engine: AsyncEngine
    ) -> None:
        maker = create_sessionmaker(engine)
        args: dict[str, Any] = {"organization_id": 1, "key": "k", "body": {}, "now": T0}
        outcomes = await asyncio.gather(
            *(begin(maker, **args, endpoint=name) for name in ("a", "b", "a", "b")),
            return_exceptions=True,
        )
        claims = [o for o in outcomes if isinstance(o, Claim)]
        assert len(claims) == 1
        refused = [o for o in outcomes if not isinstance(o, Claim)]
        assert all(
            isinstance(o, IdempotencyKeyReusedError | IdempotencyKeyInUseError) for o in refused
        )
        async with maker() as s:
            assert await s.scalar(select(func.count()).select_from(IdempotencyKey)) == 1

    async def test_uncommitted_completion_leaves_the_key_in_flight(
        self, engine: AsyncEngine
    ) -> None:
        maker = create_sessionmaker(engine)
        args: dict[str, Any] = {
            "organization_id": 1,
            "endpoint": "e",
            "key": "k",
            "body": {},
            "now": T0,
        }
        claim = await begin(maker, **args)
        assert isinstance(claim, Claim)
        async with maker() as s:
            await complete(s, claim, status_code=201, body={}, now=T0)
            await s.rollback()  # the work failed to commit: nothing is replayable
        with pytest.raises(IdempotencyKeyInUseError):
            await begin(maker, **args)
        await release(maker, claim)
        assert isinstance(await begin(maker, **args), Claim)

    async def test_a_lost_lease_refuses_to_complete(self, engine: AsyncEngine) -> None:
        maker = create_sessionmaker(engine)
        args: dict[str, Any] = {
            "organization_id": 1,
            "endpoint": "e",
            "key": "k",
            "body": {},
            "now": T0,
        }
        stale = await begin(maker, **args)
        later = T0 + timedelta(minutes=10)
        taker = await begin(maker, **{**args, "now": later})
        assert isinstance(stale, Claim) and isinstance(taker, Claim)
        async with maker() as s:
            with pytest.raises(IdempotencyKeyInUseError):
                await complete(s, stale, status_code=201, body={}, now=later)

    async def test_purge_expired(self, engine: AsyncEngine) -> None:
        await insert_key(engine, key="old", expires_at=T0 - timedelta(seconds=1))
        await insert_key(engine, key="live", expires_at=T0 + timedelta(hours=1))
        async with create_sessionmaker(engine)() as s:
            assert await purge_expired(s, T0) == 1
            await s.commit()
        assert [k.key for k in await keys(engine)] == ["live"]
