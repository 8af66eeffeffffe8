"""The console's router: every page module's routes under ``/console``, kept out of the
API document (the console is HTML for people, not part of the contract)."""

from __future__ import annotations

from fastapi import APIRouter

from careflow.console.pages import login, overview, pathway_rules, rules
from careflow.console.web import PREFIX

router = APIRouter(include_in_schema=False)
for page in (login, overview, rules, pathway_rules):
    router.include_router(page.router, prefix=PREFIX)
