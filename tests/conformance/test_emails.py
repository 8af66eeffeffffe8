"""Emails as the SMTP server received them (SPEC §6): they arrive, each with its own
Message-ID, and one per (rule, patient).
"""

from __future__ import annotations

from tests.conformance.server import RefusingSink
from tests.conformance.world import WorkerResults


def test_emails_arrived_at_the_smtp_server(
    worker_results: WorkerResults, smtp_sink: RefusingSink
) -> None:
    assert worker_results.mail_arrived, [m.message.get("To") for m in smtp_sink.messages]


def test_emails_have_distinct_message_ids(
    worker_results: WorkerResults, smtp_sink: RefusingSink
) -> None:
    mids = smtp_sink.message_ids()
    assert len(mids) >= 2 and len(set(mids)) == len(mids) and None not in mids, mids


def test_one_email_per_rule_and_patient(
    worker_results: WorkerResults, smtp_sink: RefusingSink
) -> None:
    assert smtp_sink.count_to("ada@example.com") == 1, smtp_sink.count_to("ada@example.com")
