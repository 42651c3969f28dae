"""Writes and transitions of meetings. The only place a meeting's status changes.

Every transition is one conditional UPDATE (``WHERE status = <from>``) in a short
transaction, with an event row, and announces itself with the ``meeting_changed`` signal
on commit (status push, DynamoDB mirror). A transition that finds the row already moved
returns False and repeats no side effect.
"""

import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from elephant.prepared import PreparedInsert, PreparedUpdate
from meetings.models import (
    ACTIVE_STATUSES,
    EventReason,
    Meeting,
    MeetingEvent,
    MeetingSeries,
    MeetingStatus,
    TerminationReason,
)
from meetings.policy import SAFETY_NET_KEPT_ALIVE, HostReadiness, status_implied
from meetings.schedule import schedule_admit, schedule_clean
from meetings.selectors import meeting_status_refresh
from meetings.signals import meeting_changed

logger = logging.getLogger(__name__)

# Timestamps stamped by the transition that enters a status.
_STAMPS = {
    MeetingStatus.LAUNCHING: "launched_at",
    MeetingStatus.HEALTHY: "healthy_at",
    MeetingStatus.IN_PROGRESS: "started_at",
    MeetingStatus.TERMINATED: "ended_at",
    MeetingStatus.CANCELLED: "ended_at",
    MeetingStatus.FAILED: "ended_at",
}


def _announce(*, meeting_id: str, from_status: str, to_status: str, reason: str) -> None:
    transaction.on_commit(
        lambda: meeting_changed.send(
            sender=Meeting, meeting_id=meeting_id, from_status=from_status, to_status=to_status, reason=reason
        )
    )


def meeting_schedule(
    *,
    teacher_name: str,
    student_name: str,
    meet_time: datetime,
    time_zone: str = "UTC",
    duration_minutes: int = 60,
    teacher=None,
    api_key=None,
    teacher_email: str = "",
    student_email: str = "",
    desktop_profile: str = "",
    actor: str = "system",
) -> Meeting:
    """Schedule a meeting; ``ValidationError`` with field errors if it is not a valid schedule (meetings.schedule)."""
    return meeting_series_schedule(
        teacher_name=teacher_name,
        student_name=student_name,
        meet_time=meet_time,
        time_zone=time_zone,
        duration_minutes=duration_minutes,
        teacher=teacher,
        api_key=api_key,
        teacher_email=teacher_email,
        student_email=student_email,
        desktop_profile=desktop_profile,
        actor=actor,
        weeks=1,
    )[0]


def weekly_occurrences(*, meet_time: datetime, time_zone: str, weeks: int) -> list[datetime]:
    """The start of each week's lesson at the same wall-clock time in ``time_zone`` (across a DST change, too)."""
    local = meet_time.astimezone(ZoneInfo(time_zone))
    # Aware arithmetic on a ZoneInfo datetime keeps the wall-clock time; the offset follows the new date.
    return [(local + timedelta(weeks=week)).astimezone(UTC) for week in range(weeks)]


