"""Launching a meeting's hosts, following them to healthy, and replacing one that fails.

Every meeting status change goes through ``meetings.services``; every change of a host's
state through ``host_transition``. No AWS call runs inside a transaction: claim (commit),
call AWS, record the result in a second short transaction.
"""

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from fleet import aws, profiles, selectors
from fleet.locks import meeting_lock
from fleet.models import BOOTING_HOST_STATES, DesktopProfile, Host, HostEventReason, HostState
from fleet.services import pool
from fleet.services.planning import boot_samples_record, health_timeout_of
from fleet.services.termination import hosts_terminate, meeting_fail, meeting_hosts_terminate
from fleet.services.transitions import host_transition
from meetings import services as meeting_services
from meetings.models import ACTIVE_STATUSES, TERMINAL_STATUSES, EventReason, Meeting, MeetingStatus, TerminationReason
from meetings.policy import PRE_HEALTHY_STATUSES, ROLES
from meetings.selectors import meeting_get, meeting_status_refresh

logger = logging.getLogger(__name__)

# A launch claim not renewed for this long may be claimed again. The claim is renewed before each
# (type, placement) candidate, so it covers the whole fallback chain; one RunInstances with the
# retry policy (5 attempts, 5 s connect / 20 s read) fits in it.
LAUNCH_LEASE = timedelta(seconds=150)
# The first host of a role may be replaced once; the replacement failing fails the meeting.
MAX_GENERATION = 2
# What a retired host's event says, by the meeting-side reason of its retirement.
RETIRE_REASONS = {
    TerminationReason.HEALTH_TIMEOUT: HostEventReason.HEALTH_TIMEOUT,
    TerminationReason.HOST_LOST: HostEventReason.INSTANCE_LOST,
}


def fleet_launch_sweep(*, now: datetime | None = None) -> list[str]:
    """The ids of meetings to hand to ``meeting_launch`` (one query)."""
    return selectors.meeting_ids_to_launch(now=now or timezone.now())


def meeting_launch(*, meeting_id: str, actor: str = "system", now: datetime | None = None) -> bool:
    """Claim a due meeting (SCHEDULED -> LAUNCHING) and launch a host per role. Idempotent.

    A repeated or concurrent call resumes where the first stopped and never starts a second
    instance for a host. Returns False when there is nothing to do or the launch failed.
    Throttling that outlasts the retry policy raises ``aws.AwsTransientError`` so the task
    retries later; configuration errors (``aws.instance_run`` checks the launch configuration)
    fail the meeting with the reason kept.
    """
    meeting = meeting_get(meeting_id=meeting_id)
    if meeting is None:
        return False
    if meeting.status == MeetingStatus.SCHEDULED:
        meeting_services.meeting_launch_start(meeting=meeting, actor=actor, now=now)
    if meeting.status != MeetingStatus.LAUNCHING:
        return False
    # One insert for both roles; a host a concurrent (or earlier) call created stays as it is.
    Host.objects.bulk_create([Host(meeting=meeting, role=role, generation=1) for role in ROLES], ignore_conflicts=True)
    meeting_reconcile(meeting=meeting, now=now)
    return meeting.status in ACTIVE_STATUSES


