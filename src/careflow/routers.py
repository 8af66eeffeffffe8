"""Every domain's router, in the order the OpenAPI document lists them."""

from __future__ import annotations

from fastapi import FastAPI

from careflow.audit.endpoints import router as audit_router
from careflow.automations.endpoints import router as automations_router
from careflow.automations.simulation import router as rule_test_router
from careflow.events.endpoints import router as events_router
from careflow.events.entity_endpoints import router as entities_router
from careflow.events.form_endpoints import router as form_completion_router
from careflow.executions.endpoints import router as executions_router
from careflow.forms.endpoints import router as forms_router
from careflow.jobs.endpoints import router as jobs_router
from careflow.messages.endpoints import router as messages_router
from careflow.ops.endpoints import router as ops_router
from careflow.organizations.endpoints import router as organizations_router
from careflow.pathways.endpoints import router as pathways_router
from careflow.pathways.episodes_endpoints import router as episodes_router
from careflow.patients.endpoints import router as patients_router
from careflow.providers.endpoints import router as providers_router
from careflow.segments.endpoints import router as segments_router
from careflow.templates.endpoints import router as templates_router
from careflow.unsubscribe.endpoints import router as unsubscribe_router


def include_routers(app: FastAPI) -> None:
    for router in (
        automations_router,
        rule_test_router,
        executions_router,
        events_router,
        entities_router,
        forms_router,
        form_completion_router,
        patients_router,
        segments_router,
        messages_router,
        providers_router,
        templates_router,
        unsubscribe_router,
        pathways_router,
        episodes_router,
        organizations_router,
        audit_router,
        jobs_router,
        ops_router,
    ):
        app.include_router(router)
