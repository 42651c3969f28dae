"""The fleet's writes: launching, following, health-checking, replacing and terminating hosts.

Every meeting status change goes through ``meetings.services.meeting_transition``; every change
of a host's instance id or DCV link is recorded with ``meeting_record_change`` in the same
transaction, so the DynamoDB mirror and the status push see it. No AWS call runs inside a
transaction: claim (commit), call AWS, record the result in a second short transaction.

The sweeps (``fleet_*_sweep``) are a constant number of queries whatever the number of
meetings: they select what is due in one query, make batched AWS calls, apply what they can
as bulk updates, and return the per-meeting work for the tasks to hand out.
"""

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from fleet import aws, probes, selectors
from fleet.health import host_agent_healthy  # noqa: F401  the mirror reports agent health here
from fleet.models import BOOTING_HOST_STATES, LIVE_HOST_STATES, Host, HostState
from meetings.models import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    Meeting,
    MeetingEvent,
    MeetingStatus,
    Role,
    TerminationReason,
)
from meetings.services import meeting_record_change, meeting_transition

logger = logging.getLogger(__name__)

ROLES = (Role.TEACHER, Role.STUDENT)
# A host whose RunInstances began this long ago without a recorded result may be claimed again.
LAUNCH_LEASE = timedelta(seconds=90)
# The first host of a role may be replaced once; the replacement failing fails the meeting.
MAX_GENERATION = 2
EC2_GONE_STATES = frozenset({"shutting-down", "terminated", "stopping", "stopped"})
# How long after launch an instance id EC2 denies is taken as gone rather than not yet visible.
INVISIBLE_GRACE = timedelta(minutes=5)


class FleetConfigError(Exception):
    """A fleet setting is unusable (for example a DCV link template with an unknown field)."""


# --- launch ------------------------------------------------------------------------------------------
def meeting_launch(*, meeting_id: str, actor: str = "system", now: datetime | None = None) -> bool:
    """Claim a due meeting (SCHEDULED -> LAUNCHING) and launch a host per role. Idempotent.

    A repeated or concurrent call resumes where the first stopped and never starts a second
    instance for a host. Returns False when there is nothing to do. Throttling that outlasts
    the retry policy raises ``aws.AwsTransientError`` so the task retries later; configuration
    errors fail the meeting with the reason kept.
    """
    meeting = Meeting.objects.filter(pk=meeting_id).first()
    if meeting is None:
        return False
    if meeting.status == MeetingStatus.SCHEDULED:
        meeting_transition(
            meeting=meeting,
            to_status=MeetingStatus.LAUNCHING,
            allowed_from={MeetingStatus.SCHEDULED},
            reason="LAUNCH",
            actor=actor,
            now=now,
        )
    if meeting.status != MeetingStatus.LAUNCHING:
        return False
    problems = aws.launch_config_problems()
    if problems:
        meeting_fail(meeting=meeting, reason=TerminationReason.LAUNCH_FAILED, error="; ".join(problems))
        return False
    for role in ROLES:
        try:
            Host.objects.get_or_create(meeting=meeting, role=role, generation=1)
        except IntegrityError:
            pass  # a concurrent call created it
    meeting_reconcile(meeting=meeting, now=now)
    return True


