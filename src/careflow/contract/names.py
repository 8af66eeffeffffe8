"""What the modules of the API document's components share: the schema type and names."""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]


def camel(name: str) -> str:
    """``send_email`` / ``patient.onboarded`` as ``SendEmail`` / ``PatientOnboarded``."""
    return "".join(part.capitalize() for part in name.replace(".", "_").split("_"))
