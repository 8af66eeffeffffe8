"""A 405 lists in ``Allow`` every method the path answers, not those of one route: careflow
has one route per method (``GET`` and ``POST /v1/automations/rules`` are two)."""

from __future__ import annotations

import re

import httpx
import pytest

ORDER = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


async def _paths(client: httpx.AsyncClient) -> dict[str, set[str]]:
    """Each documented path, made concrete, with the methods it documents."""
    document = (await client.get("/openapi.json")).json()
    return {
        re.sub(r"\{[^}]+\}", "1", template): {m.upper() for m in operations if m.upper() in ORDER}
        for template, operations in document["paths"].items()
    }


async def test_every_path_lists_all_its_methods(client: httpx.AsyncClient) -> None:
    """Without a token nothing runs: each method is answered 401 (or 200 on open paths) when
    the path has it, else 405 listing exactly the methods that were not 405."""
    paths = await _paths(client)
    assert len(paths) > 20
    refused = 0
    for path, documented in paths.items():
        statuses = {m: (await client.request(m, path)).status_code for m in ORDER}
        answered = [m for m in ORDER if statuses[m] != 405]
        assert documented <= set(answered), (path, statuses)
        for method in ORDER:
            if statuses[method] != 405:
                continue
            r = await client.request(method, path)
            assert r.headers["allow"] == ", ".join(answered), (method, path)
            if method != "HEAD":  # a HEAD answer has no body
                codes = ("method_not_allowed", "METHOD_NOT_ALLOWED")
                assert r.json()["error"]["code"] in codes
            refused += 1
    assert refused > 50


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("OPTIONS", "/v1/automations/rules", "GET, POST"),
        ("DELETE", "/v1/automations/rules", "GET, POST"),
        ("POST", "/v1/automations/rules/5", "GET, PUT, DELETE"),
        ("PUT", "/v1/pathway-rules/rule_1", "GET, PATCH, DELETE"),
        ("POST", "/openapi.json", "GET, HEAD"),
        ("DELETE", "/v1/events", "POST"),
        ("PUT", "/healthz", "GET, HEAD"),
    ],
)
async def test_examples(client: httpx.AsyncClient, method: str, path: str, allow: str) -> None:
    r = await client.request(method, path)
    assert r.status_code == 405, r.text
    assert r.headers["allow"] == allow
