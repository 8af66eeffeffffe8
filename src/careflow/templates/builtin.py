"""The templates careflow ships: one email and one SMS text per key a rule can name.

An organisation's own template of the same key and channel replaces a built-in for that
organisation only (``service.resolve_template``); deleting it brings the built-in back.
"""

from __future__ import annotations

from collections.abc import Mapping

from markupsafe import Markup

from careflow.templates.rendering import Channel, TemplateSource, html_document


def _builtin(
    key: str, channel: Channel, body: str, subject: str | None = None, html: str | None = None
) -> TemplateSource:
    return TemplateSource(
        key=key,
        channel=channel,
        subject=subject,
        body=body,
        built_in=True,
        html_body=html_document(Markup(html)) if html is not None else None,
    )


_GREETING = 'Hello {{ patient.first_name|default("there", true) }},'
_WHEN = "{{ appointment.starts_at|datetime(patient.timezone) }}"
# " on <local time>" when the appointment's start is known, nothing otherwise.
_ON_WHEN = "{% if appointment.starts_at %} on " + _WHEN + "{% endif %}"
_SIGNATURE = "Your care team"
_HTML_GREETING = f"<p>{_GREETING}</p>"
_HTML_SIGNATURE = f"<p>{_SIGNATURE}</p>"


def _link(url: str, label: str) -> str:
    """A link to ``url`` (a template expression) labelled ``label``; autoescaped like any value."""
    return f'<a href="{{{{ {url} }}}}">{label}</a>'


_BUILTINS: tuple[TemplateSource, ...] = (
    _builtin(
        "welcome_patient",
        "email",
        subject="Welcome{% if patient.first_name %}, {{ patient.first_name }}{% endif %}",
        body=(
            f"{_GREETING}\n\n"
            "Welcome! Your patient account is ready. You can now book appointments, "
            "complete your forms and message your care team online.\n\n"
            "If you have any questions, you can message your care team from your account.\n\n"
            "Your care team"
        ),
        html=(
            f"{_HTML_GREETING}\n"
            "<p>Welcome! Your patient account is ready. You can now book appointments,\n"
            "complete your forms and message your care team online.</p>\n"
            "<p>If you have any questions, you can message your care team from your\n"
            "account.</p>\n"
            f"{_HTML_SIGNATURE}"
        ),
    ),
    _builtin(
        "welcome_patient",
        "sms",
        body=(
            "Hi {{ patient.first_name|default('there', true) }}, welcome! "
            "Your patient account is ready to use."
        ),
    ),
    _builtin(
        "first_appointment_video_guide",
        "email",
        subject="Getting ready for your first video appointment",
        body=(
            f"{_GREETING}\n\n"
            f"Your first video appointment is coming up{_ON_WHEN}.\n\n"
            "A few minutes before it starts:\n"
            "- find a quiet, private room with good light;\n"
            "- use a phone, tablet or computer with a camera and microphone;\n"
            "- check your internet connection and allow camera and microphone access.\n"
            "{% if appointment.video_url %}\nJoin the call here: {{ appointment.video_url }}\n"
            "{% endif %}\n"
            "Your care team"
        ),
        html=(
            f"{_HTML_GREETING}\n"
            f"<p>Your first video appointment is coming up{_ON_WHEN}.</p>\n"
            "<p>A few minutes before it starts:</p>\n<ul>\n"
            "<li>find a quiet, private room with good light;</li>\n"
            "<li>use a phone, tablet or computer with a camera and microphone;</li>\n"
            "<li>check your internet connection and allow camera and microphone\n"
            "access.</li>\n</ul>\n"
            "{% if appointment.video_url %}"
            f"<p>{_link('appointment.video_url', 'Join the call')}</p>\n"
            "{% endif %}"
            f"{_HTML_SIGNATURE}"
        ),
    ),
    _builtin(
        "first_appointment_video_guide",
        "sms",
        body=(
            f"Your first video appointment is coming up{_ON_WHEN}. Join from a quiet room with "
            "camera and microphone ready."
            "{% if appointment.video_url %} Link: {{ appointment.video_url }}{% endif %}"
        ),
    ),
    _builtin(
        "appointment_reminder",
        "email",
        subject=f"Reminder: your appointment{_ON_WHEN}",
        body=(
            f"{_GREETING}\n\n"
            f"This is a reminder of your appointment{_ON_WHEN}."
            "{% if appointment.location %}\nLocation: {{ appointment.location }}{% endif %}"
            "{% if appointment.video_url %}\nJoin online: {{ appointment.video_url }}{% endif %}"
            "\n\nIf you can no longer attend, please let us know as soon as possible.\n\n"
            "Your care team"
        ),
        html=(
            f"{_HTML_GREETING}\n"
            f"<p>This is a reminder of your appointment{_ON_WHEN}.</p>\n"
            "{% if appointment.location %}"
            "<p>Location: {{ appointment.location }}</p>\n"
            "{% endif %}"
            "{% if appointment.video_url %}"
            f"<p>{_link('appointment.video_url', 'Join online')}</p>\n"
            "{% endif %}"
            "<p>If you can no longer attend, please let us know as soon as possible.</p>\n"
            f"{_HTML_SIGNATURE}"
        ),
    ),
    _builtin(
        "appointment_reminder",
        "sms",
        body=(
            f"Reminder: you have an appointment{_ON_WHEN}. Please let us know if you cannot attend."
        ),
    ),
    _builtin(
        "form_reminder",
        "email",
        subject="Please complete {{ form.name|default('your form', true) }}",
        body=(
            f"{_GREETING}\n\n"
            "Please complete {{ form.name|default('your form', true) }} "
            "before your next appointment."
            "{% if form.url %}\n\nOpen it here: {{ form.url }}{% endif %}"
            "\n\nYour care team"
        ),
        html=(
            f"{_HTML_GREETING}\n"
            "<p>Please complete {{ form.name|default('your form', true) }}\n"
            "before your next appointment.</p>\n"
            "{% if form.url %}"
            f"<p>{_link('form.url', 'Open the form')}</p>\n"
            "{% endif %}"
            f"{_HTML_SIGNATURE}"
        ),
    ),
    _builtin(
        "form_reminder",
        "sms",
        body=(
            "Please complete {{ form.name|default('your form', true) }} before your next "
            "appointment.{% if form.url %} {{ form.url }}{% endif %}"
        ),
    ),
    _builtin(
        "appointment_follow_up",
        "email",
        subject="How was your appointment?",
        body=(
            f"{_GREETING}\n\n"
            f"Thank you for your appointment{_ON_WHEN}. We hope it went well.\n\n"
            "If you have questions about your care or would like to book a follow-up, "
            "you can message your care team or book online from your account.\n\n"
            "Your care team"
        ),
        html=(
            f"{_HTML_GREETING}\n"
            f"<p>Thank you for your appointment{_ON_WHEN}. We hope it went well.</p>\n"
            "<p>If you have questions about your care or would like to book a follow-up,\n"
            "you can message your care team or book online from your account.</p>\n"
            f"{_HTML_SIGNATURE}"
        ),
    ),
    _builtin(
        "appointment_follow_up",
        "sms",
        body=(
            "Thank you for your appointment. Questions or a follow-up? Just reply or book online."
        ),
    ),
)

BUILTIN_TEMPLATES: Mapping[tuple[str, str], TemplateSource] = {
    (t.key, t.channel): t for t in _BUILTINS
}


def builtin_template(key: str, channel: str) -> TemplateSource | None:
    return BUILTIN_TEMPLATES.get((key, channel))
