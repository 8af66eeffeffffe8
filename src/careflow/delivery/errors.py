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
