"""The watchdog: follows every watched instance with batched DescribeInstances and hands on
what changed (an instance running with its address, one gone outside Elephant), and writes the
running hosts' DNS records in one Route 53 change batch per sweep."""

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from elephant.prepared import PreparedRead
from fleet import aws, selectors
from fleet.models import LIVE_HOST_STATES, Host, HostEventReason, HostState
from fleet.services.dns import FleetConfigError, dcv_link_build
from fleet.services.launch import host_retire, meeting_progress
from fleet.services.termination import meeting_fail
from fleet.services.transitions import host_fields_update, host_transition, hosts_terminated, hosts_transition
from meetings.models import ACTIVE_STATUSES, EventReason, TerminationReason
from meetings.selectors import meeting_status_refresh
from meetings.services import meeting_record_change

logger = logging.getLogger(__name__)

EC2_GONE_STATES = frozenset({"shutting-down", "terminated", "stopping", "stopped"})
# How long after launch an instance id EC2 denies is taken as gone rather than not yet visible.
INVISIBLE_GRACE = timedelta(minutes=5)


@dataclass
class WatchdogResult:
    # Hosts whose DNS record is in sync (or that need none): (host id, address, zone), for host_running.
    running: list[tuple[int, str, str]] = field(default_factory=list)
    lost: list[tuple[int, str]] = field(default_factory=list)  # (host id, EC2 state)
    refused: list[tuple[int, str]] = field(default_factory=list)  # (host id, why its record cannot be written)
    terminated: int = 0


def fleet_watchdog_sweep(*, now: datetime | None = None) -> WatchdogResult:
    """Follow every watched host with batched DescribeInstances (one call per 1,000 hosts), then
    the DNS step: the records of the hosts that became RUNNING in one UPSERT batch (one call per
    500), and one GetChange per batch still pending. A host stays RUNNING until its change is
    INSYNC, looked at again by the next sweep rather than waited for.
    """
    now = now or timezone.now()
    result = WatchdogResult()
    watched = selectors.hosts_watched()
    if not watched:
        return result
    seen, unknown = aws.instances_describe(row.instance_id for row in watched)
    settled = now - INVISIBLE_GRACE
    gone_terminating = []
    became_running: dict[int, tuple[str, str]] = {}
    ours = aws.deployment()  # read once: the sweep looks at every watched instance
    for row in watched:
        instance = seen.get(row.instance_id)
        if instance is None:
            # EC2 forgets terminated instances after about an hour, and is eventually
            # consistent right after RunInstances: only an id it denies long after launch is gone.
            if row.instance_id in unknown and (row.launched_at is None or row.launched_at <= settled):
                if row.state == HostState.TERMINATING:
                    gone_terminating.append(row.pk)
                else:
                    result.lost.append((row.pk, "not found"))
            continue
        if aws.instance_of_other_deployment(instance, ours=ours):
            logger.error("host %s: instance %s belongs to another deployment; left alone", row.pk, row.instance_id)
            continue
        if row.state == HostState.TERMINATING:
            if instance.state in ("shutting-down", "terminated"):
                gone_terminating.append(row.pk)
        elif instance.state in EC2_GONE_STATES:
            result.lost.append((row.pk, instance.state))
        elif row.state == HostState.BOOTING and row.meeting__status in ACTIVE_STATUSES and instance.state == "running":
            address = aws.instance_address(instance)
            if address:
                became_running[row.pk] = (address, instance.availability_zone or row.availability_zone)
    if gone_terminating:
        moved = hosts_terminated(
            pks=gone_terminating, allowed_from={HostState.TERMINATING}, reason=HostEventReason.TERMINATED, now=now
        )
        result.terminated = len(moved)
    running = _hosts_running(became_running, now=now)
    running += [
        (row.pk, row.instance_id, row.public_address, row.availability_zone, row.dns_change_id)
        for row in watched
        if row.state == HostState.RUNNING and row.meeting__status in ACTIVE_STATUSES and row.public_address
    ]
    _dns_step(running, result)
    return result


