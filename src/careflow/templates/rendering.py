"""Sandboxed rendering of email and SMS templates, and the check a template passes when saved.

Templates are written by organisation admins, so they are untrusted code. They run
in a Jinja2 sandbox narrowed further than Jinja's own: attribute access reaches only
the keys of the context's dicts, loop helpers and a short list of string methods, so
the classic escapes (``''.__class__.__mro__``, ``cycler.__init__.__globals__``,
``'{0.__class__}'.format``) have nothing to climb through.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal
from zoneinfo import ZoneInfo

import html_text
import lxml.etree
import lxml.html
from jinja2 import (
    ChainableUndefined,
    Environment,
    Template,
    TemplateError,
    TemplateSyntaxError,
    Undefined,
    nodes,
    pass_environment,
)
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from markupsafe import Markup, escape

Channel = Literal["email", "sms"]

# Bounds on what one render may produce, so a template cannot exhaust a worker's memory.
MAX_BODY_CHARS = 100_000
MAX_SUBJECT_CHARS = 998  # RFC 5322's line limit
MAX_REPEAT_CHARS = 10_000
MAX_EXPONENT = 1_000
# Loop iterations one render may run, all loops together: output size alone does not bound
# the CPU of nested loops that print nothing.
MAX_LOOP_ITERATIONS = 50_000

BUDGET_FILTER = "careflow_loop_budget"
_iterations_left: ContextVar[list[int]] = ContextVar("careflow_template_iterations")


def _budgeted(iterable: Any) -> Any:
    """Every ``{% for %}`` iterates through this: each item spends one unit of the budget."""
    left = _iterations_left.get(None)
    for item in iterable:
        if left is not None:
            left[0] -= 1
            if left[0] < 0:
                raise SecurityError(f"template loops ran more than {MAX_LOOP_ITERATIONS} times")
        yield item


class TemplateRenderError(Exception):
    """A template does not compile, or tried something the sandbox forbids."""


@dataclass(frozen=True, slots=True)
class TemplateSource:
    """A template's text as authored; ``organization_id`` is None for a built-in."""

    key: str
    channel: Channel
    subject: str | None
    body: str
    built_in: bool
    organization_id: int | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    # An email's HTML (Jinja2, autoescaped). An email template gives ``body``, this, or both;
    # an empty ``body`` means "the text of the HTML".
    html_body: str | None = None


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str | None
    body: str
    # An email's HTML alternative of ``body``; None for SMS.
    html: str | None = None


# Stand-in data for trying a template when it is saved, so sandbox violations that only
# show on a populated context are refused then. Failures that depend on a patient's real
# data can still surface at send time, as a ``TemplateRenderError`` on that one message.
SAMPLE_CONTEXT: dict[str, Any] = {
    "patient": {
        "id": 1,
        "first_name": "Alex",
        "last_name": "Example",
        "email": "alex@example.com",
        "phone": "+15550100",
        "timezone": "Europe/London",
        "tags": ["new"],
    },
    "appointment": {
        "id": 1,
        "type": "video",
        "starts_at": "2025-02-15T10:00:00Z",
        "ends_at": "2025-02-15T10:30:00Z",
        "location": "Main clinic",
        "video_url": "https://example.com/call",
    },
    "invoice": {"id": 1, "amount": 120, "currency": "EUR", "type": "session"},
    "form": {"id": 1, "name": "Consent form", "url": "https://example.com/form"},
}


# --- the sandbox -------------------------------------------------------------------------

_SAFE_STR_METHODS = frozenset(
    {
        "capitalize",
        "casefold",
        "endswith",
        "isdigit",
        "lower",
        "lstrip",
        "replace",
        "rstrip",
        "split",
        "startswith",
        "strip",
        "title",
        "upper",
    }
)


def _format_datetime(value: Any, timezone: Any = None, fmt: str = "%A %d %B %Y, %H:%M") -> str:
    """``{{ appointment.starts_at|datetime(patient.timezone) }}``: an ISO timestamp, local."""
    if value is None or isinstance(value, Undefined) or value == "":
        return ""
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    zone: Any = UTC
    if isinstance(timezone, str) and timezone:
        try:
            zone = ZoneInfo(timezone)
        except Exception:  # an unknown or malformed zone name shows the time in UTC
            zone = UTC
    local = parsed.astimezone(zone)
    label = getattr(zone, "key", "UTC")
    return f"{local.strftime(fmt[:100])} ({label})"


