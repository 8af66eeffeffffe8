"""The kinds of the fields careflow reads (``entities.validation.field_problems``)."""

from __future__ import annotations

from typing import Any

import pytest

from careflow.entities.validation import field_problems


@pytest.mark.parametrize(
    "email",
    [
        "ada@example.com",
        "o'neil+tag@ex-ample.co.uk",
        "a@b.c",
        '"ada lovelace"@example.com',
        "ada@[192.0.2.1]",
    ],
)
def test_one_address_is_accepted(email: str) -> None:
    assert field_problems("patient", {"email": email}, "") == []


@pytest.mark.parametrize(
    "email",
    [
        "ada",
        "ada@",
        "@example.com",
        "a@@example.com",
        "a..b@example.com",
        "ada lovelace@example.com",
        "ada@example.com, bob@example.com",
        "Ada <ada@example.com>",
        "ada@example.com\n",
        "",
    ],
)
def test_anything_but_one_address_is_refused(email: str) -> None:
    assert field_problems("patient", {"email": email}, "data.patient.") == [
        {
            "field": "data.patient.email",
            "message": "must be one email address, e.g. ada@example.com",
        }
    ]


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"timezone": "Europe/London", "phone": "+447700900123", "sms_opt_out": False}, []),
        ({"timezone": "europe/london"}, ["timezone"]),
        ({"timezone": ""}, ["timezone"]),
        ({"phone": 7700900123, "email_opt_out": None}, ["phone"]),
        ({"email_opt_out": "true", "sms_opt_out": True}, ["email_opt_out"]),
        ({"first_name": 5, "tags": "vip"}, ["first_name"]),  # tags: not read, stored as sent
    ],
)
def test_patient_fields(fields: dict[str, Any], bad: list[str]) -> None:
    assert [p["field"] for p in field_problems("patient", fields, "")] == bad


def test_other_entities_are_not_checked_for_patient_fields() -> None:
    assert field_problems("invoice", {"email": 5, "timezone": "x"}, "") == []


@pytest.mark.parametrize(
    ("entity_type", "fields", "bad"),
    [
        ("appointment", {"type": 3, "status": "booked"}, ["type"]),
        ("invoice", {"amount": "120", "type": "consultation"}, ["amount"]),
        ("invoice", {"amount": True}, ["amount"]),
        ("invoice", {"amount": 120.5, "status": None}, []),
        ("form", {"form_template_id": "42"}, ["form_template_id"]),
        ("form", {"form_template_id": 42}, []),
    ],
)
def test_the_other_fields_the_document_types(
    entity_type: str, fields: dict[str, Any], bad: list[str]
) -> None:
    problems = field_problems(entity_type, fields, "")
    assert [p["field"] for p in problems] == bad
