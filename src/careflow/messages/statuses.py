"""A message's statuses, and how an SMS moves through them as its provider reports.

careflow's own: ``sent`` (an email handed to the SMTP server), ``retrying`` (a transient
failure, tried again), ``failed`` (careflow gave up, or the provider refused it). An SMS the
provider accepted is ``queued``; its status callbacks move it on to ``sent`` and then to
one of ``delivered``, ``undelivered`` or ``failed``. It never moves back: callbacks may
arrive out of order, and a late ``sent`` after ``delivered`` changes nothing but the time
of the ``sent`` step, if it was not known yet.
"""

from __future__ import annotations


class MessageStatus:
    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    RETRYING = "retrying"


#: Every status a message can have (the API document's enum).
MESSAGE_STATUSES = ("queued", "sent", "delivered", "undelivered", "failed", "retrying")


# Twilio's message statuses, in careflow's steps. Twilio's own steps between two of careflow's
# (``accepted``, ``sending``…) are the earlier one; ``read`` (a channel that reports it) is
# delivered; ``canceled`` (a scheduled message called off) failed.
TWILIO_STATUSES = {
    "accepted": MessageStatus.QUEUED,
    "scheduled": MessageStatus.QUEUED,
    "queued": MessageStatus.QUEUED,
    "sending": MessageStatus.QUEUED,
    "sent": MessageStatus.SENT,
    "delivered": MessageStatus.DELIVERED,
    "read": MessageStatus.DELIVERED,
    "undelivered": MessageStatus.UNDELIVERED,
    "failed": MessageStatus.FAILED,
    "canceled": MessageStatus.FAILED,
}

# How far along delivery each step is: a status only ever moves to a higher rank.
RANK = {
    MessageStatus.QUEUED: 1,
    MessageStatus.SENT: 2,
    MessageStatus.DELIVERED: 3,
    MessageStatus.UNDELIVERED: 3,
    MessageStatus.FAILED: 3,
}

# The column that records when each step happened.
STEP_TIME = {
    MessageStatus.QUEUED: "queued_at",
    MessageStatus.SENT: "sent_at",
    MessageStatus.DELIVERED: "delivered_at",
    MessageStatus.UNDELIVERED: "failed_at",
    MessageStatus.FAILED: "failed_at",
}