def _hosts_running(found: dict[int, tuple[str, str]], *, now: datetime) -> list[tuple[int, str, str, str, str]]:
    """BOOTING -> RUNNING in bulk (a constant number of queries), with each host's address and zone."""
    if not found:
        return []
    moved = hosts_transition(
        pks=list(found),
        allowed_from={HostState.BOOTING},
        to_state=HostState.RUNNING,
        reason=HostEventReason.INSTANCE_RUNNING,
        fields={"running_at": now},
        now=now,
    )
    host_fields_update.many(
        ({"public_address": found[pk][0], "availability_zone": found[pk][1]}, {"pk": pk}) for pk in moved
    )
    instance_ids = dict(_instance_ids(pks=list(moved)))
    return [(pk, instance_ids[pk], found[pk][0], found[pk][1], "") for pk in moved]


# Each sweep's read of the hosts that came up: compiled once (elephant.prepared).
_instance_ids = PreparedRead(lambda *, pks: Host.objects.filter(pk__in=pks).values_list("pk", "instance_id"))


def _dns_step(running: list[tuple[int, str, str, str, str]], result: WatchdogResult) -> None:
    """Write the records not yet submitted (one batch) and hand on the hosts whose change is INSYNC."""
    unsubmitted = [r for r in running if not r[4]]
    submitted = [r for r in running if r[4]]
    try:
        insync = aws.dns_changes_insync(r[4] for r in submitted) if submitted else set()
        changes = aws.dns_records_upsert({r[1]: r[2] for r in unsubmitted}) if unsubmitted else []
    except aws.AwsConfigError as exc:
        result.refused.extend((r[0], str(exc)) for r in running)
        return
    except aws.AwsTransientError as exc:
        logger.warning("Route 53 did not answer (%s); the DNS step runs again next sweep", exc)
        return
    result.running.extend((pk, address, zone) for pk, _, address, zone, change in submitted if change in insync)
    if not changes:  # no zone configured: no record to wait for
        result.running.extend((pk, address, zone) for pk, _, address, zone, _ in unsubmitted)
        return
    # One batch per DNS_BATCH records, in order: each host gets the id of the batch its record went in.
    for index, change in enumerate(changes):
        batch = unsubmitted[index * aws.DNS_BATCH : (index + 1) * aws.DNS_BATCH]
        Host.objects.filter(pk__in=[r[0] for r in batch], state=HostState.RUNNING).update(
            dns_change_id=change.change_id
        )
        if change.insync:
            result.running.extend((pk, address, zone) for pk, _, address, zone, _ in batch)


# Read by every host_running task: compiled once (elephant.prepared).
_host_with_meeting = PreparedRead(lambda *, host_id: Host.objects.select_related("meeting").filter(pk=host_id)[:1])


def host_running(*, host_id: int, address: str, availability_zone: str = "") -> bool:
    """The host's instance runs with an address and its DNS record is in sync (the watchdog's
    word): record its DCV link (RUNNING -> DNS_WRITTEN) and move the meeting forward.

    A host still BOOTING (a direct call) is first moved to RUNNING with the address.
    """
    host = next(iter(_host_with_meeting(host_id=host_id)), None)
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
        link = dcv_link_build(host=host, address=address)
    except FleetConfigError as exc:
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
    meeting_status_refresh(meeting)
    meeting_progress(meeting=meeting)
    return written


def host_dns_refused(*, host_id: int, error: str) -> bool:
    """Route 53 refused the host's record (configuration, permissions): fail its meeting with why."""
    host = Host.objects.select_related("meeting").filter(pk=host_id).first()
    if host is None or host.state != HostState.RUNNING:
        return False
    return meeting_fail(meeting=host.meeting, reason=TerminationReason.LAUNCH_FAILED, error=error)


def host_lost(*, host_id: int, ec2_state: str) -> bool:
    """The instance went away without Elephant asking: replace it once, else fail the meeting."""
    host = Host.objects.filter(pk=host_id).first()
    if host is None or host.state not in LIVE_HOST_STATES:
        return False
    error = f"instance {host.instance_id} went {ec2_state} outside Elephant"
    return host_retire(host=host, state=HostState.FAILED, reason=TerminationReason.HOST_LOST, error=error)
