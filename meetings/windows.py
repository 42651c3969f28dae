"""The time windows of a meeting, each defined once (ARCHITECTURE.md section 3).

Pure functions of the schedule and the settings. ``meetings.models`` (the model's guards and
queryset filters) and ``meetings.policy`` build on them; this module imports neither, so
neither has to import the other. Use them through ``meetings.policy`` elsewhere.
"""

from datetime import datetime, timedelta

from django.conf import settings


def join_early() -> timedelta:
    """How long before ``meet_time`` the join links open (ELEPHANT_JOIN_EARLY_MINUTES)."""
    return timedelta(minutes=settings.ELEPHANT_JOIN_EARLY_MINUTES)


def launch_lead() -> timedelta:
    """How long before ``meet_time`` the hosts are launched (ELEPHANT_LAUNCH_LEAD)."""
    return timedelta(minutes=settings.ELEPHANT_LAUNCH_LEAD)


def join_opens_at(meet_time: datetime) -> datetime:
    return meet_time - join_early()


def hard_stop_at(meet_time: datetime, duration_minutes: int) -> datetime:
    """The scheduled end plus ELEPHANT_OVERRUN_GRACE: links expire, the meeting is ended."""
    return meet_time + hard_stop_after(duration_minutes)


def hard_stop_after(duration_minutes: int) -> timedelta:
    """From ``meet_time`` to the hard stop (``hard_stop_at``), for a plan that works it out once per duration."""
    return timedelta(minutes=duration_minutes + settings.ELEPHANT_OVERRUN_GRACE)


def safety_net_at(meet_time: datetime) -> datetime:
    """When the no-show safety net judges the meeting (ELEPHANT_SAFETY_NET_MINUTES after the start)."""
    return meet_time + timedelta(minutes=settings.ELEPHANT_SAFETY_NET_MINUTES)


def launch_due_at(meet_time: datetime) -> datetime:
    return meet_time - launch_lead()


def launch_due_meet_time_until(now: datetime) -> datetime:
    """Meetings with ``meet_time`` up to this are due for launch at ``now`` (a query bound)."""
    return now + launch_lead()


def termination_meet_time_until(now: datetime) -> datetime:
    """Only meetings with ``meet_time`` up to this can have a termination rule due at ``now``:
    the safety net and the hard stop both come at least this late after ``meet_time``."""
    earliest = min(settings.ELEPHANT_SAFETY_NET_MINUTES, settings.ELEPHANT_OVERRUN_GRACE)
    return now - timedelta(minutes=earliest)