def meeting_series_schedule(
    *,
    weeks: int,
    teacher_name: str,
    student_name: str,
    meet_time: datetime,
    time_zone: str = "UTC",
    duration_minutes: int = 60,
    teacher=None,
    api_key=None,
    teacher_email: str = "",
    student_email: str = "",
    desktop_profile: str = "",
    actor: str = "system",
) -> list[Meeting]:
    """Schedule a lesson once (``weeks=1``, no series) or weekly for ``weeks`` weeks: each occurrence its own
    meeting with its own links, all in one series, all or none. ``ValidationError`` with field errors
    (``repeat`` for a series that is too long or reaches too far ahead)."""
    _, errors = schedule_clean(
        {
            "teacher_name": teacher_name,
            "teacher_email": teacher_email,
            "student_name": student_name,
            "student_email": student_email,
            "meet_time": meet_time,
            "time_zone": time_zone,
            "duration_minutes": duration_minutes,
            "desktop_profile": desktop_profile,
        }
    )
    maximum = settings.ELEPHANT_MAX_SERIES_WEEKS
    if isinstance(weeks, bool) or not isinstance(weeks, int) or not 1 <= weeks <= maximum:
        errors["repeat"] = [f"Repeat weekly for 1 to {maximum} weeks."]
    if errors:
        raise ValidationError(errors)
    starts = weekly_occurrences(meet_time=meet_time, time_zone=time_zone, weeks=weeks)
    _, last_errors = schedule_clean({"meet_time": starts[-1]})
    if last_errors:
        raise ValidationError({"repeat": [f"Week {weeks}: {message}" for message in last_errors["meet_time"]]})
    with transaction.atomic():
        # The fleet's word on whether desktops can be ready at these starts (and when it will launch them).
        admissions = schedule_admit(starts=starts, duration_minutes=duration_minutes, desktop_profile=desktop_profile)
        series = None
        if weeks > 1:
            series = MeetingSeries.objects.create(teacher=teacher, api_key=api_key, weeks=weeks)
        meetings = []
        for index, (start, admission) in enumerate(zip(starts, admissions, strict=True), start=1):
            meeting = Meeting.objects.create(
                teacher=teacher,
                api_key=api_key,
                teacher_name=teacher_name,
                teacher_email=teacher_email,
                student_name=student_name,
                student_email=student_email,
                meet_time=start,
                time_zone=time_zone,
                duration_minutes=duration_minutes,
                desktop_profile=desktop_profile,
                series=series,
                series_index=index if series else None,
                launch_at=admission.launch_at,
                launch_warm=admission.warm,
            )
            detail = f"week {index} of {weeks}" if series else ""
            _event_insert(
                meeting=meeting,
                to_status=MeetingStatus.SCHEDULED,
                reason=EventReason.SCHEDULED,
                detail=detail,
                actor=actor,
            )
            _announce(
                meeting_id=meeting.id, from_status="", to_status=MeetingStatus.SCHEDULED, reason=EventReason.SCHEDULED
            )
            meetings.append(meeting)
    for meeting in meetings:
        logger.info("meeting %s scheduled for %s by %s", meeting.id, meeting.meet_time.isoformat(), actor)
    return meetings


def meeting_reschedule(
    *,
    meeting: Meeting,
    actor: str,
    meet_time: datetime | None = None,
    duration_minutes: int | None = None,
    time_zone: str | None = None,
) -> bool:
    """Move a SCHEDULED meeting: any of its start, duration and time zone, judged like a new schedule.

    The links already sent stay valid (their window is read from the meeting). A change of the start or
    the duration raises ``sequence`` (the participants' calendars take the update); a change of the time
    zone alone is only shown differently. ``ValidationError`` for an invalid value; False when the meeting
    is no longer SCHEDULED (nothing changes); True otherwise, also when nothing differed.
    """
    given = {"meet_time": meet_time, "duration_minutes": duration_minutes, "time_zone": time_zone}
    given = {name: value for name, value in given.items() if value is not None}
    cleaned, errors = schedule_clean(given)
    if errors:
        raise ValidationError(errors)
    if "meet_time" in cleaned:
        cleaned["meet_time"] = cleaned["meet_time"].astimezone(UTC)
    changed = {name: value for name, value in cleaned.items() if getattr(meeting, name) != value}
    if not meeting.can_reschedule():
        return False
    if not changed:
        return True
    values = dict(changed)
    moved = "meet_time" in changed or "duration_minutes" in changed
    detail = "; ".join(f"{name} {_shown(getattr(meeting, name))} -> {_shown(value)}" for name, value in changed.items())
    now = timezone.now()
    with transaction.atomic():
        if moved:
            (admission,) = schedule_admit(
                starts=[values.get("meet_time", meeting.meet_time)],
                duration_minutes=values.get("duration_minutes", meeting.duration_minutes),
                desktop_profile=meeting.desktop_profile,
                exclude_meeting_id=meeting.pk,
            )
            values.update(launch_at=admission.launch_at, launch_warm=admission.warm)
        updated = Meeting.objects.filter(pk=meeting.pk, status=MeetingStatus.SCHEDULED).update(
            version=F("version") + 1, sequence=F("sequence") + (1 if moved else 0), updated_at=now, **values
        )
        if not updated:
            return False
        _event_insert(meeting_id=meeting.pk, reason=EventReason.RESCHEDULED, detail=detail, actor=actor)
        _announce(meeting_id=meeting.pk, from_status=meeting.status, to_status="", reason=EventReason.RESCHEDULED)
    meeting.refresh_from_db()
    logger.info("meeting %s rescheduled by %s: %s", meeting.pk, actor, detail)
    return True


