"""`careflow demo`: the whole mission end to end on the embedded default.

Creates the seeds' example rules in a demo organisation, sends sample events, lets the
worker finish the work (moving a demo clock past delays instead of waiting), and prints
the executions, messages, forms, gate states and episodes produced.
"""

from __future__ import annotations

import secrets
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select

from careflow.app import create_app
from careflow.auth import issue_token
from careflow.config import Settings
from careflow.examples import (
    FIRST_VIDEO,
    GDPR_WELCOME,
    PATIENT,
    PRE_APPOINTMENT_REMINDER,
    VIP_BOOKINGS,
)
from careflow.jobs.models import Job, JobStatus
from careflow.kit.clock import FrozenClock

ORG = 1
RULES: list[dict[str, Any]] = [
    GDPR_WELCOME,
    FIRST_VIDEO,
    PRE_APPOINTMENT_REMINDER,
    {
        "name": "In-person first visit (does not match video bookings)",
        "enabled": True,
        "trigger_event": "appointment.first_booked",
        "conditions": {"appointment.type": "in_person"},
        "actions": [{"type": "update_segment", "segment_id": 7, "action": "add"}],
    },
]

PATHWAY_RULES: list[dict[str, Any]] = [VIP_BOOKINGS]


def _events(clock: FrozenClock) -> list[dict[str, Any]]:
    starts = (clock.now() + timedelta(days=3)).replace(hour=9, minute=0, second=0, microsecond=0)
    appointment = {
        "id": 50,
        "patient_id": PATIENT["id"],
        "type": "video",
        "appointment_type_id": "type_vip_consultation",
        "starts_at": starts.isoformat().replace("+00:00", "Z"),
        "ends_at": (starts + timedelta(minutes=30)).isoformat().replace("+00:00", "Z"),
    }
    return [
        {"event_id": "evt-demo-1", "type": "patient.onboarded", "data": {"patient": PATIENT}},
        {
            "event_id": "evt-demo-2",
            "type": "appointment.booked",
            "data": {"appointment": appointment, "patient": PATIENT},
        },
        # Delivered twice by the producer: careflow answers 200 and runs nothing again.
        {
            "event_id": "evt-demo-2",
            "type": "appointment.booked",
            "data": {"appointment": appointment, "patient": PATIENT},
        },
    ]


async def _settle(app: Any, clock: FrozenClock, console: Console, until: Any) -> int:
    """Run due jobs; when only future ones are left, move the demo clock to the next one."""
    from careflow.jobs.worker import Worker

    worker = Worker(app.state.sessionmaker, app.state.settings, clock, services=app.state.services)
    ran = 0
    for _ in range(1000):
        ran += await worker.run_until_idle()
        async with app.state.sessionmaker() as session:
            next_run = await session.scalar(
                select(func.min(Job.run_at)).where(Job.status == JobStatus.QUEUED)
            )
        if next_run is None or next_run > until:
            return ran
        console.print(
            f"[dim]… moving the demo clock forward to {next_run:%Y-%m-%d %H:%M} UTC[/dim]"
        )
        clock.set(max(next_run, clock.now()))
    return ran


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold cyan")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row])
    return table


