"""Phone numbers in E.164, read with ``phonenumbers`` (Google's libphonenumber metadata).

A number written without its country code (``07700 900123``) is read as a number of the
organisation's ``default_region``; one with it (``+44 7700 900123``) is read as written.
"""

from __future__ import annotations

import phonenumbers

#: What an E.164 number looks like: ``+``, a country code, at most 15 digits in all.
E164_PATTERN = r"^\+[1-9][0-9]{6,14}$"

#: Every region code ``phonenumbers`` knows, sorted (the API document's enum).
REGIONS: tuple[str, ...] = tuple(sorted(phonenumbers.SUPPORTED_REGIONS))


def is_region(value: str) -> bool:
    """True for an ISO 3166 alpha-2 code whose numbering plan ``phonenumbers`` knows."""
    return value in phonenumbers.SUPPORTED_REGIONS


def to_e164(raw: str, region: str) -> str | None:
    """``raw`` as ``+<country code><number>``, or None when it does not parse as a number
    of a possible length for its country."""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
