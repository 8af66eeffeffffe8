from __future__ import annotations

from datetime import UTC, datetime

import pytest

from careflow.actions.quiet_hours import is_quiet, next_allowed_time


def utc(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


class TestIsQuiet:
    @pytest.mark.parametrize(
        ("hour", "quiet"), [(20, False), (21, True), (23, True), (0, True), (7, True), (8, False)]
    )
    def test_window_spanning_midnight(self, hour: int, quiet: bool) -> None:
        assert is_quiet(hour, 21, 8) is quiet

    @pytest.mark.parametrize(("hour", "quiet"), [(8, False), (9, True), (16, True), (17, False)])
    def test_window_within_a_day(self, hour: int, quiet: bool) -> None:
        assert is_quiet(hour, 9, 17) is quiet

    def test_an_empty_window_is_never_quiet(self) -> None:
        assert not any(is_quiet(h, 22, 22) for h in range(24))


class TestNextAllowedTimeLondon:
    def test_allowed_during_the_day(self) -> None:
        assert next_allowed_time(utc(2025, 2, 15, 10, 0), "Europe/London", 21, 8) is None

    def test_evening_in_winter_resumes_at_eight_gmt_next_day(self) -> None:
        assert next_allowed_time(utc(2025, 1, 15, 22, 30), "Europe/London", 21, 8) == utc(
            2025, 1, 16, 8, 0
        )

    def test_evening_in_summer_resumes_at_eight_bst(self) -> None:
        # 21:30 UTC is 22:30 BST; 08:00 BST is 07:00 UTC.
        assert next_allowed_time(utc(2025, 7, 1, 21, 30), "Europe/London", 21, 8) == utc(
            2025, 7, 2, 7, 0
        )

    def test_after_midnight_resumes_the_same_local_day(self) -> None:
        assert next_allowed_time(utc(2025, 1, 16, 0, 30), "Europe/London", 21, 8) == utc(
            2025, 1, 16, 8, 0
        )

    def test_quiet_hour_in_local_time_is_not_quiet_in_utc(self) -> None:
        # The window is read on the patient's clock: 06:30 UTC is 07:30 BST, still quiet.
        assert next_allowed_time(utc(2025, 7, 1, 6, 30), "Europe/London", 21, 8) == utc(
            2025, 7, 1, 7, 0
        )
        assert next_allowed_time(utc(2025, 7, 1, 7, 0), "Europe/London", 21, 8) is None

    def test_night_of_the_spring_forward(self) -> None:
        # Clocks go forward at 01:00 UTC on 30 March 2025: the night starts in GMT and
        # ends in BST, so the resume is 07:00 UTC, not 08:00.
        assert next_allowed_time(utc(2025, 3, 29, 22, 0), "Europe/London", 21, 8) == utc(
            2025, 3, 30, 7, 0
        )


class TestNextAllowedTimeNewYork:
    def test_morning_utc_is_night_in_new_york(self) -> None:
        # 10:00 UTC is 05:00 EST.
        assert next_allowed_time(utc(2025, 2, 15, 10, 0), "America/New_York", 21, 8) == utc(
            2025, 2, 15, 13, 0
        )

    def test_window_starts_at_nine_local(self) -> None:
        assert next_allowed_time(utc(2025, 2, 16, 1, 59), "America/New_York", 21, 8) is None
        # 02:00 UTC on the 16th is 21:00 EST on the 15th: quiet until 08:00 EST on the 16th.
        assert next_allowed_time(utc(2025, 2, 16, 2, 0), "America/New_York", 21, 8) == utc(
            2025, 2, 16, 13, 0
        )

    def test_night_of_the_spring_forward(self) -> None:
        # 22:00 EST on 8 March; clocks go forward that night, so 08:00 EDT is 12:00 UTC.
        assert next_allowed_time(utc(2025, 3, 9, 3, 0), "America/New_York", 21, 8) == utc(
            2025, 3, 9, 12, 0
        )

    def test_night_of_the_fall_back(self) -> None:
        # 21:00 EDT on 1 November; clocks go back that night, so 08:00 EST is 13:00 UTC.
        assert next_allowed_time(utc(2025, 11, 2, 1, 0), "America/New_York", 21, 8) == utc(
            2025, 11, 2, 13, 0
        )

    def test_end_hour_inside_the_spring_forward_gap(self) -> None:
        # 02:00 does not exist on 9 March 2025 in New York; the first instant after the
        # gap (03:00 EDT, 07:00 UTC) is when sending may resume.
        assert next_allowed_time(utc(2025, 3, 9, 6, 30), "America/New_York", 22, 2) == utc(
            2025, 3, 9, 7, 0
        )


class TestNextAllowedTimeEdges:
    @pytest.mark.parametrize("tz", [None, "", "Mars/Olympus_Mons", "../etc/passwd", 5])
    def test_missing_or_invalid_zone_is_utc(self, tz: object) -> None:
        assert next_allowed_time(utc(2025, 2, 15, 22, 0), tz, 21, 8) == utc(  # type: ignore[arg-type]
            2025, 2, 16, 8, 0
        )

    def test_window_within_a_day_resumes_at_its_end(self) -> None:
        assert next_allowed_time(utc(2025, 2, 15, 10, 0), "UTC", 9, 17) == utc(2025, 2, 15, 17, 0)

    def test_empty_window_never_defers(self) -> None:
        assert next_allowed_time(utc(2025, 2, 15, 3, 0), "UTC", 0, 0) is None

    def test_hours_outside_a_day_are_refused(self) -> None:
        with pytest.raises(ValueError):
            next_allowed_time(utc(2025, 2, 15, 3, 0), "UTC", 21, 24)