def _shown(value) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


# The audit log's (and the DynamoDB outbox's) rows, one at every transition and change: compiled once.
_event_insert = PreparedInsert(MeetingEvent)
# Every transition's and change's UPDATE: compiled once per set of fields changed (elephant.prepared).
_meeting_update = PreparedUpdate(
    lambda *, pk, status: Meeting.objects.filter(pk=pk, status=status), fixed={"version": F("version") + 1}
)
_meeting_changed = PreparedUpdate(lambda *, pk: Meeting.objects.filter(pk=pk), fixed={"version": F("version") + 1})


def meeting_transition(
    *,
    meeting: Meeting,
    to_status: str,
    allowed_from: Iterable[str],
    reason: str = "",
    detail: str = "",
    actor: str = "system",
    fields: dict | None = None,
    now: datetime | None = None,
) -> bool:
    """Move ``meeting`` to ``to_status`` if it is in one of ``allowed_from``.

    Returns True when this call made the transition, False when the meeting was not in an
    allowed status (someone else moved it first). ``meeting`` is updated in place.
    """
    allowed = frozenset(allowed_from)
    now = now or timezone.now()
    values = dict(fields or {})
    stamp = _STAMPS.get(to_status)
    if stamp and stamp not in values:
        values[stamp] = now
    # With several possible origins, a lost race is re-read once to try from the new status.
    attempts = 2 if len(allowed) > 1 else 1
    for attempt in range(attempts):
        from_status = meeting.status
        if from_status not in allowed:
            return False
        with transaction.atomic(savepoint=False):
            updated = _meeting_update(
                {"status": to_status, "updated_at": now, **values}, pk=meeting.pk, status=from_status
            )
            if updated:
                _event_insert(
                    meeting_id=meeting.pk,
                    from_status=from_status,
                    to_status=to_status,
                    reason=reason,
                    detail=detail,
                    actor=actor,
                )
                _announce(meeting_id=meeting.pk, from_status=from_status, to_status=to_status, reason=reason)
        if updated:
            meeting.status = to_status
            meeting.version += 1
            meeting.updated_at = now
            for name, value in values.items():
                setattr(meeting, name, value)
            logger.info("meeting %s %s -> %s %s", meeting.pk, from_status, to_status, reason)
            return True
        if attempt + 1 < attempts:
            meeting_status_refresh(meeting)
    return False


def meeting_record_change(
    *, meeting: Meeting, reason: str, detail: str = "", actor: str = "system", fields: dict | None = None
) -> None:
    """Record a change of mirrored data that is not a status transition (a host's link, session data)."""
    values = dict(fields or {})
    now = timezone.now()
    with transaction.atomic(savepoint=False):
        _meeting_changed({"updated_at": now, **values}, pk=meeting.pk)
        _event_insert(meeting_id=meeting.pk, reason=reason, detail=detail, actor=actor)
        _announce(meeting_id=meeting.pk, from_status=meeting.status, to_status="", reason=reason)
    meeting.version += 1
    for name, value in values.items():
        setattr(meeting, name, value)


def meeting_cancel(*, meeting: Meeting, actor: str) -> bool:
    """Cancel a meeting that has not started launching. Idempotent: False if not SCHEDULED.

    The cancel raises ``sequence`` too: the participants' calendars take the cancellation over the invitation.
    """
    cancelled = meeting_transition(
        meeting=meeting,
        to_status=MeetingStatus.CANCELLED,
        allowed_from={MeetingStatus.SCHEDULED},
        reason=TerminationReason.CANCELLED,
        actor=actor,
        fields={"termination_reason": TerminationReason.CANCELLED, "sequence": F("sequence") + 1},
    )
    if cancelled:
        meeting.refresh_from_db(fields=["sequence"])
    return cancelled


