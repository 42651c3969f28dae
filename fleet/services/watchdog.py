"""The watchdog: follows every watched instance with batched DescribeInstances and hands on
what changed (an instance running with its address, one gone outside Elephant)."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from fleet import aws, selectors
from fleet.models import LIVE_HOST_STATES, Host, HostEventReason, HostState
from fleet.services.dns import FleetConfigError, host_record_write
from fleet.services.launch import host_retire, meeting_progress
from fleet.services.termination import meeting_fail
from fleet.services.transitions import host_transition, hosts_transition
from meetings.models import ACTIVE_STATUSES, EventReason, TerminationReason
from meetings.services import meeting_record_change

EC2_GONE_STATES = frozenset({"shutting-down", "terminated", "stopping", "stopped"})
# How long after launch an instance id EC2 denies is taken as gone rather than not yet visible.
INVISIBLE_GRACE = timedelta(minutes=5)


@dataclass
class WatchdogResult:
    running: list[tuple[int, str, str]] = field(default_factory=list)  # (host id, address, zone)
    lost: list[tuple[int, str]] = field(default_factory=list)  # (host id, EC2 state)
    terminated: int = 0


def fleet_watchdog_sweep(*, now: datetime | None = None) -> WatchdogResult:
    """Follow every watched host with batched DescribeInstances (one call per 1,000 hosts)."""
    now = now or timezone.now()
    result = WatchdogResult()
    watched = selectors.hosts_watched()
    if not watched:
        return result
    seen, unknown = aws.instances_describe(instance_id for _, instance_id, _, _ in watched)
    settled = now - INVISIBLE_GRACE
    gone_terminating = []
    for pk, instance_id, state, launched_at in watched:
        instance = seen.get(instance_id)
        if instance is None:
            # EC2 forgets terminated instances after about an hour, and is eventually
            # consistent right after RunInstances: only an id it denies long after launch is gone.
            if instance_id in unknown and (launched_at is None or launched_at <= settled):
                if state == HostState.TERMINATING:
                    gone_terminating.append(pk)
                else:
                    result.lost.append((pk, "not found"))
            continue
        if state == HostState.TERMINATING:
            if instance.state in ("shutting-down", "terminated"):
                gone_terminating.append(pk)
        elif instance.state in EC2_GONE_STATES:
            result.lost.append((pk, instance.state))
        elif state in (HostState.BOOTING, HostState.RUNNING) and instance.state == "running" and instance.address:
            result.running.append((pk, instance.address, instance.availability_zone))
    if gone_terminating:
        moved = hosts_transition(
            where=Q(pk__in=gone_terminating),
            allowed_from={HostState.TERMINATING},
            to_state=HostState.TERMINATED,
            reason=HostEventReason.TERMINATED,
            fields={"terminated_at": now},
            now=now,
        )
        result.terminated = len(moved)
    return result


def host_running(*, host_id: int, address: str, availability_zone: str = "") -> bool:
    """The instance runs with an address (-> RUNNING): write its DNS record and DCV link (-> DNS_WRITTEN).

    A host left RUNNING (Route 53 did not answer) is handed here again by the next watchdog sweep.
    """
    host = Host.objects.select_related("meeting").filter(pk=host_id).first()
    if host is None or host.state not in (HostState.BOOTING, HostState.RUNNING):
        return False
    meeting = host.meeting
    if meeting.status not in ACTIVE_STATUSES:
        return False
    zone = availability_zone or host.availability_zone
    if host.state == HostState.BOOTING and not host_transition(
        host=host,
        to_state=HostState.RUNNING,
        allowed_from={HostState.BOOTING},
        reason=HostEventReason.INSTANCE_RUNNING,
        detail=address,
        fields={"public_address": address, "availability_zone": zone, "running_at": timezone.now()},
    ):
        return False
    try:
        link = host_record_write(host=host, address=address)
    except (FleetConfigError, aws.AwsConfigError) as exc:
        meeting_fail(meeting=meeting, reason=TerminationReason.LAUNCH_FAILED, error=str(exc))
        return False
    with transaction.atomic():
        written = host_transition(
            host=host,
            to_state=HostState.DNS_WRITTEN,
            allowed_from={HostState.RUNNING},
            reason=HostEventReason.LINK_WRITTEN,
            detail=link,
            fields={"public_address": address, "availability_zone": zone, "dcv_link": link},
        )
        if written:
            meeting_record_change(meeting=meeting, reason=EventReason.HOST_LINK, detail=f"{host.role}: {link}")
    meeting.refresh_from_db()
    meeting_progress(meeting=meeting)
    return written


def host_lost(*, host_id: int, ec2_state: str) -> bool:
    """The instance went away without Elephant asking: replace it once, else fail the meeting."""
    host = Host.objects.filter(pk=host_id).first()
    if host is None or host.state not in LIVE_HOST_STATES:
        return False
    error = f"instance {host.instance_id} went {ec2_state} outside Elephant"
    return host_retire(host=host, state=HostState.FAILED, reason=TerminationReason.HOST_LOST, error=error)