def host_launch(*, host: Host, now: datetime | None = None) -> bool:
    """Start the host's instance, or adopt the live one already tagged for it.

    The claim (PENDING, or LAUNCHING past its lease, -> LAUNCHING) makes concurrent calls
    launch at most once; the tag look-up makes a call that follows a crash between
    RunInstances and the database write adopt the instance instead of starting another.
    """
    now = now or timezone.now()
    stale = now - LAUNCH_LEASE
    claimed = (
        Host.objects.filter(pk=host.pk, instance_id="", state__in=(HostState.PENDING, HostState.LAUNCHING))
        .exclude(state=HostState.LAUNCHING, launched_at__gt=stale)
        .update(state=HostState.LAUNCHING, launched_at=now, last_error="", updated_at=now)
    )
    if not claimed:
        return False
    names = {"meeting_id": host.meeting_id, "role": host.role, "generation": host.generation}
    try:
        instance = aws.instance_find_live(**names)
        adopted = instance is not None
        if instance is None:
            instance = aws.instance_run(**names)
    except aws.AwsTransientError as exc:
        Host.objects.filter(pk=host.pk, state=HostState.LAUNCHING).update(state=HostState.PENDING, last_error=str(exc))
        raise
    except aws.AwsError as exc:
        Host.objects.filter(pk=host.pk, state=HostState.LAUNCHING).update(state=HostState.FAILED, last_error=str(exc))
        raise
    with transaction.atomic():
        recorded = Host.objects.filter(pk=host.pk, state=HostState.LAUNCHING, instance_id="").update(
            instance_id=instance.instance_id,
            state=HostState.BOOTING,
            instance_type=instance.instance_type,
            availability_zone=instance.availability_zone,
            updated_at=timezone.now(),
        )
        if recorded:
            meeting = Meeting.objects.select_for_update().get(pk=host.meeting_id)
            meeting_record_change(
                meeting=meeting,
                reason="HOST_ADOPTED" if adopted else "HOST_LAUNCHED",
                detail=f"{host.role} #{host.generation}: {instance.instance_id} ({instance.instance_type}, "
                f"{instance.availability_zone})",
            )
    if recorded and meeting.status not in ACTIVE_STATUSES:
        # The meeting ended while RunInstances was in flight: nothing may outlive it.
        meeting_hosts_terminate(meeting=meeting)
    return bool(recorded)


def _launch_pending(*, meeting: Meeting, hosts: dict[str, Host], now: datetime | None) -> bool:
    """Launch the current hosts that have no instance yet. False when the meeting failed."""
    for role in ROLES:
        host = hosts.get(role)
        if host is None or host.instance_id or host.state not in (HostState.PENDING, HostState.LAUNCHING):
            continue
        try:
            host_launch(host=host, now=now)
        except (aws.AwsConfigError, aws.AwsCapacityError) as exc:
            meeting_fail(meeting=meeting, reason=TerminationReason.LAUNCH_FAILED, error=str(exc))
            return False
    return True


# --- progress, health, replacement ---------------------------------------------------------------------
def meeting_progress(*, meeting: Meeting, hosts: dict[str, Host] | None = None) -> None:
    """Move a launching meeting forward to what its current hosts show (never backward)."""
    if meeting.status not in selectors.PRE_HEALTHY_STATUSES:
        return
    hosts = hosts if hosts is not None else selectors.hosts_current(meeting_id=meeting.pk)
    if set(hosts) != set(ROLES):
        return
    states = {host.state for host in hosts.values()}
    if states == {HostState.HEALTHY}:
        meeting_transition(
            meeting=meeting,
            to_status=MeetingStatus.HEALTHY,
            allowed_from=selectors.PRE_HEALTHY_STATUSES,
            reason="HOSTS_HEALTHY",
        )
    elif states <= {HostState.DNS_WRITTEN, HostState.HEALTHY}:
        meeting_transition(
            meeting=meeting,
            to_status=MeetingStatus.DNS_WRITTEN,
            allowed_from={MeetingStatus.LAUNCHING, MeetingStatus.LAUNCHED},
            reason="DNS_WRITTEN",
        )
    elif all(host.instance_id for host in hosts.values()) and states <= LIVE_HOST_STATES:
        meeting_transition(
            meeting=meeting,
            to_status=MeetingStatus.LAUNCHED,
            allowed_from={MeetingStatus.LAUNCHING},
            reason="HOSTS_LAUNCHED",
        )


def meeting_reconcile(*, meeting: Meeting, now: datetime | None = None) -> None:
    """Bring an active meeting's hosts in line: launch what is pending, replace or fail what
    timed out, and move the meeting forward. Every step is idempotent."""
    now = now or timezone.now()
    if meeting.status not in ACTIVE_STATUSES:
        return
    deadline = now - timedelta(minutes=settings.ELEPHANT_HEALTH_TIMEOUT)
    hosts = selectors.hosts_current(meeting_id=meeting.pk)
    # Before launching: a launch that keeps failing (throttling, an unreachable endpoint)
    # raises from _launch_pending, and must still end in FAILED with its reason.
    unlaunched = [
        host
        for host in hosts.values()
        if not host.instance_id and host.state in BOOTING_HOST_STATES and host.started_at <= deadline
    ]
    if unlaunched:
        host = max(unlaunched, key=lambda h: bool(h.last_error))  # the one that says why
        meeting_fail(
            meeting=meeting,
            reason=TerminationReason.LAUNCH_FAILED,
            error=f"the {host.role} host was not launched within {settings.ELEPHANT_HEALTH_TIMEOUT} "
            f"minutes: {host.last_error or 'no answer from EC2'}",
        )
        return
    if not _launch_pending(meeting=meeting, hosts=hosts, now=now):
        return
    for host in selectors.hosts_current(meeting_id=meeting.pk).values():
        if host.instance_id and host.state in BOOTING_HOST_STATES and host.started_at <= deadline:
            error = f"not healthy within {settings.ELEPHANT_HEALTH_TIMEOUT} minutes ({_health_summary(host)})"
            host_retire(
                host=host, state=HostState.UNHEALTHY, reason=TerminationReason.HEALTH_TIMEOUT, error=error, now=now
            )
            meeting.refresh_from_db()
            if meeting.status not in ACTIVE_STATUSES:
                return
    meeting.refresh_from_db()
    meeting_progress(meeting=meeting)


