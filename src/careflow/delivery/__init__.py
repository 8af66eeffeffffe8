"""Delivery: email (SMTP or log) and SMS (Twilio or log) transports, and templates.

Modules: ``templates`` (built-ins, overrides, sandboxed rendering), ``email``, ``sms``,
``transports`` (choosing them from settings) and ``errors``.
"""
