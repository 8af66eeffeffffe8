"""Structured JSON logs. Log ids only: never names, emails, phone numbers, bodies or tokens."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from structlog.typing import EventDict, WrappedLogger

from careflow.config import Settings
from careflow.kit.context import current_request_id

_configured = False


def _add_request_id(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    request_id = current_request_id()
    if request_id and "request_id" not in event_dict:
        event_dict["request_id"] = request_id
    return event_dict


def _stderr_logger(*_args: Any) -> structlog.PrintLogger:
    # sys.stderr is looked up whenever a logger is made, not once at configuration: a
    # process (or a test capturing output) that redirects stderr later still gets the logs.
    return structlog.PrintLogger(file=sys.stderr)


def configure_logging(settings: Settings) -> None:
    global _configured
    if _configured:
        return
    _configured = True
    level = logging.getLevelName(settings.log_level.upper())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if settings.log_json
        else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _add_request_id,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            level if isinstance(level, int) else 20
        ),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
