"""The OpenAPI document as the API really answers.

FastAPI documents a 422 ``HTTPValidationError`` on every operation with parameters; careflow
answers validation problems with 400 in its family's envelope (SPEC §3) and never 422 for
them. This replaces those entries with the error answers each operation can really give,
derived from the generated operation itself, so a new endpoint is documented without anyone
remembering to:

- 400 when it takes parameters or a body;
- 401 and 403 under ``/v1/`` (such a route needs a bearer token and a role, SPEC §2, unless
  it authenticates otherwise and says so with ``openapi_extra={"security": []}``);
- 404 when its path names an object;
- 413 when it takes a body (``CAREFLOW_MAX_BODY_BYTES``);

- 503 when it reaches the database (every ``/v1/`` route, and ``/readyz``);
- 409 and 422 where it accepts an ``Idempotency-Key`` (the header declared too);

each with the error envelope of the path's family. Other codes a route documents itself
with ``responses=`` (409 conflicts, …) keep their description and get the envelope's schema
too.

Beside the answers it gives every operation a stable ``operationId`` (``OPERATION_IDS``:
a client generated from the document keeps its method names across releases), the bearer
``securitySchemes`` entry where a token is needed, and the named components the app passes
in (``careflow.contract``). Schema names are the models' own (``AutomationRuleResponse``),
never module paths, and components nothing refers to are left out.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from careflow.errors import is_pathway_path
from careflow.kit.schemas import (
    COMPONENT_MARK,
    NOT_BLANK_PATTERN,
    ErrorEnvelope,
    PathwayErrorEnvelope,
)

_DESCRIPTIONS = {
    400: "`validation_error`: the request is malformed; `details` name each bad field",
    401: "`unauthorized`: missing or invalid bearer token",
    403: "`forbidden`: the caller's role may not perform this operation",
    404: "`<thing>_not_found`: no such object in the caller's organisation",
    409: "`conflict`",
    413: "`payload_too_large`: the body is over `CAREFLOW_MAX_BODY_BYTES`",
    422: "`idempotency_key_reused`: the Idempotency-Key was used with another body",
    503: "`service_unavailable`: the database is out of reach; retry after `Retry-After`",
}
# What FastAPI writes on its own 422 entry; a route's own 422 has another description.
_FASTAPI_422 = "Validation Error"
_METHODS = ("get", "put", "post", "delete", "patch")
_REF = "#/components/schemas/"
BEARER = "bearerAuth"

#: Each operation's id: (method, path) → camelCase verb and object, stable across releases.
#: A route missing here gets one made from its function's name, and fails a test that asks
#: for an entry here.
OPERATION_IDS: dict[tuple[str, str], str] = {
    ("get", "/v1/automations/triggers"): "listAutomationTriggers",
    ("get", "/v1/automations/actions"): "listAutomationActions",
    ("get", "/v1/automations/rules"): "listAutomationRules",
    ("post", "/v1/automations/rules"): "createAutomationRule",
    ("get", "/v1/automations/rules/{rule_id}"): "getAutomationRule",
    ("put", "/v1/automations/rules/{rule_id}"): "updateAutomationRule",
    ("delete", "/v1/automations/rules/{rule_id}"): "deleteAutomationRule",
    ("post", "/v1/automations/rules/{id}/test"): "testAutomationRule",
    ("get", "/v1/automations/executions"): "listExecutions",
    ("get", "/v1/automations/executions/{id}"): "getExecution",
    ("post", "/v1/automations/executions/{id}/retry"): "retryExecution",
    ("post", "/v1/events"): "ingestEvent",
    ("get", "/v1/events/{id}"): "getEvent",
    ("put", "/v1/entities/{entity_type}/{id}"): "putEntity",
    ("get", "/v1/forms"): "listForms",
    ("get", "/v1/forms/{form_id}"): "getForm",
    ("post", "/v1/forms/{form_id}/complete"): "completeForm",
    ("get", "/v1/patients/{patient_id}/gate"): "getPatientGate",
    ("get", "/v1/patients/{patient_id}/preferences"): "getPatientPreferences",
    ("put", "/v1/patients/{patient_id}/preferences"): "putPatientPreferences",
    ("get", "/v1/segments/{segment_id}/members"): "listSegmentMembers",
    ("get", "/v1/messages"): "listMessages",
    ("get", "/v1/messages/{message_id}"): "getMessage",
    ("get", "/v1/templates"): "listTemplates",
    ("get", "/v1/templates/{channel}/{key}"): "getTemplate",
    ("put", "/v1/templates/{channel}/{key}"): "putTemplate",
    ("delete", "/v1/templates/{channel}/{key}"): "deleteTemplate",
    ("get", "/v1/pathway-triggers"): "listPathwayTriggers",
    ("get", "/v1/pathway-configs"): "listPathwayConfigs",
    ("get", "/v1/pathway-configs/{trigger_type}"): "getPathwayConfig",
    ("put", "/v1/pathway-configs/{trigger_type}"): "putPathwayConfig",
    ("get", "/v1/pathway-rules"): "listPathwayRules",
    ("post", "/v1/pathway-rules"): "createPathwayRule",
    ("post", "/v1/pathway-rules/resolve"): "resolvePathway",
    ("get", "/v1/pathway-rules/{rule_id}"): "getPathwayRule",
    ("patch", "/v1/pathway-rules/{rule_id}"): "updatePathwayRule",
    ("delete", "/v1/pathway-rules/{rule_id}"): "deletePathwayRule",
    ("get", "/v1/episodes"): "listEpisodes",
    ("get", "/v1/episodes/{episode_id}"): "getEpisode",
    ("patch", "/v1/episodes/{episode_id}"): "updateEpisode",
    ("get", "/v1/organization/settings"): "getOrganizationSettings",
    ("put", "/v1/organization/settings"): "putOrganizationSettings",
    ("get", "/v1/audit-log"): "listAuditLog",
    ("get", "/v1/jobs"): "listJobs",
    ("post", "/v1/jobs/{id}/retry"): "retryJob",
    ("delete", "/v1/jobs/{id}"): "deleteJob",
    ("post", "/v1/providers/twilio/status"): "receiveTwilioStatus",
    ("post", "/v1/providers/twilio/inbound"): "receiveTwilioInboundSms",
    ("get", "/v1/unsubscribe/{token}"): "getUnsubscribePage",
    ("post", "/v1/unsubscribe/{token}"): "unsubscribe",
    ("get", "/healthz"): "getHealth",
    ("get", "/readyz"): "getReadiness",
    ("get", "/metrics"): "getMetrics",
}

#: One tag per area, in the order the docs list them.
TAGS: tuple[dict[str, str], ...] = (
    {"name": "automations", "description": "Automation rules and the trigger/action catalogs"},
    {"name": "executions", "description": "What each rule did, action by action"},
    {"name": "events", "description": "Domain events and entity snapshots from the host"},
    {"name": "pathways", "description": "Pathway rules, base configs and routing"},
    {"name": "episodes", "description": "The practice inbox's episodes"},
    {"name": "forms", "description": "Form instances that rules require"},
    {"name": "patients", "description": "The booking gate and a patient's opt-outs"},
    {"name": "segments", "description": "Segment membership"},
    {"name": "messages", "description": "Every email and SMS sent or tried"},
    {"name": "templates", "description": "Email and SMS templates"},
    {"name": "organization", "description": "The organisation's settings"},
    {"name": "audit", "description": "Who changed what"},
    {"name": "jobs", "description": "The durable job queue"},
    {
        "name": "providers",
        "description": "Callbacks and inbound texts from delivery providers (signed by the provider, no token)",
    },
    {
        "name": "unsubscribe",
        "description": "One-click unsubscribe links in emails (signed links, no token)",
    },
    {"name": "operations", "description": "Health, readiness and metrics (no token)"},
)

#: OpenAPI links: what a client (and a stateful test) can do next with what an answer holds.
#: (source operation, status) → {link name: (target operation, {parameter: expression})}.
LINKS: dict[tuple[str, str], dict[str, tuple[str, dict[str, str]]]] = {
    ("createAutomationRule", "201"): {
        verb.capitalize() + "AutomationRule": (
            verb + "AutomationRule",
            {"rule_id": "$response.body#/data/id"},
        )
        for verb in ("get", "update", "delete")
    }
    | {"TestAutomationRule": ("testAutomationRule", {"id": "$response.body#/data/id"})},
    ("createPathwayRule", "201"): {
        verb.capitalize() + "PathwayRule": (
            verb + "PathwayRule",
            {"rule_id": "$response.body#/data/id"},
        )
        for verb in ("get", "update", "delete")
    },
    ("ingestEvent", "202"): {"GetEvent": ("getEvent", {"id": "$response.body#/data/id"})},
    ("ingestEvent", "200"): {"GetEvent": ("getEvent", {"id": "$response.body#/data/id"})},
}

# Operations that honour an Idempotency-Key header (kit/idempotency.py).
IDEMPOTENT = {
    ("post", "/v1/events"),
    ("post", "/v1/automations/rules"),
    ("post", "/v1/pathway-rules"),
}
_IDEMPOTENCY_PARAMETER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Makes a retry safe: the same key and body within 24 h answer the stored "
    "response again (with `Idempotent-Replayed: true`); the same key with another body is a "
    "422, and while the first request is still running a 409.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": NOT_BLANK_PATTERN},
    "example": "0b6e6a4e-6a59-4d57-9a4c-2f1f0c8e8d11",
}
_REPLAYED_HEADER = {
    "Idempotent-Replayed": {
        "description": "`true` when the body is the stored answer to an earlier request "
        "with the same Idempotency-Key",
        "schema": {"type": "string", "enum": ["true"]},
    }
}
_READINESS = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["ok", "unavailable"]},
        "database": {"type": "string", "enum": ["ok", "unreachable"]},
        "migrations": {
            "type": "object",
            "properties": {
                "current": {"type": ["string", "null"]},
                "head": {"type": ["string", "null"]},
            },
        },
        "error": {"type": "string"},
    },
    "required": ["status", "database"],
}


def _camel_case(generated: str, path: str) -> str:
    """FastAPI's id (``create_rule_v1_automations_rules_post``) as a readable one, for a route
    ``OPERATION_IDS`` does not list yet (a test lists those: give each a stable id there)."""
    name = generated.split("_v1_")[0] if "_v1_" in generated else generated
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _error_statuses(path: str, operation: dict[str, Any]) -> set[int]:
    parameters = operation.get("parameters", [])
    has_body = "requestBody" in operation
    statuses: set[int] = set()
    if parameters or has_body:
        statuses.add(400)
    if has_body:
        statuses.add(413)
    if any(p.get("in") == "path" for p in parameters):
        statuses.add(404)
    if path.startswith("/v1/"):
        statuses.add(503)
        if operation.get("security") != []:
            statuses |= {401, 403}
    return statuses


def _add_error_schemas(document: dict[str, Any]) -> None:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for model in (ErrorEnvelope, PathwayErrorEnvelope):
        generated = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(generated.pop("$defs", {}))
        schemas[model.__name__] = generated
    # Nothing answers with FastAPI's validation shapes.
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)


def _fix_operation(method: str, path: str, operation: dict[str, Any]) -> None:
    op_id = OPERATION_IDS.get((method, path)) or _camel_case(operation["operationId"], path)
    operation["operationId"] = op_id
    responses: dict[str, Any] = operation.setdefault("responses", {})
    if path.startswith("/v1/") and "security" not in operation:
        # A route that authenticates otherwise declares ``openapi_extra={"security": []}``.
        operation["security"] = [{BEARER: []}]
    if (method, path) in IDEMPOTENT:
        operation.setdefault("parameters", []).append(dict(_IDEMPOTENCY_PARAMETER))
        responses.setdefault("409", {})["description"] = (
            "`idempotency_key_in_use`: a request with this Idempotency-Key is still running"
            + (
                "; or `CONFLICT`: another rule has this trigger type and priority"
                if is_pathway_path(path)
                else ""
            )
        )
        responses["422"] = {"description": _DESCRIPTIONS[422]}
        for code, entry in responses.items():
            if code.startswith("2"):
                entry.setdefault("headers", {}).update(_REPLAYED_HEADER)
    if responses.get("422", {}).get("description") == _FASTAPI_422:
        del responses["422"]
    for (source, code), links in LINKS.items():
        if source == op_id and code in responses:
            responses[code]["links"] = {
                name: {"operationId": target, "parameters": parameters}
                for name, (target, parameters) in links.items()
            }
    declared = {int(code) for code in responses if code.isdigit() and int(code) >= 400}
    name = PathwayErrorEnvelope.__name__ if is_pathway_path(path) else ErrorEnvelope.__name__
    for status in sorted(_error_statuses(path, operation) | declared):
        entry = responses.setdefault(str(status), {})
        entry.setdefault("description", _DESCRIPTIONS.get(status, "Error"))
        entry["content"] = {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}
        }


def _operations_endpoints(document: dict[str, Any]) -> None:
    paths = document.get("paths", {})
    if "/metrics" in paths:
        paths["/metrics"]["get"]["responses"]["200"] = {
            "description": "Prometheus text exposition format",
            "content": {"text/plain; version=0.0.4; charset=utf-8": {"schema": {"type": "string"}}},
        }
    if "/readyz" in paths:
        responses = paths["/readyz"]["get"]["responses"]
        responses["200"] = {
            "description": "The database is reachable and migrated to head",
            "content": {"application/json": {"schema": _READINESS}},
        }
        responses["503"] = {
            "description": "Not ready: the database is unreachable or not migrated to head",
            "content": {"application/json": {"schema": _READINESS}},
        }
    if "/healthz" in paths:
        paths["/healthz"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] = {
            "type": "object",
            "properties": {"status": {"type": "string", "enum": ["ok"]}},
            "required": ["status"],
        }


def _walk_refs(node: Any, rename: dict[str, str], seen: set[str]) -> None:
    """Rewrite ``$ref``\s by ``rename`` and collect the names referred to."""
    if isinstance(node, dict):
        if COMPONENT_MARK in node:
            node["$ref"] = _REF + node.pop(COMPONENT_MARK)
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_REF):
            name = rename.get(ref[len(_REF) :], ref[len(_REF) :])
            node["$ref"] = _REF + name
            seen.add(name)
        mapping = node.get("discriminator", {}).get("mapping")
        if isinstance(mapping, dict):
            for key, target in mapping.items():
                if isinstance(target, str) and target.startswith(_REF):
                    name = rename.get(target[len(_REF) :], target[len(_REF) :])
                    mapping[key] = _REF + name
                    seen.add(name)
        for value in node.values():
            _walk_refs(value, rename, seen)
    elif isinstance(node, list):
        for value in node:
            _walk_refs(value, rename, seen)


def _tidy_components(document: dict[str, Any]) -> None:
    """Name generic models by their own name, and drop what nothing refers to.

    pydantic keys a parametrised model by its generic origin
    (``DataEnvelope_AutomationRule_``); its ``title`` is the name the model gives itself
    (``AutomationRuleResponse``, ``kit.schemas``), which is the one a client should see.
    """
    schemas: dict[str, Any] = document["components"]["schemas"]
    rename: dict[str, str] = {}
    for name, schema in schemas.items():
        title = schema.get("title")
        if isinstance(title, str) and title != name and title.isidentifier():
            rename[name] = title
    if len(set(rename.values())) != len(rename) or set(rename.values()) & (
        set(schemas) - set(rename)
    ):
        raise RuntimeError(f"two schemas would share a name: {sorted(rename.values())}")
    renamed = {rename.get(name, name): schema for name, schema in schemas.items()}
    # Keep what the paths reach, and what that reaches in turn.
    reached: set[str] = set()
    _walk_refs(document["paths"], rename, reached)
    frontier = set(reached)
    while frontier:
        found: set[str] = set()
        for name in frontier:
            _walk_refs(renamed.get(name, {}), rename, found)
        frontier = found - reached
        reached |= found
    document["components"]["schemas"] = {
        name: renamed[name] for name in sorted(renamed) if name in reached
    }


def build_openapi(
    app: FastAPI, components: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    document = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        tags=list(TAGS),
    )
    _add_error_schemas(document)
    document["components"]["schemas"].update(components or {})
    document["components"]["securitySchemes"] = {
        BEARER: {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "A JWT with the claims `sub`, `org_id`, `role` and `exp` "
            "(`careflow token` prints one for local use)",
        }
    }
    for path, item in document.get("paths", {}).items():
        for method in _METHODS:
            if method in item:
                _fix_operation(method, path, item[method])
    _operations_endpoints(document)
    _tidy_components(document)
    return document


def install_openapi(app: FastAPI, components: dict[str, dict[str, Any]] | None = None) -> None:
    """``app.openapi()`` (and so ``/openapi.json`` and ``/docs``) serve the fixed document,
    with ``components`` (named schemas the routes refer to) added."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app, components)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