@pass_environment
def _attr_filter(environment: Environment, obj: Any, name: Any) -> Any:
    """``x|attr('name')`` is ``x.name``: Jinja's own probes the object with ``hasattr`` first."""
    return environment.getattr(obj, str(name))


class CareflowSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, with attribute access narrowed to data.

    Dicts are read by key only (``form.values`` is the form's ``values`` key, never
    ``dict.values``), and an unsafe access raises at once instead of rendering empty,
    so a bad template is refused when it is saved.
    """

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, *, autoescape: bool = False) -> None:
        super().__init__(autoescape=autoescape, undefined=ChainableUndefined)
        # Only what a message needs: no cycler/joiner/namespace/lipsum objects to climb.
        self.globals.clear()
        self.globals["range"] = ImmutableSandboxedEnvironment().globals["range"]
        self.filters["datetime"] = _format_datetime
        self.filters["attr"] = _attr_filter
        self.filters[BUDGET_FILTER] = _budgeted

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        # Route every loop's iterable through the iteration budget.
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(
                loop.iter, BUDGET_FILTER, [], [], None, None, lineno=loop.lineno
            )
        return tree

    # Types are checked with ``type(obj)``: ``isinstance`` would read ``obj.__class__``,
    # an attribute access on the very object being guarded.

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if attr.startswith("_"):
            return False
        if issubclass(type(obj), LoopContext):
            return super().is_safe_attribute(obj, attr, value)
        if issubclass(type(obj), str) and attr in _SAFE_STR_METHODS:
            return super().is_safe_attribute(obj, attr, value)
        return False

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        # The attribute is the author's own text; the value's type is careflow's internals
        # (``ChainableUndefined``, ``TemplateReference``) and stays out of the message.
        raise SecurityError(f"access to attribute {attribute!r} is not allowed")

    def getattr(self, obj: Any, attribute: str) -> Any:
        if issubclass(type(obj), Mapping):
            if attribute.startswith("__"):
                # Never data: refused like any other dunder, so the template is refused at
                # save instead of rendering an empty string that looks harmless.
                self.unsafe_undefined(obj, attribute)
            try:
                return obj[attribute]
            except (KeyError, TypeError):
                return self.undefined(obj=obj, name=attribute)
        if issubclass(type(obj), Undefined):
            # A missing variable renders empty however deep the path, but never its dunders.
            if attribute.startswith("_"):
                self.unsafe_undefined(obj, attribute)
            return self.undefined(obj=obj, name=attribute)
        # Decided before the attribute is read, so no property or descriptor ever runs,
        # and before Jinja's ``str.format`` wrapper, which would otherwise hand one out.
        if not self.is_safe_attribute(obj, attribute, None):
            self.unsafe_undefined(obj, attribute)
        try:
            return getattr(obj, attribute)
        except AttributeError:
            return self.undefined(obj=obj, name=attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        # No fallback from ``x['name']`` to an attribute: subscripts reach data only.
        try:
            return obj[argument]
        except (TypeError, LookupError):
            return self.undefined(obj=obj, name=argument)

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "*":
            for seq, times in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(times, int)
                    and len(seq) * times > MAX_REPEAT_CHARS
                ):
                    raise SecurityError("repetition result is too large")
            return operator.mul(left, right)
        if isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise SecurityError("exponent is too large")
        return operator.pow(left, right)


_env = CareflowSandbox()
# HTML: every value a template prints is escaped unless the author marks it ``|safe``.
_html_env = CareflowSandbox(autoescape=True)


@lru_cache(maxsize=2048)
def _compile(text: str, html: bool = False) -> Template:
    """Compiled once per distinct source text, so an edited template is recompiled on its own."""
    try:
        return (_html_env if html else _env).from_string(text)
    except TemplateSyntaxError as exc:
        raise TemplateRenderError(f"syntax error on line {exc.lineno}: {exc.message}") from None
    except SecurityError as exc:
        raise TemplateRenderError(f"not allowed in a template: {exc}") from None


def _render_text(text: str, context: Mapping[str, Any], limit: int, *, html: bool = False) -> str:
    template = _compile(text, html)
    out: list[str] = []
    size = 0
    budget = _iterations_left.set([MAX_LOOP_ITERATIONS])
    try:
        for chunk in template.generate(dict(context)):
            size += len(chunk)
            if size > limit:
                raise TemplateRenderError(f"rendered text is longer than {limit} characters")
            out.append(chunk)
    except TemplateRenderError:
        raise
    except SecurityError as exc:
        raise TemplateRenderError(f"not allowed in a template: {exc}") from None
    except TemplateError as exc:
        raise TemplateRenderError(f"template error: {exc.message or type(exc).__name__}") from None
    except Exception as exc:
        # Python's own messages may quote the data (``int('…')``): name the error, not the value.
        raise TemplateRenderError(f"template error: {type(exc).__name__}") from None
    finally:
        _iterations_left.reset(budget)
    return "".join(out)


def render(source: TemplateSource, context: Mapping[str, Any]) -> Rendered:
    """Render a template over an entity context; raises ``TemplateRenderError``."""
    subject = None
    if source.subject is not None:
        raw = _render_text(source.subject, context, MAX_SUBJECT_CHARS)
        # One line, always: a newline in a subject would be a header injection.
        subject = " ".join(raw.split())
    if source.channel != "email":
        return Rendered(subject=subject, body=_render_text(source.body, context, MAX_BODY_CHARS))
    html = None
    if source.html_body:
        html = _render_text(source.html_body, context, MAX_BODY_CHARS, html=True)
    if source.body:
        body = _render_text(source.body, context, MAX_BODY_CHARS)
    else:
        body = html_to_text(html or "")
    if html is None:
        html = text_to_html(body)
    return Rendered(subject=subject, body=body, html=html)


def text_to_html(text: str) -> str:
    """An email's HTML made from its text: escaped, blank-line paragraphs, line breaks kept."""
    paragraphs = [p for p in re.split(r"\n[ \t]*\n", text.strip()) if p.strip()]
    inner = "\n".join(
        f"<p>{escape(p).replace(chr(10), Markup('<br>' + chr(10)))}</p>" for p in paragraphs
    )
    return html_document(Markup(inner))


