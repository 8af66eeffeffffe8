"""A started app leaves its startup objects out of the collector's full passes."""

from __future__ import annotations

import gc

from fastapi import FastAPI


async def test_the_lifespan_freezes_the_startup_heap(app: FastAPI) -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        async with app.router.lifespan_context(app):
            assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