def meeting_series_cancel(*, meeting: Meeting, actor: str) -> list[Meeting]:
    """Cancel this occurrence and every later one of its series still SCHEDULED; the ones cancelled here."""
    if meeting.series_id is None:
        return [meeting] if meeting_cancel(meeting=meeting, actor=actor) else []
    later = Meeting.objects.filter(
        series_id=meeting.series_id, meet_time__gte=meeting.meet_time, status=MeetingStatus.SCHEDULED
    ).order_by("meet_time")
    return [occurrence for occurrence in later if meeting_cancel(meeting=occurrence, actor=actor)]


def meeting_start_on_join(*, meeting: Meeting, role: str) -> bool:
    """The first successful join moves HEALTHY -> IN_PROGRESS, exactly once."""
    if meeting.status != MeetingStatus.HEALTHY:
        return False
    return meeting_transition(
        meeting=meeting,
        to_status=MeetingStatus.IN_PROGRESS,
        allowed_from={MeetingStatus.HEALTHY},
        reason=EventReason.FIRST_JOIN,
        detail=f"first join by the {role}",
        actor=role,
    )


# --- the lifecycle the fleet drives (it calls these, then does the host side) -------------------------
def meeting_launch_start(*, meeting: Meeting, actor: str = "system", now: datetime | None = None) -> bool:
    """A due meeting starts launching: SCHEDULED -> LAUNCHING, once."""
    return meeting_transition(
        meeting=meeting,
        to_status=MeetingStatus.LAUNCHING,
        allowed_from={MeetingStatus.SCHEDULED},
        reason=EventReason.LAUNCH,
        actor=actor,
        now=now,
    )


def meeting_advance(*, meeting: Meeting, hosts: Mapping[str, HostReadiness]) -> bool:
    """Move a launching meeting forward to what its current hosts show (never backward).

    ``hosts`` is role -> the readiness of the role's current host (``meetings.policy``).
    """
    implied = status_implied(status=meeting.status, hosts=hosts)
    if implied is None:
        return False
    return meeting_transition(
        meeting=meeting, to_status=implied.status, allowed_from=implied.allowed_from, reason=implied.reason
    )


def meeting_end(*, meeting: Meeting, reason: str, actor: str = "system", detail: str = "") -> bool:
    """End an active meeting: -> TERMINATED with ``reason`` kept. False if it was not active.

    The meeting is re-read first: a copy read before a queue must not decide from a stale status.
    """
    meeting_status_refresh(meeting)
    return meeting_transition(
        meeting=meeting,
        to_status=MeetingStatus.TERMINATED,
        allowed_from=ACTIVE_STATUSES,
        reason=reason,
        detail=detail,
        actor=actor,
        fields={"termination_reason": reason},
    )


def meeting_fail(*, meeting: Meeting, reason: str, error: str, actor: str = "system") -> bool:
    """-> FAILED from scheduled or active, with the reason and the error kept (shown in the admin)."""
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


def meeting_keep_alive(*, meeting_id: str, meeting: Meeting | None = None, kept_alive: bool | None = None) -> bool:
    """Record that the safety net found the meeting in progress with nothing recorded yet. Once.

    ``meeting`` and ``kept_alive``: what a caller that just judged the meeting read of it (not read again).
    """
    if meeting is None or meeting.status != MeetingStatus.IN_PROGRESS:
        meeting = Meeting.objects.filter(pk=meeting_id, status=MeetingStatus.IN_PROGRESS).first()
    if (
        meeting is None
        or kept_alive
        or (kept_alive is None and meeting.events.filter(reason=SAFETY_NET_KEPT_ALIVE).exists())
    ):
        return False
    _event_insert(
        meeting=meeting,
        reason=SAFETY_NET_KEPT_ALIVE,
        detail="safety net: in progress, no session recorded yet; kept alive",
        actor="system",
    )
    return True
