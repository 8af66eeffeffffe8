"""Paging for both API families: page/limit (automations) and limit/offset (pathways)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Query


@dataclass(frozen=True, slots=True)
class PageParams:
    page: int
    limit: int

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.limit

    def meta(self, total: int) -> dict[str, Any]:
        return {"total": total, "page": self.page, "limit": self.limit}


def page_params(
    page: Annotated[int, Query(ge=1, le=1_000_000, description="Page number (default: 1)")] = 1,
    limit: Annotated[
        int, Query(ge=1, le=100, description="Results per page (default: 20, max: 100)")
    ] = 20,
) -> PageParams:
    return PageParams(page=page, limit=limit)


@dataclass(frozen=True, slots=True)
class OffsetParams:
    limit: int
    offset: int


def offset_params(
    limit: Annotated[int, Query(ge=1, le=100, description="Results per page (default 20)")] = 20,
    offset: Annotated[int, Query(ge=0, le=10_000_000, description="Rows to skip")] = 0,
) -> OffsetParams:
    return OffsetParams(limit=limit, offset=offset)


PageDep = Annotated[PageParams, Depends(page_params)]
OffsetDep = Annotated[OffsetParams, Depends(offset_params)]
