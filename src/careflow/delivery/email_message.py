"""The bytes of a plain email, written here rather than by ``EmailMessage``.

A plain message (an ASCII sender, a bare ASCII recipient, short printable headers, an ASCII
text and HTML) is written as the exact DATA that ``EmailMessage`` would flatten to
(``plain_message``); anything else returns None and is left to ``EmailMessage``. Also the
pieces both paths share: the Date header (``now_header``), the boundary (``new_boundary``)
and the headers written verbatim (``VERBATIM_HEADERS``, ``Verbatim``). Why this is kept
rather than left to the library is measured in ``careflow.delivery.email``'s docstring;
``tests/delivery/test_email.py`` holds the two paths to the same bytes.
"""

from __future__ import annotations

import binascii
import re
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from email import quoprimime
from email.headerregistry import HeaderRegistry
from email.policy import Policy
from email.utils import format_datetime

_date_cache: tuple[int, str] = (-1, "")


def now_header() -> str:
    """The Date header's value, in the form EmailMessage writes it back.

    It names whole seconds, so it is formatted once a second, not once a message.
    """
    global _date_cache
    now = datetime.now(UTC)
    second = int(now.timestamp())
    if _date_cache[0] != second:
        _date_cache = (second, format_datetime(now.replace(microsecond=0)))
    return _date_cache[1]


# A header line that EmailMessage writes exactly as given: printable ASCII, no folding.
_PLAIN_VALUE = re.compile(r"[ -~]*")
_LINE_LIMIT = 78  # the SMTP policy's max_line_length: EmailMessage folds or encodes past it

# A bare addr-spec of the common shape (dot-atoms either side of one @), as EmailMessage
# writes it back unchanged; quoted local parts, comments and display names are not plain.
# A Message-ID of the shape careflow writes (``message_id_for``) is one in angle brackets.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOMAIN_LABEL = r"[A-Za-z0-9-]+"
_ADDR = rf"{_ATOM}(\.{_ATOM})*@{_DOMAIN_LABEL}(\.{_DOMAIN_LABEL})*"
ADDR_SPEC = re.compile(_ADDR)
_MESSAGE_ID = re.compile(f"<{_ADDR}>")


# Headers whose value is one or more <URL>s (RFC 2369, RFC 8058): written on one line as
# they are, up to SMTP's 998, since EmailMessage would turn a long one into encoded words,
# which no mail client reads as a URL.
VERBATIM_HEADERS = frozenset({"list-unsubscribe", "list-unsubscribe-post"})
_VERBATIM_LIMIT = 998


class Verbatim(str):
    """A header value that ``EmailMessage`` stores and writes exactly as given: the email
    policy keeps a value that has a ``name`` and folds it with its own ``fold``."""

    name: str

    def __new__(cls, name: str, value: str) -> Verbatim:
        made = super().__new__(cls, value)
        made.name = name
        return made

    def fold(self, *, policy: Policy) -> str:
        return f"{self.name}: {self}{policy.linesep}"


def verbatim_value(name: str, value: str) -> str | None:
    line = f"{name}: {value}"
    plain = value and len(line) <= _VERBATIM_LIMIT and _PLAIN_VALUE.fullmatch(value)
    return line if plain else None


def _plain_header(name: str, value: str) -> str | None:
    """``Name: value`` when EmailMessage would write it so. Not an empty value (written
    "Name:"), and not one with "=?" in it: an encoded word, which it decodes and re-encodes."""
    if name.lower() in VERBATIM_HEADERS:
        return verbatim_value(name, value)
    line = f"{name}: {value}"
    plain = value and len(line) <= _LINE_LIMIT and _PLAIN_VALUE.fullmatch(value)
    return line if plain and "=?" not in value else None


# An extra header's name as EmailMessage keeps it: printable ASCII without a colon.
_HEADER_NAME = re.compile(r"[!-9;-~]+")
# Headers EmailMessage parses and writes back in its own form (addresses, dates, MIME): as
# an extra header, only Reply-To with a bare address is plain; the rest are left to it.
_STRUCTURED = frozenset(HeaderRegistry().registry)


def _plain_extra(name: str, value: str) -> str | None:
    lowered = name.lower()
    if not _HEADER_NAME.fullmatch(name):
        return None
    if lowered in _STRUCTURED and not (lowered == "reply-to" and ADDR_SPEC.fullmatch(value)):
        return None
    return _plain_header(name, value)