def html_document(inner: Markup) -> str:
    """A fragment of HTML as a whole document, as mail clients render it most alike."""
    return (
        '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n</head>\n'
        '<body style="font-family: sans-serif; line-height: 1.5">\n'
        f"{inner}\n</body>\n</html>\n"
    )


def html_to_text(html: str) -> str:
    """The text alternative of an HTML-only template: its text, a link's address after it."""
    if not html.strip():
        return ""
    try:
        tree = lxml.html.fromstring(html)
    except (lxml.etree.ParserError, ValueError):  # no element at all ("<!-- -->")
        return ""
    for link in tree.iter("a"):
        href = (link.get("href") or "").strip()
        label = link.text_content().strip()
        if href and not href.startswith("#") and href != label:
            link.tail = f" ({href}){link.tail or ''}"
    return str(html_text.extract_text(tree)) + "\n"


def check_source(
    channel: Channel, subject: str | None, body: str, html_body: str | None = None
) -> list[dict[str, str]]:
    """Problems with a template's text, as validation details; empty when it is usable."""
    details: list[dict[str, str]] = []
    parts: list[tuple[str, str | None, int, bool]] = [("body", body, MAX_BODY_CHARS, False)]
    if channel == "email":
        parts.insert(0, ("subject", subject, MAX_SUBJECT_CHARS, False))
        parts.append(("html_body", html_body, MAX_BODY_CHARS, True))
    for field, text, limit, html in parts:
        if text is None:
            continue
        try:
            _render_text(text, SAMPLE_CONTEXT, limit, html=html)
        except TemplateRenderError as exc:
            details.append({"field": field, "message": str(exc)})
    return details
