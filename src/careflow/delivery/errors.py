"""Delivery failures, split by what the caller should do next.

The action executor maps them onto the job runner's retry errors: a transient
failure is retried with backoff, a permanent one is recorded at once.
"""

from __future__ import annotations


class DeliveryError(Exception):
    """A message could not be handed to its provider.

    Messages never carry recipients or bodies: they end up in execution
    results, message rows and logs.
    """


class TransientDeliveryError(DeliveryError):
    """Worth retrying: the provider was unreachable, slow, or asked us to try later."""


class PermanentDeliveryError(DeliveryError):
    """Retrying will not help: the provider refused this message or recipient."""


class AmbiguousDeliveryError(TransientDeliveryError):
    """The request reached the provider, but careflow did not learn what became of it (no
    answer in time, the connection lost after the request went, a 5xx): the provider may
    have created the message. Before sending again, careflow looks for it there."""


class RateLimitedDeliveryError(TransientDeliveryError):
    """The provider refused the request for rate (Twilio's HTTP 429, an SMTP 421 or 451)
    without acting on it. ``retry_after`` is how many seconds it asked careflow to wait, when
    it said. careflow slows down rather than counting a failed try."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