def _health_summary(host: Host) -> str:
    checks = {True: "pass", False: "fail", None: "not checked"}
    return f"EC2 status checks {checks[host.ec2_checks_ok]}, DCV endpoint {checks[host.dcv_answered]}"


def host_retire(*, host: Host, state: str, reason: str, error: str, now: datetime | None = None) -> bool:
    """Take a live host out of service (UNHEALTHY or FAILED), terminate its instance, and replace
    it once; a replacement's retirement fails the meeting. False if someone else retired it first.

    The host's new state and its replacement (or the meeting's failure) commit together, so a
    fault after the commit loses neither: the pending replacement is launched by the next
    reconcile, and an instance whose termination failed is no host's, so the reaper's.
    """
    now = now or timezone.now()
    replacement = None
    stamps = {"terminated_at": now} if state == HostState.FAILED else {}
    with transaction.atomic():
        if not Host.objects.filter(pk=host.pk, state=host.state).update(
            state=state, last_error=error, updated_at=now, **stamps
        ):
            return False
        meeting = Meeting.objects.select_for_update().get(pk=host.meeting_id)
        if meeting.status in ACTIVE_STATUSES:
            if host.generation >= MAX_GENERATION:
                _fail_transition(meeting=meeting, reason=reason, error=f"{host.role} host (replacement): {error}")
            else:
                replacement, created = Host.objects.get_or_create(
                    meeting=meeting, role=host.role, generation=host.generation + 1
                )
                if created:
                    meeting_record_change(
                        meeting=meeting,
                        reason="HOST_REPLACED",
                        detail=f"{host.role} #{host.generation} {host.instance_id or '-'}: {error}",
                    )
    logger.warning("meeting %s: retired %s host %s: %s", meeting.pk, host.role, host.instance_id or "-", error)
    if host.instance_id:
        try:
            _terminate_instances([host])
        except aws.AwsError as exc:
            logger.warning("could not terminate %s (%s); the reaper will", host.instance_id, exc)
    if meeting.status in TERMINAL_STATUSES:
        meeting_hosts_terminate(meeting=meeting)
    elif replacement is not None:
        _launch_pending(meeting=meeting, hosts={host.role: replacement}, now=now)
    return True


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
        Host.objects.filter(pk__in=result.healthy, state=HostState.DNS_WRITTEN).update(
            state=HostState.HEALTHY, healthy_at=now, updated_at=now
        )
    deadline = now - timedelta(minutes=settings.ELEPHANT_HEALTH_TIMEOUT)
    for host in hosts:
        newly_healthy = host.pk in result.healthy
        waiting = host.meeting.status in selectors.PRE_HEALTHY_STATUSES
        timed_out = host.state in BOOTING_HOST_STATES and host.started_at <= deadline
        pending = host.state in (HostState.PENDING, HostState.LAUNCHING) and not host.instance_id
        if newly_healthy or waiting or timed_out or pending:
            result.meeting_ids.add(host.meeting_id)
    return result


def meeting_health_check(*, meeting: Meeting, now: datetime | None = None) -> HealthResult:
    """Re-run the health check of one meeting now (the staff action), then reconcile it."""
    result = hosts_health_check(hosts=selectors.hosts_for_health_check(meeting_id=meeting.pk), now=now)
    meeting.refresh_from_db()
    meeting_reconcile(meeting=meeting, now=now)
    return result