async def run_demo(database: str | None = None) -> None:
    console = Console()
    if not console.is_terminal:
        console = Console(width=140)  # piped: wide enough that the tables stay readable
    path = (
        Path(database) if database else Path(tempfile.mkdtemp(prefix="careflow-demo-")) / "demo.db"
    )
    settings = Settings(
        env="test",
        database_url=f"sqlite+aiosqlite:///{path}",
        jwt_secret=secrets.token_hex(32),
        log_level="WARNING",
    )
    clock = FrozenClock()
    app = create_app(settings, clock=clock)
    admin = {
        "Authorization": "Bearer " + issue_token(settings, org_id=ORG, role="admin", sub="usr_demo")
    }
    service = {
        "Authorization": "Bearer "
        + issue_token(settings, org_id=ORG, role="service", sub="svc_host")
    }

    console.rule("[bold]careflow demo")
    console.print(f"database: {path}  (emails and SMS go to careflow's message log)")
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://careflow.demo") as http:
            for rule in RULES:
                r = await http.post("/v1/automations/rules", json=rule, headers=admin)
                r.raise_for_status()
            for prule in PATHWAY_RULES:
                r = await http.post("/v1/pathway-rules", json=prule, headers=admin)
                r.raise_for_status()
            rules = (await http.get("/v1/automations/rules", headers=admin)).json()["data"]
            console.print(
                _table(
                    "Automation rules",
                    ["id", "name", "trigger", "actions"],
                    [[r["id"], r["name"], r["trigger_event"], len(r["actions"])] for r in rules],
                )
            )

            rows = []
            for event in _events(clock):
                r = await http.post("/v1/events", json=event, headers=service)
                rows.append(
                    [event["event_id"], event["type"], r.status_code, r.json()["data"]["status"]]
                )
            console.print(_table("Events sent", ["event_id", "type", "HTTP", "status"], rows))

            ran = await _settle(app, clock, console, until=clock.now() + timedelta(days=7))
            console.print(f"[green]worker ran {ran} jobs[/green]")

            gate = (await http.get(f"/v1/patients/{PATIENT['id']}/gate", headers=admin)).json()[
                "data"
            ]
            console.print(
                f"gate for patient {gate['patient_id']}: "
                + ("[red]blocked[/red]" if gate["blocked"] else "[green]open[/green]")
                + f" ({len(gate['pending_forms'])} pending forms)"
            )
            for form in gate["pending_forms"]:
                r = await http.post(f"/v1/forms/{form['id']}/complete", headers=service)
                r.raise_for_status()
            await _settle(app, clock, console, until=clock.now())
            gate = (await http.get(f"/v1/patients/{PATIENT['id']}/gate", headers=admin)).json()[
                "data"
            ]
            console.print(
                "after the patient signs every form, the gate is "
                + ("[red]blocked[/red]" if gate["blocked"] else "[green]open[/green]")
            )

            executions = (
                await http.get("/v1/automations/executions?limit=100", headers=admin)
            ).json()["data"]
            console.print(
                _table(
                    "Executions",
                    ["id", "rule", "trigger", "entity", "status", "actions"],
                    [
                        [
                            e["id"],
                            e["automation_rule_name"],
                            e["trigger_event"],
                            f"{e['trigger_entity_type']} {e['trigger_entity_id']}",
                            e["status"],
                            ", ".join(
                                f"{a['action']}:{a['status']}" for a in e["actions_executed"]
                            ),
                        ]
                        for e in reversed(executions)
                    ],
                )
            )
            messages = (await http.get("/v1/messages?limit=100", headers=admin)).json()["data"]
            console.print(
                _table(
                    "Messages",
                    ["id", "channel", "template", "status", "execution"],
                    [
                        [m["id"], m["channel"], m["template"], m["status"], m["execution_id"]]
                        for m in reversed(messages)
                    ],
                )
            )
            forms = (
                await http.get(f"/v1/forms?patient_id={PATIENT['id']}&limit=100", headers=admin)
            ).json()["data"]
            console.print(
                _table(
                    "Forms",
                    ["id", "template", "blocking", "status", "execution"],
                    [
                        [
                            f["id"],
                            f["form_template_id"],
                            f["blocking"],
                            f["status"],
                            f["execution_id"],
                        ]
                        for f in reversed(forms)
                    ],
                )
            )
            episodes = (await http.get("/v1/episodes?limit=100", headers=admin)).json()["data"]
            console.print(
                _table(
                    "Episodes",
                    ["id", "patient", "journey", "status", "priority", "assignee", "visibility"],
                    [
                        [
                            e["id"],
                            e["patient_id"],
                            e["journey_type"],
                            e["status"],
                            e["priority"],
                            e["assignee"],
                            e["inbox_visibility"],
                        ]
                        for e in reversed(episodes)
                    ],
                )
            )
    console.rule("[bold]done")
