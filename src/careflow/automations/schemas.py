"""Request and response shapes of the automation rules API.

Request bodies are ``TypedDict``s validated by pydantic in strict mode: a key that is absent
stays absent (a partial ``PUT`` must tell "not sent" from ``null``), and ``true`` is never
taken for ``1``. The contents of ``trigger_config``, ``conditions`` and ``actions`` are
checked against the catalogs and the condition language by the service, so every problem in
a body is reported in one answer. The API document describes the bodies with the schemas
``careflow.contract`` generates from those same catalogs.
"""

from __future__ import annotations

from typing import Annotated, Any, NotRequired

from pydantic import (
    BaseModel,
    ConfigDict,
    StringConstraints,
    TypeAdapter,
    WithJsonSchema,
    with_config,
)
from pydantic import ValidationError as PydanticValidationError
from typing_extensions import TypedDict

from careflow.errors import pydantic_details
from careflow.examples import GDPR_WELCOME
from careflow.kit.schemas import COMPONENT_MARK, UTCDatetime, documented_as

NAME_MAX = 200

# Stripped, so a name of blanks counts as empty.
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=NAME_MAX)]

_STRICT = ConfigDict(extra="forbid", strict=True)


@with_config(_STRICT)
class RuleCreate(TypedDict):
    name: Name
    description: NotRequired[str | None]
    enabled: NotRequired[bool]
    trigger_event: str
    trigger_config: NotRequired[dict[str, Any] | None]
    conditions: NotRequired[Any]
    actions: list[Any]


@with_config(_STRICT)
class RuleUpdate(TypedDict, total=False):
    """Every field optional; only the ones sent are changed."""

    name: Name
    description: str | None
    enabled: bool
    trigger_event: str
    trigger_config: dict[str, Any] | None
    conditions: Any
    actions: list[Any]


_create_adapter: TypeAdapter[RuleCreate] = TypeAdapter(RuleCreate)
_update_adapter: TypeAdapter[RuleUpdate] = TypeAdapter(RuleUpdate)


def _details(exc: PydanticValidationError) -> list[dict[str, str]]:
    details = pydantic_details(list(exc.errors()))
    for detail, err in zip(details, exc.errors(), strict=True):
        if err.get("type") == "extra_forbidden":
            detail["message"] = "unknown field"
        elif err.get("type") == "missing":
            detail["message"] = "is required"
    return details


def parse_body(payload: Any, *, partial: bool) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The body's top-level fields that are well formed, and a detail for each that is not."""
    if not isinstance(payload, dict):
        return {}, [{"field": "body", "message": "must be a JSON object"}]
    adapter: TypeAdapter[Any] = _update_adapter if partial else _create_adapter
    try:
        return dict(adapter.validate_python(payload)), []
    except PydanticValidationError as exc:
        details = _details(exc)
    bad = {d["field"].split("[")[0].split(".")[0] for d in details}
    # The fields that passed go on to the deeper checks, so one answer names every problem.
    known = RuleUpdate.__annotations__
    good = {k: v for k, v in payload.items() if k in known and k not in bad}
    return good, details


class AutomationRule(BaseModel):
    # The seed's "Get Automation Rule" answer.
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": 1,
                    "organization_id": 1,
                    **GDPR_WELCOME,
                    "execution_count": 150,
                    "last_executed_at": "2025-02-14T10:30:00Z",
                    "created_at": "2025-01-01T00:00:00Z",
                    "updated_at": "2025-02-10T15:00:00Z",
                    "version": 3,
                }
            ]
        },
    )

    @classmethod
    def of(
        cls, rule: Any, execution_count: int = 0, last_executed_at: Any = None
    ) -> AutomationRule:
        """The rule as answered, with its run counts (read from its executions)."""
        fields = {name: getattr(rule, name) for name in cls.model_fields if hasattr(rule, name)}
        return cls(**fields, execution_count=execution_count, last_executed_at=last_executed_at)

    id: int
    organization_id: int
    name: str
    description: str | None
    enabled: bool
    trigger_event: Annotated[str, documented_as("TriggerEvent")]
    trigger_config: dict[str, Any]
    conditions: Annotated[dict[str, Any], documented_as("Condition")]
    actions: Annotated[
        list[dict[str, Any]],
        WithJsonSchema({"type": "array", "items": {COMPONENT_MARK: "Action"}}),
    ]
    execution_count: int
    last_executed_at: UTCDatetime | None
    created_at: UTCDatetime
    updated_at: UTCDatetime
    version: int


class AutomationTrigger(BaseModel):
    event: Annotated[str, documented_as("TriggerEvent")]
    category: str
    description: str
    entity_type: Annotated[str, documented_as("EntityType")]
    config_schema: dict[str, dict[str, Any]] | None


class ActionDefinition(BaseModel):
    type: Annotated[str, documented_as("ActionType")]
    category: str
    description: str
    config_schema: dict[str, dict[str, Any]]


class TriggerList(BaseModel):
    data: list[AutomationTrigger]


class ActionDefinitionList(BaseModel):
    data: list[ActionDefinition]