# --- the watchdog ---------------------------------------------------------------------------------------
def dcv_link_build(*, host: Host, address: str) -> str:
    values = {
        "instance_id": host.instance_id,
        "domain": settings.ELEPHANT_DNS_DOMAIN,
        "address": address,
        "role": host.role,
        "meeting_id": host.meeting_id,
    }
    try:
        return settings.ELEPHANT_DCV_URL_TEMPLATE.format_map(values)
    except (KeyError, ValueError, IndexError) as exc:
        raise FleetConfigError(
            f"ELEPHANT_DCV_URL_TEMPLATE {settings.ELEPHANT_DCV_URL_TEMPLATE!r} is invalid ({exc!r}); "
            f"it may use {', '.join('{' + k + '}' for k in values)}"
        ) from exc


def host_running(*, host_id: int, address: str, availability_zone: str = "") -> bool:
    """The instance runs with an address: write its DNS record and DCV link (-> DNS_WRITTEN)."""
    host = Host.objects.select_related("meeting").filter(pk=host_id).first()
    if host is None or host.state not in (HostState.BOOTING, HostState.RUNNING):
        return False
    meeting = host.meeting
    if meeting.status not in ACTIVE_STATUSES:
        return False
    try:
        link = dcv_link_build(host=host, address=address)
        aws.dns_record_change(action="UPSERT", instance_id=host.instance_id, address=address)
    except (FleetConfigError, aws.AwsConfigError) as exc:
        meeting_fail(meeting=meeting, reason=TerminationReason.LAUNCH_FAILED, error=str(exc))
        return False
    now = timezone.now()
    with transaction.atomic():
        written = Host.objects.filter(pk=host.pk, state__in=(HostState.BOOTING, HostState.RUNNING)).update(
            state=HostState.DNS_WRITTEN,
            public_address=address,
            availability_zone=availability_zone or host.availability_zone,
            dcv_link=link,
            running_at=now,
            updated_at=now,
        )
        if written:
            meeting_record_change(meeting=meeting, reason="HOST_LINK", detail=f"{host.role}: {link}")
    meeting.refresh_from_db()
    meeting_progress(meeting=meeting)
    return bool(written)


def host_lost(*, host_id: int, ec2_state: str) -> bool:
    """The instance went away without Elephant asking: replace it once, else fail the meeting."""
    host = Host.objects.filter(pk=host_id).first()
    if host is None or host.state not in LIVE_HOST_STATES:
        return False
    error = f"instance {host.instance_id} went {ec2_state} outside Elephant"
    return host_retire(host=host, state=HostState.FAILED, reason=TerminationReason.HOST_LOST, error=error)


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
        result.terminated = Host.objects.filter(pk__in=gone_terminating, state=HostState.TERMINATING).update(
            state=HostState.TERMINATED, terminated_at=now, updated_at=now
        )
    return result


# --- launch and health sweeps ------------------------------------------------------------------------
def fleet_launch_sweep(*, now: datetime | None = None) -> list[str]:
    """The ids of meetings to hand to ``meeting_launch`` (one query)."""
    return selectors.meeting_ids_to_launch(now=now or timezone.now())


def fleet_health_sweep(*, now: datetime | None = None) -> HealthResult:
    return hosts_health_check(hosts=selectors.hosts_for_health_check(), now=now)


# --- termination ----------------------------------------------------------------------------------------
KEEP_ALIVE = "KEEP_ALIVE"


def termination_rule(
    *,
    status: str,
    meet_time: datetime,
    duration_minutes: int,
    teacher_session_data: str,
    student_session_data: str,
    kept_alive: bool,
    now: datetime,
) -> str | None:
    """The termination reason due now for an active meeting, KEEP_ALIVE, or None (ARCHITECTURE.md 3).

    The safety net is judged once, at meet_time + ELEPHANT_SAFETY_NET_MINUTES; a meeting it
    keeps alive (in progress, nothing recorded) ends with SUCCESS once both sides have
    recorded, or at the hard stop.
    """
    recorded = sum(1 for data in (teacher_session_data, student_session_data) if data)
    if now >= meet_time + timedelta(minutes=settings.ELEPHANT_SAFETY_NET_MINUTES):
        if kept_alive:
            if recorded == 2:
                return TerminationReason.SUCCESS
        elif recorded == 2:
            return TerminationReason.FIFTEEN_MIN_SUCCESS
        elif recorded == 1:
            return TerminationReason.PARTIAL_NO_SHOW_TIMEOUT
        elif status != MeetingStatus.IN_PROGRESS:
            return TerminationReason.NO_SHOW_TIMEOUT
        else:
            hard_stop = meet_time + timedelta(minutes=duration_minutes + settings.ELEPHANT_OVERRUN_GRACE)
            return TerminationReason.SCHEDULED_END if now >= hard_stop else KEEP_ALIVE
    hard_stop = meet_time + timedelta(minutes=duration_minutes + settings.ELEPHANT_OVERRUN_GRACE)
    if now >= hard_stop:
        return TerminationReason.SCHEDULED_END
    return None


