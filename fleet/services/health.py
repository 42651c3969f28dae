"""Host health: the fleet's probes (EC2 status checks, the DCV endpoint) and the agent's word."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from fleet import aws, probes, selectors
from fleet.models import BOOTING_HOST_STATES, Host, HostEventReason, HostState
from fleet.services.launch import meeting_reconcile
from fleet.services.transitions import hosts_transition
from meetings.models import Meeting
from meetings.policy import PRE_HEALTHY_STATUSES


def host_agent_healthy(*, meeting_id: str, instance_id: str, now: datetime | None = None) -> bool:
    """The host's agent reported HEALTHY (through DynamoDB): record it once. True if newly recorded.

    The meeting's status is left to the health check, which combines the agent's word with
    its own probes.
    """
    return bool(
        Host.objects.filter(meeting_id=meeting_id, instance_id=instance_id, agent_healthy_at__isnull=True).update(
            agent_healthy_at=now or timezone.now()
        )
    )


@dataclass
class HealthResult:
    healthy: list[int] = field(default_factory=list)
    meeting_ids: set[str] = field(default_factory=set)


def hosts_health_check(*, hosts: list[Host], now: datetime | None = None) -> HealthResult:
    """Check hosts at once: EC2 status checks (batched) and DCV probes (concurrent), or the agent's word.

    Records the outcome with bulk updates (a constant number of queries) and returns the
    meetings to reconcile.
    """
    now = now or timezone.now()
    result = HealthResult()
    to_check = [h for h in hosts if h.state == HostState.DNS_WRITTEN]
    status_ok = aws.instances_status_ok(h.instance_id for h in to_check if h.instance_id)
    answered = probes.dcv_answers_many(h.dcv_link for h in to_check if h.dcv_link)
    groups: dict[tuple[bool, bool], list[int]] = {}
    for host in to_check:
        checks = (host.instance_id in status_ok, answered.get(host.dcv_link, False))
        if all(checks) or host.agent_healthy_at is not None:
            result.healthy.append(host.pk)
        groups.setdefault(checks, []).append(host.pk)
    for (ec2_ok, dcv_ok), pks in groups.items():
        update = {"checked_at": now, "ec2_checks_ok": ec2_ok, "dcv_answered": dcv_ok}
        if not (ec2_ok and dcv_ok):
            update["probe_failures"] = F("probe_failures") + 1
        Host.objects.filter(pk__in=pks).update(**update)
    if result.healthy:
        hosts_transition(
            where=Q(pk__in=result.healthy),
            allowed_from={HostState.DNS_WRITTEN},
            to_state=HostState.HEALTHY,
            reason=HostEventReason.HEALTH_PASSED,
            fields={"healthy_at": now},
            now=now,
        )
    deadline = now - timedelta(minutes=settings.ELEPHANT_HEALTH_TIMEOUT)
    for host in hosts:
        newly_healthy = host.pk in result.healthy
        waiting = host.meeting.status in PRE_HEALTHY_STATUSES
        timed_out = host.state in BOOTING_HOST_STATES and host.started_at <= deadline
        pending = host.state in (HostState.PENDING, HostState.LAUNCHING) and not host.instance_id
        if newly_healthy or waiting or timed_out or pending:
            result.meeting_ids.add(host.meeting_id)
    return result


def fleet_health_sweep(*, now: datetime | None = None) -> HealthResult:
    return hosts_health_check(hosts=selectors.hosts_for_health_check(), now=now)


def meeting_health_check(*, meeting: Meeting, now: datetime | None = None) -> HealthResult:
    """Re-run the health check of one meeting now (the staff action), then reconcile it."""
    result = hosts_health_check(hosts=selectors.hosts_for_health_check(meeting_id=meeting.pk), now=now)
    meeting.refresh_from_db()
    meeting_reconcile(meeting=meeting, now=now)
    return result
