"""The console's router: every page module's routes under ``/console``, kept out of the
API document (the console is HTML for people, not part of the contract)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import RedirectResponse

from careflow.console.pages import (
    audit,
    executions,
    inbox,
    jobs,
    login,
    overview,
    pathway_rules,
    patients,
    rules,
)
from careflow.console.web import PREFIX

router = APIRouter(include_in_schema=False)
for page in (login, overview, rules, executions, patients, inbox, pathway_rules, jobs, audit):
    router.include_router(page.router, prefix=PREFIX)


@router.get("/")
async def root() -> RedirectResponse:
    """careflow's own address leads a person to the console (the API lives under /v1)."""
    return RedirectResponse(PREFIX, status_code=307)
