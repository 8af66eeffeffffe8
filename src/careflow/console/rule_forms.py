"""The automation rule form: its fields generated from the trigger and action catalogs, the
values a browser posts read back into an API body, and the API's errors put beside fields.

Every input is named by the path the service's validation errors use
(``trigger_config.hours_before``, ``actions[1].template``), so a detail's ``field`` names the
input it belongs to. Values travel as the strings a form holds; ``payload()`` converts them
by each field's catalog type and leaves what does not convert as it is, so the service, not
the console, says what is wrong with it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from careflow.automations.catalog import ACTIONS, ACTIONS_BY_TYPE, TRIGGERS, TRIGGERS_BY_EVENT

#: The action type a new action slot starts as.
NEW_ACTION_TYPE = "send_email"
_ACTION_KEY = re.compile(r"^actions\[(\d+)\]\.(.+)$")
#: How many actions a posted form may hold (the catalog's own bound is checked by the API).
MAX_FORM_ACTIONS = 50


@dataclass(frozen=True, slots=True)
class Field:
    """One generated input: its catalog spec and the value it shows."""

    name: str  # the input's name, and the ``field`` of its validation errors
    label: str
    kind: str  # integer | boolean | string
    required: bool
    description: str
    enum: tuple[str, ...] | None
    minimum: int | None
    maximum: int | None
    default: Any
    value: str

    @property
    def dom_id(self) -> str:
        return "f-" + re.sub(r"[^A-Za-z0-9_-]", "-", self.name)

    @property
    def error_id(self) -> str:
        return self.name.replace(".", "-") + "-error"


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def config_fields(
    schema: Mapping[str, Mapping[str, Any]] | None, prefix: str, values: Mapping[str, str]
) -> list[Field]:
    """The inputs of one ``config_schema``, named ``<prefix>.<field>``."""
    fields = []
    for name, spec in (schema or {}).items():
        enum = spec.get("enum")
        fields.append(
            Field(
                name=f"{prefix}.{name}",
                label=name.replace("_", " ").capitalize(),
                kind=str(spec.get("type")),
                required=bool(spec.get("required")),
                description=str(spec.get("description", "")),
                enum=tuple(str(v) for v in enum) if enum else None,
                minimum=spec.get("min"),
                maximum=spec.get("max"),
                default=spec.get("default"),
                value=values.get(name, ""),
            )
        )
    return fields


def _convert(spec: Mapping[str, Any], raw: str) -> Any:
    kind = spec.get("type")
    if kind == "integer":
        try:
            return int(raw)
        except ValueError:
            return raw  # the API answers "must be an integer" beside the field
    if kind == "boolean":
        return {"true": True, "false": False}.get(raw, raw)
    return raw


def _config_payload(
    schema: Mapping[str, Mapping[str, Any]] | None, values: Mapping[str, str]
) -> dict[str, Any]:
    """Blank inputs are left out: a default applies, or the API says the field is required."""
    out: dict[str, Any] = {}
    for name, spec in (schema or {}).items():
        raw = values.get(name, "").strip()
        if raw:
            out[name] = _convert(spec, raw)
    return out


@dataclass
class ActionForm:
    type: str
    values: dict[str, str] = field(default_factory=dict)

    def fields(self, index: int) -> list[Field]:
        entry = ACTIONS_BY_TYPE.get(self.type)
        schema = entry["config_schema"] if entry else None
        return config_fields(schema, f"actions[{index}]", self.values)

    def payload(self) -> dict[str, Any]:
        entry = ACTIONS_BY_TYPE.get(self.type)
        schema = entry["config_schema"] if entry else None
        return {"type": self.type, **_config_payload(schema, self.values)}


@dataclass
class RuleForm:
    """A rule as the form holds it: strings, as typed."""

    name: str = ""
    description: str = ""
    enabled: bool = True
    trigger_event: str = TRIGGERS[0]["event"]
    trigger_values: dict[str, str] = field(default_factory=dict)
    conditions: str = "{}"
    actions: list[ActionForm] = field(default_factory=lambda: [ActionForm(NEW_ACTION_TYPE)])

    @classmethod
    def of_rule(cls, rule: Any) -> RuleForm:
        return cls(
            name=rule.name,
            description=rule.description or "",
            enabled=bool(rule.enabled),
            trigger_event=rule.trigger_event,
            trigger_values={k: _text(v) for k, v in (rule.trigger_config or {}).items()},
            conditions=json.dumps(rule.conditions or {}, indent=2, ensure_ascii=False),
            actions=[
                ActionForm(
                    str(a.get("type", "")),
                    {k: _text(v) for k, v in a.items() if k != "type"},
                )
                for a in (rule.actions or [])
                if isinstance(a, Mapping)
            ],
        )

    @classmethod
    def of_form(cls, form: Mapping[str, Any]) -> RuleForm:
        """What the browser posted (``form`` is the request's form data)."""
        trigger_event = str(form.get("trigger_event") or TRIGGERS[0]["event"])
        trigger = TRIGGERS_BY_EVENT.get(trigger_event)
        schema = trigger["config_schema"] if trigger else None
        trigger_values = {
            name: str(form.get(f"trigger_config.{name}", "")) for name in (schema or {})
        }
        found: dict[int, dict[str, str]] = {}
        for key, value in form.items():
            match = _ACTION_KEY.match(key)
            if match and int(match.group(1)) < MAX_FORM_ACTIONS:
                found.setdefault(int(match.group(1)), {})[match.group(2)] = str(value)
        actions = []
        for index in sorted(found):
            values = dict(found[index])
            kind = values.pop("type", "")
            actions.append(ActionForm(kind, values))
        return cls(
            name=str(form.get("name", "")),
            description=str(form.get("description", "")),
            enabled=form.get("enabled") == "true",
            trigger_event=trigger_event,
            trigger_values=trigger_values,
            conditions=str(form.get("conditions", "")),
            actions=actions,
        )

    @property
    def trigger(self) -> Mapping[str, Any] | None:
        return TRIGGERS_BY_EVENT.get(self.trigger_event)

    def trigger_fields(self) -> list[Field]:
        trigger = self.trigger
        schema = trigger["config_schema"] if trigger else None
        return config_fields(schema, "trigger_config", self.trigger_values)

    def payload(self) -> tuple[dict[str, Any], list[dict[str, str]]]:
        """The API body, and the problems the console finds itself (conditions that are not
        JSON: the rest of the body still goes to the API, so one answer names everything)."""
        trigger = self.trigger
        schema = trigger["config_schema"] if trigger else None
        body: dict[str, Any] = {
            "name": self.name,
            "description": self.description.strip() or None,
            "enabled": self.enabled,
            "trigger_event": self.trigger_event,
            "trigger_config": _config_payload(schema, self.trigger_values),
            "actions": [a.payload() for a in self.actions],
        }
        errors: list[dict[str, str]] = []
        text = self.conditions.strip()
        if not text:
            body["conditions"] = {}
        else:
            try:
                body["conditions"] = json.loads(text)
            except ValueError as exc:
                errors.append({"field": "conditions", "message": f"not valid JSON: {exc}"})
        return body, errors

    def field_names(self) -> set[str]:
        names = {"name", "description", "enabled", "trigger_event", "trigger_config"}
        names |= {"conditions", "actions"}
        names |= {f.name for f in self.trigger_fields()}
        for i, action in enumerate(self.actions):
            names |= {f"actions[{i}]", f"actions[{i}].type"}
            names |= {f.name for f in action.fields(i)}
        return names


def errors_by_field(details: Sequence[Mapping[str, Any]], known: set[str]) -> dict[str, str]:
    """Each API error detail under the input it belongs to: its own ``field`` if the form has
    such an input, else the nearest enclosing one (``conditions.appointment.type`` goes
    beside the conditions editor, naming its path); what has no input goes under ``_form``."""
    out: dict[str, list[str]] = {}
    for detail in details:
        where = str(detail.get("field", ""))
        message = str(detail.get("message", "invalid"))
        target = where
        while target and target not in known:
            cut = max(target.rfind("."), target.rfind("["))
            target = target[:cut] if cut > 0 else ""
        if not target:
            target = "_form"
        if target != where and where:
            message = f"{where}: {message}"
        out.setdefault(target, []).append(message)
    return {k: "; ".join(v) for k, v in out.items()}


def trigger_choices() -> list[tuple[str, str]]:
    return [(t["event"], t["description"]) for t in TRIGGERS]


def action_choices() -> list[tuple[str, str]]:
    return [(a["type"], a["description"]) for a in ACTIONS]
