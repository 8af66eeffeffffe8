"""Every model, imported once so that ``Base.metadata`` is complete (Alembic, tests)."""

from careflow.audit.models import AuditEntry
from careflow.automations.models import AutomationRule
from careflow.console.models import ConsoleTicket
from careflow.db import Base
from careflow.entities.models import Entity
from careflow.events.models import Event, PatientMilestone
from careflow.executions.models import Execution, ExecutionAction
from careflow.forms.models import Form
from careflow.installation.models import Installation
from careflow.jobs.models import Job
from careflow.kit.listcounts import ListCount, ListCountDelta
from careflow.kit.models import IdempotencyKey, RuleRevision
from careflow.messages.models import Message
from careflow.organizations.models import OrganizationSettings, OrganizationSmsNumber
from careflow.pathways.models import Episode, EpisodeEvent, PathwayConfig, PathwayRule
from careflow.patients.models import PatientOptOut, SmsOptOut
from careflow.ratelimits.models import RateLimitBucket
from careflow.segments.models import SegmentMember
from careflow.templates.models import Template

__all__ = [
    "AuditEntry",
    "AutomationRule",
    "Base",
    "ConsoleTicket",
    "Entity",
    "Episode",
    "EpisodeEvent",
    "Event",
    "Execution",
    "ExecutionAction",
    "Form",
    "IdempotencyKey",
    "Installation",
    "Job",
    "ListCount",
    "ListCountDelta",
    "Message",
    "OrganizationSettings",
    "OrganizationSmsNumber",
    "PathwayConfig",
    "PathwayRule",
    "PatientMilestone",
    "PatientOptOut",
    "RateLimitBucket",
    "RuleRevision",
    "SegmentMember",
    "SmsOptOut",
    "Template",
]