def host_launch(*, host: Host, now: datetime | None = None, profile: DesktopProfile | None = None) -> bool:
    """Start the host's instance, or adopt the live one already tagged for it.

    The claim (PENDING, or LAUNCHING past its lease, -> LAUNCHING) makes concurrent calls
    launch at most once; the tag look-up makes a call that follows a crash between
    RunInstances and the database write adopt the instance instead of starting another.
    ``host`` is updated in place. ``profile``: its meeting's desktop profile, when the caller has it.
    """
    asked_now = now
    now = now or timezone.now()
    claimed = host_transition(
        host=host,
        to_state=HostState.LAUNCHING,
        allowed_from={HostState.PENDING, HostState.LAUNCHING},
        reason=HostEventReason.LAUNCH_CLAIMED,
        condition=Q(instance_id="") & ~Q(state=HostState.LAUNCHING, launched_at__gt=now - LAUNCH_LEASE),
        fields={"launched_at": now, "last_error": ""},
        now=now,
    )
    if not claimed:
        return False
    names = {"meeting_id": host.meeting_id, "role": host.role, "generation": host.generation}
    warm = False
    try:
        instance = aws.instance_find_live(**names)
        adopted = instance is not None
        profile = profile or profiles.desktop_profile_resolve(host.meeting.desktop_profile)
        spec = profiles.host_launch_spec(host=host, profile=profile)
        if adopted:
            # Started from the warm pool by a call that crashed before recording it: still a warm start.
            resumed = pool.pool_instance_assigned(host=host, instance_id=instance.instance_id)
            if resumed is not None:
                attested_at, warm = resumed.attested_at, True
        if instance is None and pool.warm_start_wanted(host=host):
            # A stopped, booted instance of the warm pool; None (none left, or no capacity to start
            # it) falls back to a cold launch.
            started = pool.pool_instance_start(host=host, spec=spec, now=now, profile=profile)
            if started is not None:
                instance, attested_at, warm = started.instance, started.attested_at, True
        if instance is None:
            instance = aws.instance_run(
                **names,
                on_candidate=lambda token: _lease_renew(host=host, token=token, now=asked_now),
                resume_token=host.client_token,
                spec=spec,
            )
    except aws.LaunchLeaseLost:
        logger.warning("host %s: the launch claim passed to another worker; this one stops", host.pk)
        return False
    except aws.AwsError as exc:
        transient = isinstance(exc, aws.AwsTransientError)
        host_transition(
            host=host,
            to_state=HostState.PENDING if transient else HostState.FAILED,
            allowed_from={HostState.LAUNCHING},
            reason=HostEventReason.LAUNCH_RETRY if transient else HostEventReason.LAUNCH_REFUSED,
            detail=str(exc),
            fields={"last_error": str(exc)},
        )
        raise
    with transaction.atomic():
        recorded = host_transition(
            host=host,
            to_state=HostState.BOOTING,
            allowed_from={HostState.LAUNCHING},
            reason=HostEventReason.INSTANCE_ADOPTED if adopted else HostEventReason.INSTANCE_STARTED,
            detail=instance.instance_id,
            condition=Q(instance_id=""),
            fields={
                "instance_id": instance.instance_id,
                "instance_type": instance.instance_type,
                "availability_zone": instance.availability_zone,
                "ami_id": spec.image_id,
                "ec2_launch_time": instance.launch_time,
                "warm_start": warm,
                # A warm-pool instance attested at its build; its configuration is on its volume.
                **({"attested_at": attested_at} if warm else {}),
            },
        )
        if recorded:
            meeting = meeting_lock(meeting_id=host.meeting_id)
            meeting_services.meeting_record_change(
                meeting=meeting,
                reason=EventReason.HOST_ADOPTED if adopted else EventReason.HOST_LAUNCHED,
                detail=f"{host.role} #{host.generation}: {instance.instance_id} ({instance.instance_type}, "
                f"{instance.availability_zone}{', warm pool' if warm else ''})",
            )
    if recorded and meeting.status not in ACTIVE_STATUSES:
        # The meeting ended while RunInstances was in flight: nothing may outlive it.
        meeting_hosts_terminate(meeting=meeting)
    return recorded


def _lease_renew(*, host: Host, token: str, now: datetime | None = None) -> bool:
    """Before the next candidate: renew this worker's launch claim and record the candidate's
    ClientToken (a launch claimed again after a crash resumes with it). False when another
    worker holds the claim: the row no longer carries the ``launched_at`` this one wrote.
    """
    now = now or timezone.now()
    renewed = Host.objects.filter(
        pk=host.pk, state=HostState.LAUNCHING, instance_id="", launched_at=host.launched_at
    ).update(launched_at=now, client_token=token, updated_at=now)
    if renewed:
        host.launched_at, host.client_token = now, token
    return bool(renewed)


def _launch_pending(*, meeting: Meeting, hosts: dict[str, Host], now: datetime | None) -> bool:
    """Launch the current hosts that have no instance yet. False when the meeting failed."""
    profile = None
    for role in ROLES:
        host = hosts.get(role)
        if host is None or host.instance_id or host.state not in (HostState.PENDING, HostState.LAUNCHING):
            continue
        if profile is None:
            try:
                profile = profiles.desktop_profile_resolve(meeting.desktop_profile)
            except aws.AwsConfigError:
                pass  # host_launch meets it again, after its claim, and records why the host failed
        try:
            host_launch(host=host, now=now, profile=profile)
        except (aws.AwsConfigError, aws.AwsCapacityError) as exc:
            meeting_fail(meeting=meeting, reason=TerminationReason.LAUNCH_FAILED, error=str(exc))
            return False
    return True


