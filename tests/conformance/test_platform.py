"""Platform endpoints of SPEC §11: health, readiness, metrics, the API docs, request ids."""

from __future__ import annotations

import pytest

from tests.conformance.envelopes import body
from tests.conformance.server import Api

PLATFORM_PATHS = ("/healthz", "/readyz", "/metrics")


@pytest.mark.parametrize("path", PLATFORM_PATHS)
def test_platform_path_answers_200_without_token(api: Api, path: str) -> None:
    r = api("GET", path, role=None)
    assert r.status_code == 200, r.status_code


@pytest.mark.parametrize("path", PLATFORM_PATHS)
def test_platform_path_carries_request_id(api: Api, path: str) -> None:
    r = api("GET", path, role=None)
    assert r.headers.get("x-request-id")


@pytest.mark.parametrize("family", ["events", "executions", "queue", "lag", "http"])
def test_metrics_mention_family(api: Api, family: str) -> None:
    r = api("GET", "/metrics", role=None)
    assert family in r.text.lower()


def test_docs_are_html(api: Api) -> None:
    r = api("GET", "/docs", role=None)
    assert r.status_code == 200 and "html" in r.headers.get("content-type", "")


def test_openapi_json_answers(api: Api) -> None:
    r = api("GET", "/openapi.json", role=None)
    assert r.status_code == 200 and "paths" in (body(r) or {})


@pytest.mark.parametrize(
    "path",
    [
        "/v1/automations/rules",
        "/v1/automations/rules/{id}/test",
        "/v1/automations/executions",
        "/v1/pathway-rules",
        "/v1/pathway-rules/resolve",
    ],
)
def test_openapi_lists_path(api: Api, path: str) -> None:
    spec = body(api("GET", "/openapi.json", role=None)) or {}
    assert path in spec.get("paths", {}), list(spec.get("paths", {}))


def test_request_id_is_echoed(api: Api) -> None:
    r = api("GET", "/v1/automations/triggers", headers={"X-Request-ID": "probe-123"})
    assert r.headers.get("x-request-id") == "probe-123"


def test_request_id_is_echoed_on_an_error(api: Api) -> None:
    r = api("GET", "/v1/automations/rules", role=None, headers={"X-Request-ID": "rid-err"})
    assert r.headers.get("x-request-id") == "rid-err"
