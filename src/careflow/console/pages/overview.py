"""``/console``: what needs attention in the organisation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from careflow.console.web import User, reader, render

router = APIRouter()


@router.get("")
async def overview(
    request: Request, user: Annotated[User, reader("GET /v1/automations/executions")]
) -> HTMLResponse:
    return render(request, "overview.html", user)
