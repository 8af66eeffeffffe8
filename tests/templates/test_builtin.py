"""The built-in templates: each renders, with data and without."""

from __future__ import annotations

import pytest

from careflow.templates.builtin import BUILTIN_TEMPLATES
from careflow.templates.rendering import SAMPLE_CONTEXT, render

REQUIRED_KEYS = (
    "welcome_patient",
    "first_appointment_video_guide",
    "appointment_reminder",
    "form_reminder",
    "appointment_follow_up",
)


class TestBuiltins:
    @pytest.mark.parametrize("key", REQUIRED_KEYS)
    @pytest.mark.parametrize("channel", ["email", "sms"])
    def test_each_renders_with_and_without_data(self, key: str, channel: str) -> None:
        builtin = BUILTIN_TEMPLATES[(key, channel)]
        full = render(builtin, SAMPLE_CONTEXT)
        empty = render(builtin, {})
        assert full.body and empty.body
        assert "{{" not in full.body
        if channel == "email":
            assert full.subject and empty.subject
        else:
            assert full.subject is None

    def test_appointment_time_is_shown_in_the_patients_zone(self) -> None:
        context = {
            "patient": {"first_name": "Sam", "timezone": "America/New_York"},
            "appointment": {"starts_at": "2025-02-15T15:00:00Z"},
        }
        rendered = render(BUILTIN_TEMPLATES[("appointment_reminder", "sms")], context)
        assert "10:00 (America/New_York)" in rendered.body
