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
