"""Delivery: email (SMTP or log) and SMS (Twilio or log) transports.

Modules: ``email``, ``sms``, ``transports`` (choosing them from settings) and ``errors``.
What a message says is rendered before it gets here (``careflow.templates``).
"""
