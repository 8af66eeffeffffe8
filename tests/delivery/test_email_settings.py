"""The settings behind an email's identity: the Message-ID domain and the public URL."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tests.conftest import make_settings

URL = "sqlite+aiosqlite://"


@pytest.mark.parametrize(
    ("overrides", "domain"),
    [
        ({}, "careflow.local"),
        ({"email_from": "Dr. Grey's Practice <Practice@Grey.Example.org>"}, "grey.example.org"),
        ({"email_from": "x@a.org", "message_id_domain": "mail.b.org"}, "mail.b.org"),
        ({"email_from": "x@a.org", "message_id_domain": ""}, "a.org"),
    ],
)
def test_the_message_id_domain(overrides: dict[str, str], domain: str) -> None:
    assert make_settings(URL, **overrides).email_domain == domain


def test_the_public_url_is_a_base_without_its_trailing_slash() -> None:
    assert make_settings(URL, public_url="https://c.example.org/").public_url == (
        "https://c.example.org"
    )
    assert make_settings(URL, public_url="").public_url is None


@pytest.mark.parametrize(
    "url", ["c.example.org", "ftp://c.example.org", "https://c.example.org/a b", "https://é.org"]
)
def test_a_public_url_that_cannot_go_into_a_header_is_refused(url: str) -> None:
    with pytest.raises(ValidationError):
        make_settings(URL, public_url=url)
