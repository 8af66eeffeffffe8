"""Pydantic building blocks shared by the domains' schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, PlainSerializer

from careflow.kit.clock import isoformat_z

T = TypeVar("T")

# Every timestamp careflow answers with: ISO 8601, UTC, with a Z.
UTCDatetime = Annotated[datetime, PlainSerializer(isoformat_z, return_type=str)]
EntityIdField = int | str


class StrictInput(BaseModel):
    """A request body: unknown fields are refused, never silently stored."""

    model_config = ConfigDict(extra="forbid")


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
