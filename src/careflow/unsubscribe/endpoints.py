"""``/v1/unsubscribe/{token}``: the link in every email's ``List-Unsubscribe`` header.

No bearer token: the signed link is the credential. ``POST`` with the body
``List-Unsubscribe=One-Click`` (RFC 8058, what mailbox providers send when the reader
presses their unsubscribe button) records the opt-out; ``GET`` (a person who opened the
link, or a scanner following it) only shows a page whose button sends that ``POST``, so
following a link never unsubscribes anyone by itself. A token careflow did not sign is 404.
"""

from __future__ import annotations

import email.policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse

from careflow.errors import ValidationError
from careflow.kit.deps import ClockDep, SessionDep
from careflow.unsubscribe import service

router = APIRouter(prefix="/v1/unsubscribe", tags=["unsubscribe"])

TokenParam = Annotated[str, Path(min_length=1, max_length=512)]
ONE_CLICK = "One-Click"

# A page with no script, no outside resource and no patient data: the form posts the
# one-click body back to the page's own address.
_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title}</title>
</head>
<body style="font-family: sans-serif; max-width: 32rem; margin: 3rem auto; padding: 0 1rem">
<h1 style="font-size: 1.4rem">{title}</h1>
<p>{text}</p>
{form}
</body>
</html>
"""
_FORM = """<form method="post">
<input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit">Unsubscribe</button>
</form>"""
_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
    "Referrer-Policy": "no-referrer",
}


def _page(title: str, text: str, form: str = "") -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=title, text=text, form=form), headers=_HEADERS)


@router.get(
    "/{token}",
    summary="The confirmation page of an unsubscribe link",
    response_class=HTMLResponse,
    responses={404: {"description": "Not a link careflow signed"}},
    openapi_extra={"security": []},
)
async def confirm_page(session: SessionDep, clock: ClockDep, token: TokenParam) -> HTMLResponse:
    await service.check(session, token, clock.now())
    return _page(
        "Unsubscribe from these emails",
        "Press the button to stop receiving these emails from your care team.",
        _FORM,
    )


@router.post(
    "/{token}",
    summary="One-click unsubscribe (RFC 8058): records the patient's email opt-out",
    response_class=HTMLResponse,
    responses={
        400: {"description": "The body is not List-Unsubscribe=One-Click"},
        404: {"description": "Not a link careflow signed"},
    },
    openapi_extra={"security": []},
)
async def unsubscribe(
    request: Request, session: SessionDep, clock: ClockDep, token: TokenParam
) -> HTMLResponse:
    now = clock.now()
    await service.check(session, token, now)
    if not _is_one_click(request.headers.get("content-type", ""), await request.body()):
        raise ValidationError(
            "The body must be List-Unsubscribe=One-Click",
            details=[{"field": "List-Unsubscribe", "message": "must be One-Click"}],
        )
    await service.unsubscribe(session, token, now)
    return _page("You are unsubscribed", "You will no longer receive these emails.")


def _is_one_click(content_type: str, body: bytes) -> bool:
    """Whether the form holds ``List-Unsubscribe=One-Click``: RFC 8058 lets the sender post it
    as ``application/x-www-form-urlencoded`` or as ``multipart/form-data``."""
    if content_type.lower().startswith("multipart/form-data"):
        # The standard library's MIME parser reads the parts; no form parser is needed.
        form = BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
        )
        if not isinstance(form, EmailMessage) or not form.is_multipart():
            return False
        return any(
            part.get_param("name", header="content-disposition") == "List-Unsubscribe"
            and str(part.get_content()).strip() == ONE_CLICK
            for part in form.iter_parts()
            if isinstance(part, EmailMessage)
        )
    values = parse_qs(body.decode("utf-8", "replace")).get("List-Unsubscribe", [])
    return ONE_CLICK in values
