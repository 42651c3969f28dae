"""Host health: the fleet's probes (EC2 status checks, the DCV endpoint) and the agent's word."""

from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import F
from django.utils import timezone

from elephant.prepared import PreparedUpdate
from fleet import aws, probes, selectors
from fleet.models import BOOTING_HOST_STATES, Host, HostEventReason, HostState
from fleet.services.launch import meeting_reconcile
from fleet.services.planning import boot_samples_record, health_timeout_of
from fleet.services.transitions import host_fields_update, hosts_transition
from meetings.models import Meeting
from meetings.policy import status_implied


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


def host_attested(host: Host) -> bool:
    """Whether the host proved it is configured (``Host.attested_at``, set by ``fleet.attest``)."""
    return host.attested_at is not None


def hosts_health_check(*, hosts: list[Host], now: datetime | None = None) -> HealthResult:
    """Check hosts at once and record the outcome with bulk updates (a constant number of queries);
    returns the meetings to reconcile.

    A host is healthy when its DCV endpoint answers (probes concurrent) and it is attested; EC2's
    status checks (which run about once a minute and start "initializing") are then no gate. Only a
    host that answers but has not attested needs them to pass (batched, 100 ids per call, asked only
    for those hosts). The agent's HEALTHY report (through DynamoDB) counts alone.
    """
    now = now or timezone.now()
    result = HealthResult()
    to_check = [h for h in hosts if h.state == HostState.DNS_WRITTEN]
    answered = probes.dcv_answers_many(h.dcv_link for h in to_check if h.dcv_link)
    dcv_ok = {h.pk: answered.get(h.dcv_link, False) for h in to_check}
    need_checks = [h for h in to_check if dcv_ok[h.pk] and not host_attested(h) and h.agent_healthy_at is None]
    status_ok = aws.instances_status_ok(h.instance_id for h in need_checks if h.instance_id) if need_checks else set()
    checked = {h.pk for h in need_checks}
    passing, failing = [], []  # each host's probe outcome: (set, where), failures counted in the second
    for host in to_check:
        ec2_ok = (host.instance_id in status_ok) if host.pk in checked else None
        healthy = dcv_ok[host.pk] and (host_attested(host) or ec2_ok)
        if healthy or host.agent_healthy_at is not None:
            result.healthy.append(host.pk)
        update = ({"checked_at": now, "ec2_checks_ok": ec2_ok, "dcv_answered": dcv_ok[host.pk]}, {"pk": host.pk})
        (failing if not dcv_ok[host.pk] or ec2_ok is False else passing).append(update)
    host_fields_update.many(passing)
    _host_probe_failed.many(failing)
    _host_first_answer.many(
        ({"dcv_answered_at": now}, {"pk": h.pk}) for h in to_check if dcv_ok[h.pk] and h.dcv_answered_at is None
    )
    if result.healthy:
        hosts_transition(
            pks=result.healthy,
            allowed_from={HostState.DNS_WRITTEN},
            to_state=HostState.HEALTHY,
            reason=HostEventReason.HEALTH_PASSED,
            fields={"healthy_at": now},
            now=now,
        )
        # The boot history the learned lead is fitted from (fleet.services.planning).
        healthy = set(result.healthy)
        boot_samples_record(hosts=[h for h in to_check if h.pk in healthy], now=now, censored=False)
    timeouts = health_timeout_of(h for h in hosts if h.state in BOOTING_HOST_STATES)
    lagging = _meetings_lagging(hosts)
    for host in hosts:
        newly_healthy = host.pk in result.healthy
        waiting = host.meeting_id in lagging
        timed_out = host.state in BOOTING_HOST_STATES and host.started_at <= now - timeouts[host.pk]
        # A host without an instance whose launch went quiet (its worker died; a launch backing off after
        # throttling touches it at every try and is left to its own retries, as in the launch sweep).
        pending = (
            host.state in (HostState.PENDING, HostState.LAUNCHING)
            and not host.instance_id
            and host.updated_at <= now - selectors.LAUNCH_STUCK_AFTER
        )
        if newly_healthy or waiting or timed_out or pending:
            result.meeting_ids.add(host.meeting_id)
    return result


# Each sweep's writes of the probes' outcome, a statement per host sent as one batch per shape (the passing
# ones through ``host_fields_update``): compiled once (elephant.prepared), where a bulk update per outcome
# was built every sweep.
_host_probe_failed = PreparedUpdate(
    lambda *, pk: Host.objects.filter(pk=pk), fixed={"probe_failures": F("probe_failures") + 1}
)
_host_first_answer = PreparedUpdate(lambda *, pk: Host.objects.filter(pk=pk, dcv_answered_at__isnull=True))


def _meetings_lagging(hosts: list[Host]) -> set[str]:
    """Meetings whose status is behind what their current hosts show (a missed progress step:
    ``host_running`` and the health transition move them on themselves). Only these, not every
    waiting meeting, are reconciled each sweep: 2,000 booting meetings are not 2,000 tasks a minute."""
    by_meeting: dict[str, dict[str, Host]] = {}
    for host in hosts:
        current = by_meeting.setdefault(host.meeting_id, {}).get(host.role)
        if current is None or host.generation > current.generation:
            by_meeting[host.meeting_id][host.role] = host
    lagging = set()
    for meeting_id, current in by_meeting.items():
        status = next(iter(current.values())).meeting.status
        implied = status_implied(status=status, hosts={role: h.readiness() for role, h in current.items()})
        if implied is not None and status in implied.allowed_from:
            lagging.add(meeting_id)
    return lagging


def fleet_health_sweep(*, now: datetime | None = None) -> HealthResult:
    return hosts_health_check(hosts=selectors.hosts_for_health_check(), now=now)


def meeting_health_check(*, meeting: Meeting, now: datetime | None = None) -> HealthResult:
    """Re-run the health check of one meeting now (the staff action), then reconcile it."""
    result = hosts_health_check(hosts=selectors.hosts_for_health_check(meeting_id=meeting.pk), now=now)
    meeting.refresh_from_db()
    meeting_reconcile(meeting=meeting, now=now)
    return result