def new_boundary() -> str:
    """A multipart boundary: random, short enough for ``Content-Type`` to fit on one line."""
    return "=_" + secrets.token_hex(12)


def plain_message(
    *,
    sender_line: str,
    to: str,
    subject: str,
    body: str,
    message_id: str,
    date: str,
    headers: Mapping[str, str] | None = None,
    html: str | None = None,
    boundary: str = "",
) -> bytes | None:
    """The message's SMTP bytes when it is plain, else None.

    Plain: the recipient is a bare ASCII address, the subject, Message-ID and extra headers
    are short printable ASCII, and the body (and HTML) are ASCII text (see
    ``_plain_payload``). The bytes are then those ``build_message`` would flatten to
    (``EmailMessage`` + ``set_content``, and ``add_alternative`` for the HTML with the same
    ``boundary``), header for header (a property test holds the two equal). Anything else
    (a non-ASCII name or subject, a long header, a CR or LF in a header) returns None, and
    the caller builds an ``EmailMessage``, which encodes and folds what needs it and
    refuses what cannot be a header.

    Why: an ``EmailMessage`` parses each header through the policy's header registry and its
    flattening walks the message again, 0.8 to 1.8 ms of CPU a message here; this takes
    microseconds. The DATA is the same; the envelope differs only in that MAIL FROM does not
    ask for ``BODY=8BITMIME``, which 7-bit content does not need (RFC 6152).
    """
    if not (to.isascii() and ADDR_SPEC.fullmatch(to) and _MESSAGE_ID.fullmatch(message_id)):
        return None
    lines = [sender_line]
    for name, value in (("To", to), ("Subject", subject), ("Message-ID", message_id)):
        line = _plain_header(name, value)
        if line is None:
            return None
        lines.append(line)
    lines.append(f"Date: {date}")
    for name, value in (headers or {}).items():
        line = _plain_extra(name, value)
        if line is None:
            return None
        lines.append(line)
    payload = _plain_payload(body)
    if payload is None:
        return None
    cte, data = payload
    if html is None:
        lines += (
            'Content-Type: text/plain; charset="utf-8"',
            f"Content-Transfer-Encoding: {cte}",
            "MIME-Version: 1.0",
        )
        head = "\r\n".join(lines) + "\r\n\r\n"
        return (head + data.replace("\n", "\r\n")).encode("ascii")
    html_payload = _plain_payload(html)
    if html_payload is None or not _PLAIN_VALUE.fullmatch(boundary) or not boundary:
        return None
    html_cte, html_data = html_payload
    delimiter = f"--{boundary}"
    if delimiter in data or delimiter in html_data:
        return None  # a boundary must not occur in what it separates
    content_type = f'Content-Type: multipart/alternative; boundary="{boundary}"'
    if len(content_type) > _LINE_LIMIT:
        return None  # EmailMessage folds it
    lines += ("MIME-Version: 1.0", content_type)
    parts = (
        "\r\n".join(lines),
        "",
        delimiter,
        'Content-Type: text/plain; charset="utf-8"',
        f"Content-Transfer-Encoding: {cte}",
        "",
        data.replace("\n", "\r\n") + "\r\n" + delimiter,
        'Content-Type: text/html; charset="utf-8"',
        f"Content-Transfer-Encoding: {html_cte}",
        "MIME-Version: 1.0",
        "",
        html_data.replace("\n", "\r\n") + f"\r\n{delimiter}--\r\n",
    )
    return "\r\n".join(parts).encode("ascii")


def _plain_payload(body: str) -> tuple[str, str] | None:
    """An ASCII body as ``set_content`` encodes it: as it is ("7bit") when every line fits
    in 78 characters, else quoted-printable, with EmailMessage's own encoder and the same
    choice it makes. None where it would choose base64 (text with many "=" or control
    characters), or for a body that is not ASCII: left to EmailMessage."""
    if not body.isascii():
        return None
    lines = body.encode("ascii").splitlines()
    text = b"\n".join(lines) + b"\n"
    if max(map(len, lines), default=0) <= _LINE_LIMIT:
        return "7bit", text.decode("ascii")
    # EmailMessage weighs the first ten lines in both encodings and takes the shorter.
    sniff = b"\n".join(lines[:10]) + b"\n"
    if len(quoprimime.body_encode(sniff.decode("latin-1"), _LINE_LIMIT)) > len(
        binascii.b2a_base64(sniff)
    ):
        return None
    return "quoted-printable", quoprimime.body_encode(text.decode("latin-1"), _LINE_LIMIT)