@dataclass
class TerminationSweepResult:
    terminate: list[tuple[str, str]] = field(default_factory=list)  # (meeting id, reason)
    keep_alive: list[str] = field(default_factory=list)


def fleet_termination_sweep(*, now: datetime | None = None) -> TerminationSweepResult:
    """Apply the termination rules to every active meeting old enough (one query)."""
    now = now or timezone.now()
    result = TerminationSweepResult()
    for row in selectors.meetings_for_termination(now=now):
        verdict = termination_rule(
            status=row["status"],
            meet_time=row["meet_time"],
            duration_minutes=row["duration_minutes"],
            teacher_session_data=row["teacher_session_data"],
            student_session_data=row["student_session_data"],
            kept_alive=row["kept_alive"],
            now=now,
        )
        if verdict == KEEP_ALIVE:
            result.keep_alive.append(row["pk"])
        elif verdict:
            result.terminate.append((row["pk"], verdict))
    return result


def meeting_keep_alive(*, meeting_id: str) -> bool:
    """Record that the safety net found the meeting in progress with nothing recorded yet."""
    meeting = Meeting.objects.filter(pk=meeting_id, status=MeetingStatus.IN_PROGRESS).first()
    if meeting is None or meeting.events.filter(reason=selectors.SAFETY_NET_KEPT_ALIVE).exists():
        return False
    MeetingEvent.objects.create(
        meeting=meeting,
        reason=selectors.SAFETY_NET_KEPT_ALIVE,
        detail="safety net: in progress, no session recorded yet; kept alive",
        actor="system",
    )
    return True


def meeting_termination_rules_apply(*, meeting_id: str, now: datetime | None = None) -> str | None:
    """Judge one meeting by the termination rules as it is now, and act: terminate it with the
    reason due, or record that the safety net kept it alive. Returns the verdict.

    The sweep's verdict was read before this ran (a queue in between): a meeting joined or
    recorded since must be judged on what it is now, never ended as a no-show while in progress.
    """
    now = now or timezone.now()
    meeting = Meeting.objects.filter(pk=meeting_id, status__in=ACTIVE_STATUSES).first()
    if meeting is None:
        return None
    verdict = termination_rule(
        status=meeting.status,
        meet_time=meeting.meet_time,
        duration_minutes=meeting.duration_minutes,
        teacher_session_data=meeting.teacher_session_data,
        student_session_data=meeting.student_session_data,
        kept_alive=meeting.events.filter(reason=selectors.SAFETY_NET_KEPT_ALIVE).exists(),
        now=now,
    )
    if verdict == KEEP_ALIVE:
        meeting_keep_alive(meeting_id=meeting.pk)
    elif verdict:
        meeting_terminate(meeting=meeting, reason=verdict)
    return verdict


def meeting_terminate(*, meeting: Meeting, reason: str, actor: str = "system", detail: str = "") -> bool:
    """End an active meeting (-> TERMINATED with ``reason``) and terminate its hosts.

    Calling it again for a meeting already ended re-sends the terminations that may have
    failed, so a retried task finishes the job.
    """
    meeting.refresh_from_db(fields=["status", "version"])
    moved = meeting_transition(
        meeting=meeting,
        to_status=MeetingStatus.TERMINATED,
        allowed_from=ACTIVE_STATUSES,
        reason=reason,
        detail=detail,
        actor=actor,
        fields={"termination_reason": reason},
    )
    if meeting.status in TERMINAL_STATUSES:
        meeting_hosts_terminate(meeting=meeting)
    return moved