def meeting_progress(*, meeting: Meeting, hosts: dict[str, Host] | None = None) -> None:
    """Move a launching meeting forward to what its current hosts show (never backward)."""
    if meeting.status not in PRE_HEALTHY_STATUSES:
        return
    hosts = hosts if hosts is not None else selectors.hosts_current(meeting_id=meeting.pk)
    meeting_services.meeting_advance(meeting=meeting, hosts={role: host.readiness() for role, host in hosts.items()})


def meeting_reconcile(*, meeting: Meeting, now: datetime | None = None) -> None:
    """Bring an active meeting's hosts in line: launch what is pending, replace or fail what
    timed out, and move the meeting forward. Every step is idempotent.

    The current hosts are read once and passed through: each step updates them in place.
    """
    now = now or timezone.now()
    if meeting.status not in ACTIVE_STATUSES:
        return
    deadline = now - timedelta(minutes=settings.ELEPHANT_HEALTH_TIMEOUT)
    hosts = selectors.hosts_current(meeting_id=meeting.pk)
    for host in hosts.values():
        host.meeting = meeting
    timeouts = health_timeout_of(h for h in hosts.values() if h.instance_id)
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
    for role, host in list(hosts.items()):
        timeout = timeouts.get(host.pk)
        if host.instance_id and host.state in BOOTING_HOST_STATES and timeout and host.started_at <= now - timeout:
            error = f"not healthy within {timeout.total_seconds() / 60:g} minutes ({_health_summary(host)})"
            _, replacement = _host_retire(
                host=host, state=HostState.UNHEALTHY, reason=TerminationReason.HEALTH_TIMEOUT, error=error, now=now
            )
            if replacement is not None:
                hosts[role] = replacement
            meeting_status_refresh(meeting)
            if meeting.status not in ACTIVE_STATUSES:
                return
    meeting_status_refresh(meeting)
    meeting_progress(meeting=meeting, hosts=hosts)


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
    retired, _ = _host_retire(host=host, state=state, reason=reason, error=error, now=now)
    return retired


def _host_retire(*, host: Host, state: str, reason: str, error: str, now: datetime | None) -> tuple[bool, Host | None]:
    now = now or timezone.now()
    replacement = None
    stamps = {"terminated_at": now} if state == HostState.FAILED else {}
    with transaction.atomic():
        if not host_transition(
            host=host,
            to_state=state,
            allowed_from={host.state},
            reason=RETIRE_REASONS[reason],
            detail=error,
            fields={"last_error": error, **stamps},
            now=now,
        ):
            return False, None
        if reason == TerminationReason.HEALTH_TIMEOUT:
            # Not dropped from the boot history: it took longer than it was given (censored).
            boot_samples_record(hosts=[host], now=now, censored=True)
        meeting = meeting_lock(meeting_id=host.meeting_id)
        if meeting.status in ACTIVE_STATUSES:
            if host.generation >= MAX_GENERATION:
                meeting_services.meeting_fail(
                    meeting=meeting, reason=reason, error=f"{host.role} host (replacement): {error}"
                )
            else:
                replacement, created = Host.objects.get_or_create(
                    meeting=meeting, role=host.role, generation=host.generation + 1
                )
                if created:
                    meeting_services.meeting_record_change(
                        meeting=meeting,
                        reason=EventReason.HOST_REPLACED,
                        detail=f"{host.role} #{host.generation} {host.instance_id or '-'}: {error}",
                    )
    logger.warning("meeting %s: retired %s host %s: %s", meeting.pk, host.role, host.instance_id or "-", error)
    if host.instance_id:
        try:
            hosts_terminate([host])
        except aws.AwsError as exc:
            logger.warning("could not terminate %s (%s); the reaper will", host.instance_id, exc)
    if meeting.status in TERMINAL_STATUSES:
        meeting_hosts_terminate(meeting=meeting)
    elif replacement is not None:
        _launch_pending(meeting=meeting, hosts={host.role: replacement}, now=now)
    return True, replacement
