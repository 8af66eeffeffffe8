"""Rate limits as token buckets held in the database, so every worker shares them.

``service`` is the interface: ``admit`` takes tokens for a batch of action steps and says
which must wait, ``provider_refused`` empties a provider's bucket when the provider itself
refused for rate. ``repository`` holds the one statement each of them runs.
"""
