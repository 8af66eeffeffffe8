"""An email's two parts: the HTML rendered with every value escaped, and each part made from
the other when a template gives only one."""

from __future__ import annotations

from careflow.templates.builtin import BUILTIN_TEMPLATES
from careflow.templates.rendering import SAMPLE_CONTEXT, TemplateSource, render

CONTEXT = {"patient": {"first_name": "<i>Zoë</i> & 'Bo'"}, "form": {"url": 'https://f/"x"'}}


def email(body: str, html_body: str | None) -> TemplateSource:
    return TemplateSource(
        key="k", channel="email", subject="Hi", body=body, built_in=False, html_body=html_body
    )


class TestHtmlParts:
    def test_values_are_escaped_in_html_and_left_as_they_are_in_text(self) -> None:
        rendered = render(
            email(
                "Hi {{ patient.first_name }}",
                '<p>Hi {{ patient.first_name }}</p><a href="{{ form.url }}">form</a>',
            ),
            CONTEXT,
        )
        assert rendered.body == "Hi <i>Zoë</i> & 'Bo'"
        assert rendered.html == (
            "<p>Hi &lt;i&gt;Zoë&lt;/i&gt; &amp; &#39;Bo&#39;</p>"
            '<a href="https://f/&#34;x&#34;">form</a>'
        )

    def test_a_text_only_template_gets_escaped_paragraphs(self) -> None:
        rendered = render(
            email("Hi {{ patient.first_name }},\n\nline one\nline two\n", None), CONTEXT
        )
        assert rendered.html is not None
        assert (
            "<p>Hi &lt;i&gt;Zoë&lt;/i&gt; &amp; &#39;Bo&#39;,</p>\n<p>line one<br>\nline two</p>"
            in (rendered.html)
        )

    def test_an_html_only_template_gets_its_text_with_link_addresses(self) -> None:
        rendered = render(
            email(
                "", '<h1>Hi {{ patient.first_name }}</h1><p><a href="{{ form.url }}">Open</a></p>'
            ),
            CONTEXT,
        )
        assert rendered.body == "Hi <i>Zoë</i> & 'Bo'\n\nOpen (https://f/\"x\")\n"

    def test_sms_has_no_html(self) -> None:
        source = BUILTIN_TEMPLATES[("welcome_patient", "sms")]
        assert render(source, SAMPLE_CONTEXT).html is None

    def test_every_builtin_email_has_its_own_html_and_asks_for_no_reply(self) -> None:
        for (key, channel), source in BUILTIN_TEMPLATES.items():
            if channel != "email":
                continue
            assert source.html_body is not None, key
            rendered = render(source, SAMPLE_CONTEXT)
            assert rendered.html is not None and rendered.html.startswith("<!DOCTYPE html>")
            assert "reply" not in rendered.body.lower(), key
            assert "reply" not in rendered.html.lower(), key
