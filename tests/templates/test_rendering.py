"""Sandboxed rendering: output, errors, the sandbox's refusals and the loop budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from careflow.templates.rendering import (
    MAX_BODY_CHARS,
    Channel,
    TemplateRenderError,
    TemplateSource,
    check_source,
    render,
)


def source(body: str, subject: str | None = None) -> TemplateSource:
    channel: Channel = "email" if subject is not None else "sms"
    return TemplateSource(key="t", channel=channel, subject=subject, body=body, built_in=False)


def render_or_error(body: str, context: dict[str, Any]) -> str:
    try:
        return render(source(body), context).body
    except TemplateRenderError as exc:
        return f"refused: {exc}"


class TestRender:
    def test_missing_variables_render_empty(self) -> None:
        rendered = render(source("[{{ patient.nickname }}|{{ nothing.at.all }}]"), {})
        assert rendered.body == "[|]"

    def test_the_subject_is_one_line(self) -> None:
        rendered = render(
            source("b", subject="Hi {{ patient.name }}"), {"patient": {"name": "A\r\nBcc: x"}}
        )
        assert rendered.subject == "Hi A Bcc: x"

    def test_dict_keys_win_over_dict_methods(self) -> None:
        context = {"form": {"values": "answers", "items": 3}}
        assert render(source("{{ form.values }}/{{ form.items }}"), context).body == "answers/3"

    def test_a_syntax_error_is_a_clear_render_error(self) -> None:
        with pytest.raises(TemplateRenderError, match="line 2") as failed:
            render(source("ok\n{% if %}"), {})
        assert failed.value.__cause__ is None
        assert failed.value.__suppress_context__

    def test_a_runtime_error_names_the_error_only(self) -> None:
        with pytest.raises(TemplateRenderError, match="ZeroDivisionError"):
            render(source("{{ 1 / 0 }}"), {})

    def test_a_changed_text_is_recompiled(self) -> None:
        assert render(source("one {{ x }}"), {"x": 1}).body == "one 1"
        assert render(source("two {{ x }}"), {"x": 1}).body == "two 1"

    @pytest.mark.parametrize(
        "body",
        [
            "{{ 'a' * 100000000 }}",
            "{{ 10 ** 100000000 }}",
            "{% for i in range(100000000) %}x{% endfor %}",
            "{% for i in range(90000) %}{% for j in range(90000) %}xx{% endfor %}{% endfor %}",
        ],
    )
    def test_oversized_output_is_refused(self, body: str) -> None:
        with pytest.raises(TemplateRenderError):
            render(source(body), {})

    def test_output_just_under_the_cap_renders(self) -> None:
        body = "{% for i in range(" + str(MAX_BODY_CHARS // 10) + ") %}0123456789{% endfor %}"
        assert len(render(source(body), {}).body) == MAX_BODY_CHARS


class Spy:
    """Records every attribute the template engine reads from it."""

    def __init__(self) -> None:
        object.__setattr__(self, "accessed", [])

    def __getattribute__(self, name: str) -> Any:
        if name != "accessed":
            object.__getattribute__(self, "accessed").append(name)
        return object.__getattribute__(self, name)


ESCAPES = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.system('touch MARKER') }}",
    "{{ lipsum.__globals__['os'].popen('touch MARKER').read() }}",
    "{{ joiner.__init__.__globals__.os.popen('touch MARKER') }}",
    "{{ namespace.__init__.__globals__.os.system('touch MARKER') }}",
    "{{ self._TemplateReference__context.cycler.__init__.__globals__.os }}",
    "{{ 'x'|attr('format') }}",
    "{{ 'x'|attr('__class__') }}",
    "{{ '{0.__class__.__init__.__globals__}'.format(patient) }}",
    "{{ ''.format_map }}",
    "{{ patient['__class__']['__base__'].__subclasses__() }}",
    "{{ patient.tags.append('hacked') }}",
    "{% set x = patient.update({'first_name': 'hacked'}) %}{{ patient.first_name }}",
    "{{ range.__self__ }}",
    "{% include '/etc/passwd' %}",
    "{% import 'os' as os %}",
]


class TestSandbox:
    @pytest.mark.parametrize("payload", ESCAPES)
    def test_escapes_fail_safely(
        self, payload: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        context = {"patient": {"first_name": "Alex", "tags": ["new"]}}

        output = render_or_error(payload.replace("MARKER", str(tmp_path / "pwned")), context)

        assert not (tmp_path / "pwned").exists()
        assert "hacked" not in output
        assert context == {"patient": {"first_name": "Alex", "tags": ["new"]}}
        if not output.startswith("refused: "):
            # Rendered without failing: then it rendered nothing of Python's internals.
            assert output.strip() in ("", "Alex"), output

    @pytest.mark.parametrize(
        "payload",
        [
            "{{ spy.__class__ }}",
            "{{ spy.__dict__ }}",
            "{{ spy.accessed }}",
            "{{ spy.secret }}",
            "{{ spy|attr('secret') }}",
            "{{ spy['secret'] }}",
        ],
    )
    def test_no_attribute_of_a_context_object_is_read(self, payload: str) -> None:
        spy = Spy()
        render_or_error(payload, {"spy": spy})
        assert spy.accessed == []

    @pytest.mark.parametrize("payload", ["{{ ''.__class__ }}", "{{ 'x'|attr('format') }}"])
    def test_check_source_reports_a_sandbox_violation(self, payload: str) -> None:
        details = check_source("sms", None, payload)
        assert [d["field"] for d in details] == ["body"]
        assert "not allowed" in details[0]["message"]


class TestLoopBudget:
    def test_ordinary_loops_render(self) -> None:
        body = "{% for t in patient.tags %}{{ loop.index }}:{{ t }} {% endfor %}"
        assert render(source(body), {"patient": {"tags": ["a", "b"]}}).body == "1:a 2:b "

    def test_the_budget_spans_every_loop_of_one_render(self) -> None:
        body = "{% for i in range(300) %}{% for j in range(300) %}{% endfor %}{% endfor %}"
        with pytest.raises(TemplateRenderError, match="loops ran more than"):
            render(source(body), {})

    def test_each_render_gets_a_fresh_budget(self) -> None:
        body = "{% for i in range(40000) %}{% endfor %}done"
        assert render(source(body), {}).body == "done"
        assert render(source(body), {}).body == "done"