def meeting_fail(*, meeting: Meeting, reason: str, error: str, actor: str = "system") -> bool:
    """FAILED with the reason and error kept (shown in the admin), and its hosts terminated."""
    moved = _fail_transition(meeting=meeting, reason=reason, error=error, actor=actor)
    if meeting.status in TERMINAL_STATUSES:
        meeting_hosts_terminate(meeting=meeting)
    return moved


def _fail_transition(*, meeting: Meeting, reason: str, error: str, actor: str = "system") -> bool:
    logger.error("meeting %s failed (%s): %s", meeting.pk, reason, error)
    return meeting_transition(
        meeting=meeting,
        to_status=MeetingStatus.FAILED,
        allowed_from=ACTIVE_STATUSES | {MeetingStatus.SCHEDULED},
        reason=reason,
        detail=error,
        actor=actor,
        fields={"termination_reason": reason, "last_error": error},
    )


def meeting_hosts_terminate(*, meeting: Meeting) -> int:
    """Terminate every host of the meeting that may still run. Returns how many were asked."""
    Host.objects.filter(meeting=meeting, instance_id="", state__in=(HostState.PENDING,)).update(
        state=HostState.TERMINATED, terminated_at=timezone.now()
    )
    hosts = list(
        Host.objects.filter(meeting=meeting)
        .exclude(instance_id="")
        .exclude(state__in=(HostState.TERMINATED, HostState.FAILED))
    )
    return _terminate_instances(hosts)


def _terminate_instances(hosts: list[Host]) -> int:
    if not hosts:
        return 0
    Host.objects.filter(pk__in=[h.pk for h in hosts], state__in=LIVE_HOST_STATES).update(
        state=HostState.TERMINATING, updated_at=timezone.now()
    )
    # The records first: a termination that fails is retried or reaped, a record left behind is not.
    for host in hosts:
        try:
            aws.dns_record_change(action="DELETE", instance_id=host.instance_id, address=host.public_address)
        except aws.AwsError as exc:
            logger.warning("could not delete the DNS record of %s: %s", host.instance_id, exc)
    aws.instances_terminate(h.instance_id for h in hosts)
    return len(hosts)


# --- the reaper -------------------------------------------------------------------------------------------
@dataclass
class ReapResult:
    terminated: list[str] = field(default_factory=list)
    events: int = 0


def fleet_reap(*, now: datetime | None = None) -> ReapResult:
    """Terminate every live Project=Elephant instance whose meeting is terminal or unknown.

    Also instances of active meetings that no host tracks (a duplicate from a lost race),
    once they are older than ELEPHANT_REAPER_GRACE_MINUTES, so a launch still recording its
    instance is never touched. Two queries and one event insert, whatever the numbers.
    """
    now = now or timezone.now()
    result = ReapResult()
    instances = aws.instances_of_project()
    if not instances:
        return result
    statuses = selectors.meeting_statuses(meeting_ids={(i.tags or {}).get("MeetingID", "") for i in instances})
    tracked = selectors.instance_ids_tracked(instance_ids=[i.instance_id for i in instances])
    grace = now - timedelta(minutes=settings.ELEPHANT_REAPER_GRACE_MINUTES)
    orphans = []
    for instance in instances:
        meeting_id = (instance.tags or {}).get("MeetingID", "")
        status = statuses.get(meeting_id)
        if status is None:
            why = f"meeting {meeting_id or '(untagged)'} unknown"
        elif status in TERMINAL_STATUSES:
            why = f"meeting {status}"
        elif instance.instance_id not in tracked and instance.launch_time is not None and instance.launch_time <= grace:
            why = "no host tracks it"
        else:
            continue
        orphans.append((instance, meeting_id if status is not None else None, why))
    if not orphans:
        return result
    aws.instances_terminate(instance.instance_id for instance, _, _ in orphans)
    result.terminated = [instance.instance_id for instance, _, _ in orphans]
    events = [
        MeetingEvent(
            meeting_id=meeting_id,
            reason="REAPED",
            detail=f"reaper terminated {instance.instance_id} ({instance.state}): {why}",
            actor="reaper",
        )
        for instance, meeting_id, why in orphans
        if meeting_id is not None
    ]
    MeetingEvent.objects.bulk_create(events)
    result.events = len(events)
    for instance, _, why in orphans:
        logger.warning("reaper terminated %s (%s)", instance.instance_id, why)
    return result
