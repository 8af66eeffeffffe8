"""Request and response bodies of pathway rules, configs, triggers, resolution and episodes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from careflow.kit.schemas import StrictInput, UTCDatetime
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
Assignment = Annotated[StrictStr, Field(min_length=1, max_length=200), AfterValidator(_not_blank)]
RuleName = Annotated[StrictStr, Field(min_length=1, max_length=200), AfterValidator(_not_blank)]
# The upper bound is the INTEGER column's.
RulePriority = Annotated[StrictInt, Field(ge=0, le=2_147_483_647)]


# --- triggers -----------------------------------------------------------------------------


class BaseConfigOut(BaseModel):
    creation_mode: str
    inbox_visibility: str
    journey_type: str
    suggested_assignment: str
    suggested_priority: str
    expected_next_actor: str


class ConditionFieldOut(BaseModel):
    name: str
    type: str
    maps_to: str
    description: str


class TriggerOut(BaseModel):
    trigger_type: str
    entity_type: str
    description: str
    default_config: BaseConfigOut
    condition_fields: list[ConditionFieldOut]


# --- configs ------------------------------------------------------------------------------


class ConfigOut(BaseModel):
    trigger_type: str
    creation_mode: str
    inbox_visibility: str
    journey_type: str
    suggested_assignment: str
    suggested_priority: str
    expected_next_actor: str
    is_default: bool
    updated_at: UTCDatetime | None


class ConfigPut(StrictInput):
    """A full base config: every field required, none null."""

    creation_mode: CreationMode
    inbox_visibility: InboxVisibility
    journey_type: JourneyType
    suggested_assignment: Assignment
    suggested_priority: Priority
    expected_next_actor: NextActor


# --- rules --------------------------------------------------------------------------------


class RuleOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    trigger_type: str
    rule_name: str
    priority: int
    conditions: dict[str, Any] | None
    creation_mode: str | None
    inbox_visibility: str | None
    journey_type: str | None
    suggested_assignment: str | None
    suggested_priority: str | None
    expected_next_actor: str | None
    enabled: bool
    created_at: UTCDatetime
    updated_at: UTCDatetime


class _RuleOverrides(StrictInput):
    conditions: dict[str, Any] | None = None
    creation_mode: CreationMode | None = None
    inbox_visibility: InboxVisibility | None = None
    journey_type: JourneyType | None = None
    suggested_assignment: Assignment | None = None
    suggested_priority: Priority | None = None
    expected_next_actor: NextActor | None = None


class RuleCreate(_RuleOverrides):
    trigger_type: StrictStr
    rule_name: RuleName
    priority: RulePriority
    # null is read as "not given": the rule is enabled.
    enabled: StrictBool | None = True


# Fields a PATCH may not set to null (the rest are nullable overrides).
NOT_NULLABLE_ON_UPDATE = ("rule_name", "priority", "enabled")


class RuleUpdate(_RuleOverrides):
    """Every field optional; only the ones sent change (``model_fields_set``)."""

    trigger_type: StrictStr | None = None
    rule_name: RuleName | None = None
    priority: RulePriority | None = None
    enabled: StrictBool | None = None


# --- resolution ---------------------------------------------------------------------------


class ResolveRequest(StrictInput):
    trigger_type: StrictStr
    data: dict[str, Any] = Field(default_factory=dict)


class EvaluationOut(BaseModel):
    rule_id: str
    priority: int
    enabled: bool
    matched: bool
    failed_conditions: list[str]


class ResolutionOut(BaseModel):
    trigger_type: str
    config: BaseConfigOut
    matched_rule_id: str | None
    evaluations: list[EvaluationOut]


# --- episodes -----------------------------------------------------------------------------


class EpisodeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    patient_id: EntityRef | None
    journey_type: str
    status: str
    inbox_visibility: str
    suggested_assignment: str
    suggested_priority: str
    expected_next_actor: str
    assignee: str | None
    priority: str
    created_at: UTCDatetime
    updated_at: UTCDatetime


class EpisodeEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    event_id: str | None
    type: str
    occurred_at: UTCDatetime


class EpisodeDetailOut(EpisodeOut):
    events: list[EpisodeEventOut]


class EpisodePatch(StrictInput):
    status: Literal["open", "closed"] | None = None
    assignee: Assignment | None = None
    priority: Priority | None = None
