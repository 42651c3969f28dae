"""Ending meetings and their hosts: the termination rules applied, staff's "terminate now", failures.

The meeting side (its status, reason and event) is ``meetings.services``; the verdict is
``meetings.policy.termination_verdict``. This module does the host side: every host that may
still run is moved to TERMINATING, its DNS record deleted and its instance terminated.
"""

import logging
from dataclasses import dataclass, field
from datetime import datetime

from django.utils import timezone

from elephant.prepared import PreparedRead
from fleet import aws, selectors
from fleet.models import LIVE_HOST_STATES, Host, HostEventReason, HostState
from fleet.services.dns import host_records_delete
from fleet.services.planning import boot_samples_record
from fleet.services.transitions import hosts_terminated, hosts_transition
from meetings import services as meeting_services
from meetings.models import TERMINAL_STATUSES, Meeting
from meetings.policy import KEEP_ALIVE, PRE_HEALTHY_STATUSES, safety_net_at, termination_verdict
from meetings.selectors import meeting_get, meeting_kept_alive, meetings_for_termination

logger = logging.getLogger(__name__)


@dataclass
class TerminationSweepResult:
    terminate: list[tuple[str, str]] = field(default_factory=list)  # (meeting id, reason)
    keep_alive: list[str] = field(default_factory=list)


def fleet_termination_sweep(*, now: datetime | None = None) -> TerminationSweepResult:
    """Apply the termination rules to every active meeting old enough (one query)."""
    now = now or timezone.now()
    result = TerminationSweepResult()
    rows = meetings_for_termination(now=now)
    # Which meetings' desktops are not all ready matters only to a verdict at the safety net (a platform
    # fault is never a no-show): asked only when a meeting not yet kept alive has reached it.
    judged = [r for r in rows if not r["kept_alive"] and now >= safety_net_at(r["meet_time"])]
    not_ready = selectors.meeting_ids_with_hosts_not_ready() if judged else set()
    for row in rows:
        verdict = termination_verdict(
            status=row["status"],
            meet_time=row["meet_time"],
            duration_minutes=row["duration_minutes"],
            teacher_session_data=row["teacher_session_data"],
            student_session_data=row["student_session_data"],
            kept_alive=row["kept_alive"],
            now=now,
            hosts_ready=row["status"] not in PRE_HEALTHY_STATUSES and row["pk"] not in not_ready,
        )
        if verdict == KEEP_ALIVE:
            result.keep_alive.append(row["pk"])
        elif verdict:
            result.terminate.append((row["pk"], verdict))
    return result


def meeting_termination_rules_apply(*, meeting_id: str, now: datetime | None = None) -> str | None:
    """Judge one meeting by the termination rules as it is now, and act: terminate it with the
    reason due, or record that the safety net kept it alive. Returns the verdict.

    The sweep's verdict was read before this ran (a queue in between): a meeting joined or
    recorded since must be judged on what it is now, never ended as a no-show while in progress.
    """
    now = now or timezone.now()
    meeting = meeting_get(meeting_id=meeting_id, active=True)
    if meeting is None:
        return None
    kept_alive = meeting_kept_alive(meeting_id=meeting.pk)
    verdict = termination_verdict(
        status=meeting.status,
        meet_time=meeting.meet_time,
        duration_minutes=meeting.duration_minutes,
        teacher_session_data=meeting.teacher_session_data,
        student_session_data=meeting.student_session_data,
        kept_alive=kept_alive,
        now=now,
        hosts_ready=meeting.status not in PRE_HEALTHY_STATUSES
        and not selectors.meeting_ids_with_hosts_not_ready(meeting_id=meeting.pk),
    )
    if verdict == KEEP_ALIVE:
        meeting_services.meeting_keep_alive(meeting_id=meeting.pk, meeting=meeting, kept_alive=kept_alive)
    elif verdict:
        meeting_terminate(meeting=meeting, reason=verdict)
    return verdict


def meeting_terminate(*, meeting: Meeting, reason: str, actor: str = "system", detail: str = "") -> bool:
    """End an active meeting (-> TERMINATED with ``reason``) and terminate its hosts.

    Calling it again for a meeting already ended re-sends the terminations that may have
    failed, so a retried task finishes the job.
    """
    moved = meeting_services.meeting_end(meeting=meeting, reason=reason, actor=actor, detail=detail)
    if meeting.status in TERMINAL_STATUSES:
        meeting_hosts_terminate(meeting=meeting)
    return moved


def meeting_fail(*, meeting: Meeting, reason: str, error: str, actor: str = "system") -> bool:
    """FAILED with the reason and error kept (shown in the admin), and its hosts terminated."""
    moved = meeting_services.meeting_fail(meeting=meeting, reason=reason, error=error, actor=actor)
    if meeting.status in TERMINAL_STATUSES:
        meeting_hosts_terminate(meeting=meeting)
    return moved


def meeting_hosts_terminate(*, meeting: Meeting) -> int:
    """Terminate every host of the meeting that may still run. Returns how many were asked."""
    now = timezone.now()
    never_launched = _hosts_never_launched(meeting_id=meeting.pk)
    if never_launched:  # locked and moved only while still PENDING (a claim moves a host on first)
        hosts_terminated(
            pks=never_launched, allowed_from={HostState.PENDING}, reason=HostEventReason.NEVER_LAUNCHED, now=now
        )
    return hosts_terminate(_hosts_with_instances(meeting_id=meeting.pk))


# Every ended meeting's reads (thousands a day): compiled once (elephant.prepared).
_hosts_never_launched = PreparedRead(
    lambda *, meeting_id: (
        Host.objects.filter(meeting_id=meeting_id, instance_id="", state=HostState.PENDING)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
)
_hosts_with_instances = PreparedRead(
    lambda *, meeting_id: (
        Host.objects.filter(meeting_id=meeting_id)
        .exclude(instance_id="")
        .exclude(state__in=(HostState.TERMINATED, HostState.FAILED))
    )
)


def hosts_terminate(hosts: list[Host]) -> int:
    """Move the live ones to TERMINATING, delete every DNS record, terminate every instance."""
    if not hosts:
        return 0
    hosts_transition(
        pks=[host.pk for host in hosts],
        allowed_from=LIVE_HOST_STATES,
        to_state=HostState.TERMINATING,
        reason=HostEventReason.TERMINATE_REQUESTED,
    )
    # A host given up before it was healthy stays in the boot history as censored (it took longer).
    boot_samples_record(hosts=hosts, now=timezone.now(), censored=True)
    # The records first: a termination that fails is retried or reaped, a record left behind is not.
    host_records_delete(hosts)
    aws.instances_terminate(host.instance_id for host in hosts)
    return len(hosts)
