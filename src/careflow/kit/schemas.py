"""Pydantic building blocks shared by the domains' schemas."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer, model_validator

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


class DataEnvelope(BaseModel, Generic[T]):
    data: T


class ListEnvelope(BaseModel, Generic[T]):
    data: list[T]
    meta: PageMeta


class RequestMeta(BaseModel):
    request_id: str | None


class OffsetMeta(BaseModel):
    total: int
    limit: int
    offset: int
    request_id: str | None


class PathwayEnvelope(BaseModel, Generic[T]):
    data: T
    meta: RequestMeta


class PathwayListEnvelope(BaseModel, Generic[T]):
    data: list[T]
    meta: OffsetMeta


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorEnvelope(BaseModel):
    error: ErrorBody


class PathwayErrorEnvelope(BaseModel):
    error: ErrorBody
    meta: RequestMeta
