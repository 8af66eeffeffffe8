"""What providers send careflow: Twilio's signed status callbacks for the SMS it sent.

Modules: ``endpoints`` (``POST /v1/providers/twilio/status``), ``service`` (the signature
check, then the message's and its action's status).
"""
