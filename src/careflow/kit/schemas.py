"""Pydantic building blocks shared by the domains' schemas."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)

from careflow.kit.clock import isoformat_z
from careflow.kit.text import UNSTORABLE_MESSAGE, unstorable_path

T = TypeVar("T")

# Every timestamp careflow answers with: ISO 8601, UTC, with a Z.
UTCDatetime = Annotated[datetime, PlainSerializer(isoformat_z, return_type=str)]
EntityIdField = int | str

# The largest id a BIGINT column holds: a larger one names no row, and would fail in the
# database driver (a 500) rather than answer 404 or 400.
MAX_ROW_ID = 2**63 - 1


def _iso_8601(value: Any) -> Any:
    """ISO 8601 only: pydantic alone would also read ``0.5`` as seconds since 1970."""
    if value is None or isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 date-time string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("must be an ISO 8601 date-time string") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# An input timestamp: ISO 8601, read as UTC when it carries no offset.
ISODateTime = Annotated[datetime, BeforeValidator(_iso_8601)]


def component(name: str) -> dict[str, Any]:
    """A ``$ref`` to a named schema of the API document (``careflow.contract`` defines the
    ones generated from the catalogs)."""
    return {"$ref": f"#/components/schemas/{name}"}


#: A string that is not blank, as the API judges it (``str.strip``, which also strips
#: U+001C-U+001F and U+0085), written for the document's ECMAScript regular expressions.
NOT_BLANK_PATTERN = r"[^\s\u001c-\u001f\u0085]"

#: Marks a field's schema as a named component; ``kit.openapi`` turns it into the ``$ref``
#: (pydantic resolves every ``$ref`` it meets against its own models while it generates).
COMPONENT_MARK = "x-careflow-component"


def documented_as(name: str, *, nullable: bool = False) -> WithJsonSchema:
    """For ``Annotated[...]``: the field is documented as the named schema."""
    mark = {COMPONENT_MARK: name}
    return WithJsonSchema({"anyOf": [mark, {"type": "null"}]} if nullable else mark)


class StrictInput(BaseModel):
    """A request body: unknown fields are refused, never silently stored."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _storable_strings(cls, data: Any) -> Any:
        # Checked on the raw input, so free-form fields (``data``, ``conditions``) are
        # covered as well as typed ones.
        path = unstorable_path(data)
        if path is not None:
            raise ValueError(f"{UNSTORABLE_MESSAGE} (at {path or 'body'})")
        return data


class PageMeta(BaseModel):
    total: int
    page: int
    limit: int


def _param_name(params: tuple[Any, ...]) -> str:
    """The name a generic envelope's parameter gives its schema (``AutomationRule``)."""
    (param,) = params
    if param is None or param is type(None):
        return "Empty"
    if not isinstance(param, type):
        return "Object"
    return param.__name__.removesuffix("Out")


class DataEnvelope(BaseModel, Generic[T]):
    """``{"data": …}``: the automations family's single object (``AutomationRuleResponse``)."""

    data: T

    @classmethod
    def model_parametrized_name(cls, params: tuple[Any, ...]) -> str:
        return f"{_param_name(params)}Response"


class ListEnvelope(BaseModel, Generic[T]):
    """A page of the automations family (``AutomationRuleList``)."""

    data: list[T]
    meta: PageMeta

    @classmethod
    def model_parametrized_name(cls, params: tuple[Any, ...]) -> str:
        return f"{_param_name(params)}List"


class RequestMeta(BaseModel):
    request_id: str | None


class OffsetMeta(BaseModel):
    total: int
    limit: int
    offset: int
    request_id: str | None


class PathwayEnvelope(BaseModel, Generic[T]):
    """The pathway family's single object, with the request id (``PathwayRuleResponse``)."""

    data: T
    meta: RequestMeta

    @classmethod
    def model_parametrized_name(cls, params: tuple[Any, ...]) -> str:
        name = _param_name(params)
        return "PathwayEmptyResponse" if name == "Empty" else f"{name}Response"


class PathwayListEnvelope(BaseModel, Generic[T]):
    """A page of the pathway family (``PathwayRuleList``)."""

    data: list[T]
    meta: OffsetMeta

    @classmethod
    def model_parametrized_name(cls, params: tuple[Any, ...]) -> str:
        return f"{_param_name(params)}List"


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorEnvelope(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": {
                        "code": "validation_error",
                        "message": "Request validation failed",
                        "details": [{"field": "trigger_event", "message": "is required"}],
                    }
                }
            ]
        }
    )

    error: ErrorBody


class PathwayErrorEnvelope(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": {
                        "code": "CONFLICT",
                        "message": "A rule with this trigger_type and priority already exists",
                        "details": [],
                    },
                    "meta": {"request_id": "req_8c1f2b7a9d0e4f61a2b3c4d5"},
                }
            ]
        }
    )

    error: ErrorBody
    meta: RequestMeta
