from __future__ import annotations

from careflow.actions.registry import EXECUTORS


class TestRegistry:
    def test_every_catalog_action_has_an_executor(self) -> None:
        assert set(EXECUTORS) == {"require_form", "send_email", "send_sms", "update_segment"}

    def test_executors_are_keyed_by_their_type(self) -> None:
        assert all(executor.type == key for key, executor in EXECUTORS.items())
