"""Request and response bodies of pathway rules, configs, triggers, resolution and episodes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from pydantic.json_schema import SkipJsonSchema

from careflow.examples import VIP_BOOKINGS
from careflow.kit.schemas import NOT_BLANK_PATTERN, StrictInput, UTCDatetime, documented_as
from careflow.kit.types import EntityRef
from careflow.pathways.catalog import JOURNEY_TYPE_PATTERN

CreationMode = Literal["create_new", "reuse_open", "suppress"]
InboxVisibility = Literal["visible", "hidden"]
Priority = Literal["low", "medium", "high", "urgent"]
NextActor = Literal["practice", "patient"]


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


JourneyType = Annotated[StrictStr, Field(pattern=JOURNEY_TYPE_PATTERN)]
_NOT_BLANK = Field(min_length=1, max_length=200, json_schema_extra={"pattern": NOT_BLANK_PATTERN})
Assignment = Annotated[StrictStr, _NOT_BLANK, AfterValidator(_not_blank)]
RuleName = Annotated[StrictStr, _NOT_BLANK, AfterValidator(_not_blank)]
# The upper bound is the INTEGER column's.
RulePriority = Annotated[StrictInt, Field(ge=0, le=2_147_483_647)]


# --- triggers -----------------------------------------------------------------------------


class BaseConfig(BaseModel):
    creation_mode: Annotated[str, documented_as("CreationMode")]
    inbox_visibility: Annotated[str, documented_as("InboxVisibility")]
    journey_type: str
    suggested_assignment: str
    suggested_priority: Annotated[str, documented_as("Priority")]
    expected_next_actor: Annotated[str, documented_as("ExpectedNextActor")]


class ConditionField(BaseModel):
    name: str
    type: str
    maps_to: str
    description: str


class PathwayTrigger(BaseModel):
    trigger_type: Annotated[str, documented_as("EventType")]
    entity_type: str
    description: str
    default_config: BaseConfig
    condition_fields: list[ConditionField]


# --- configs ------------------------------------------------------------------------------


class PathwayConfig(BaseModel):
    trigger_type: Annotated[str, documented_as("EventType")]
    creation_mode: Annotated[str, documented_as("CreationMode")]
    inbox_visibility: Annotated[str, documented_as("InboxVisibility")]
    journey_type: str
    suggested_assignment: str
    suggested_priority: Annotated[str, documented_as("Priority")]
    expected_next_actor: Annotated[str, documented_as("ExpectedNextActor")]
    is_default: bool
    updated_at: UTCDatetime | None


class PathwayConfigPut(StrictInput):
    """A full base config: every field required, none null."""

    creation_mode: CreationMode
    inbox_visibility: InboxVisibility
    journey_type: JourneyType
    suggested_assignment: Assignment
    suggested_priority: Priority
    expected_next_actor: NextActor


# --- rules --------------------------------------------------------------------------------


class PathwayRule(BaseModel):
    # Seed 001's "The Rule Object".
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": "rule_123e4567-e89b-12d3-a456-426614174000",
                    **VIP_BOOKINGS,
                    "creation_mode": None,
                    "inbox_visibility": None,
                    "journey_type": None,
                    "expected_next_actor": None,
                    "enabled": True,
                    "created_at": "2025-01-01T00:00:00Z",
                    "updated_at": "2025-01-01T00:00:00Z",
                }
            ]
        },
    )

    id: str
    trigger_type: Annotated[str, documented_as("EventType")]
    rule_name: str
    priority: int
    conditions: Annotated[dict[str, Any] | None, documented_as("PathwayCondition", nullable=True)]
    creation_mode: Annotated[str | None, documented_as("CreationMode", nullable=True)]
    inbox_visibility: Annotated[str | None, documented_as("InboxVisibility", nullable=True)]
    journey_type: str | None
    suggested_assignment: str | None
    suggested_priority: Annotated[str | None, documented_as("Priority", nullable=True)]
    expected_next_actor: Annotated[str | None, documented_as("ExpectedNextActor", nullable=True)]
    enabled: bool
    created_at: UTCDatetime
    updated_at: UTCDatetime


class _RuleOverrides(StrictInput):
    conditions: Annotated[
        dict[str, Any] | None, documented_as("PathwayCondition", nullable=True)
    ] = None
    creation_mode: CreationMode | None = None
    inbox_visibility: InboxVisibility | None = None
    journey_type: JourneyType | None = None
    suggested_assignment: Assignment | None = None
    suggested_priority: Priority | None = None
    expected_next_actor: NextActor | None = None


class PathwayRuleCreate(_RuleOverrides):
    trigger_type: Annotated[StrictStr, documented_as("EventType")]
    rule_name: RuleName
    priority: RulePriority
    # null is read as "not given": the rule is enabled.
    enabled: StrictBool | None = True


# Fields a PATCH may not set to null (the rest are nullable overrides).
NOT_NULLABLE_ON_UPDATE = ("rule_name", "priority", "enabled")


class PathwayRuleUpdate(_RuleOverrides):
    """Every field optional; only the ones sent change (``model_fields_set``)."""

    # Read only to answer "cannot be changed" (SPEC §8): not part of the documented body.
    trigger_type: Annotated[StrictStr | None, SkipJsonSchema()] = None
    rule_name: RuleName | None = None
    priority: RulePriority | None = None
    enabled: StrictBool | None = None


# --- resolution ---------------------------------------------------------------------------


class ResolveRequest(StrictInput):
    trigger_type: Annotated[StrictStr, documented_as("EventType")]
    data: dict[str, Any] = Field(default_factory=dict)


class RuleEvaluation(BaseModel):
    rule_id: str
    priority: int
    enabled: bool
    matched: bool
    failed_conditions: list[str]


class RoutingResolution(BaseModel):
    trigger_type: Annotated[str, documented_as("EventType")]
    config: BaseConfig
    matched_rule_id: str | None
    evaluations: list[RuleEvaluation]


# --- episodes -----------------------------------------------------------------------------


class EpisodeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    patient_id: EntityRef | None
    journey_type: str
    status: Annotated[str, documented_as("EpisodeStatus")]
    inbox_visibility: Annotated[str, documented_as("InboxVisibility")]
    suggested_assignment: str
    suggested_priority: Annotated[str, documented_as("Priority")]
    expected_next_actor: Annotated[str, documented_as("ExpectedNextActor")]
    assignee: str | None
    priority: Annotated[str, documented_as("Priority")]
    created_at: UTCDatetime
    updated_at: UTCDatetime


class EpisodeEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    event_id: str | None
    type: Annotated[str, documented_as("EventType")]
    occurred_at: UTCDatetime


class EpisodeDetailOut(EpisodeOut):
    events: list[EpisodeEventOut]


class EpisodePatch(StrictInput):
    status: Literal["open", "closed"] | None = None
    assignee: Assignment | None = None
    priority: Priority | None = None
