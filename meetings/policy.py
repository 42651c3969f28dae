"""The meeting's rules, as pure functions: no database, no AWS, nothing of the fleet.

- the time windows (``join_opens_at``, ``hard_stop_at``, ``launch_due_at``, ``safety_net_at``;
  defined in ``meetings.windows`` so that the model's guards can use them too, re-exported here;
  the window in words is ``meetings.progress.join_opens_phrase``),
- the termination verdict (``termination_verdict``) the fleet's sweep applies (ARCHITECTURE.md 3),
- the status that a meeting's current hosts imply (``status_implied``), judged on plain
  ``HostReadiness`` data the fleet hands in, so meetings never needs to know a host's states.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from meetings.models import EventReason, MeetingStatus, Role, TerminationReason
from meetings.windows import (  # noqa: F401  the time windows, re-exported
    hard_stop_at,
    join_early,
    join_opens_at,
    launch_due_at,
    launch_due_meet_time_until,
    launch_lead,
    safety_net_at,
    termination_meet_time_until,
)

ROLES = (Role.TEACHER, Role.STUDENT)
# The statuses of a meeting whose hosts are not yet all healthy.
PRE_HEALTHY_STATUSES = frozenset({MeetingStatus.LAUNCHING, MeetingStatus.LAUNCHED, MeetingStatus.DNS_WRITTEN})
# The event that says the safety net kept the meeting alive (it then ends on SUCCESS or at the hard stop).
SAFETY_NET_KEPT_ALIVE = EventReason.SAFETY_NET_KEPT_ALIVE
# The verdict "record that the safety net keeps it alive" (a verdict, not an event reason).
KEEP_ALIVE = "KEEP_ALIVE"


# --- the join window ---------------------------------------------------------------------------------
TOO_EARLY = "too_early"
EXPIRED = "expired"


def join_window_verdict(*, meet_time: datetime, duration_minutes: int, now: datetime) -> str | None:
    """None while a participant's link is open at ``now``, else TOO_EARLY or EXPIRED."""
    if now < join_opens_at(meet_time):
        return TOO_EARLY
    if now > hard_stop_at(meet_time, duration_minutes):
        return EXPIRED
    return None


# --- the termination verdict -----------------------------------------------------------------------
def termination_verdict(
    *,
    status: str,
    meet_time: datetime,
    duration_minutes: int,
    teacher_session_data: str,
    student_session_data: str,
    kept_alive: bool,
    now: datetime,
    hosts_ready: bool = True,
) -> str | None:
    """The termination reason due now for an active meeting, KEEP_ALIVE, or None (ARCHITECTURE.md 3).

    The safety net is judged once, at meet_time + ELEPHANT_SAFETY_NET_MINUTES; a meeting it
    keeps alive (in progress, nothing recorded) ends with SUCCESS once both sides have
    recorded, or at the hard stop. ``hosts_ready`` is the fleet's word that every current
    desktop is ready: when one is not (a launch still going on, a replacement still booting),
    nobody can be blamed for not joining or recording, and the verdict is PLATFORM_FAULT,
    never a no-show.
    """
    recorded = sum(1 for data in (teacher_session_data, student_session_data) if data)
    past_hard_stop = now >= hard_stop_at(meet_time, duration_minutes)
    if now >= safety_net_at(meet_time):
        if kept_alive:
            if recorded == 2:
                return TerminationReason.SUCCESS
        elif recorded == 2:
            return TerminationReason.FIFTEEN_MIN_SUCCESS
        elif not hosts_ready and (recorded == 1 or status != MeetingStatus.IN_PROGRESS):
            return TerminationReason.PLATFORM_FAULT
        elif recorded == 1:
            return TerminationReason.PARTIAL_NO_SHOW_TIMEOUT
        elif status != MeetingStatus.IN_PROGRESS:
            return TerminationReason.NO_SHOW_TIMEOUT
        else:
            return TerminationReason.SCHEDULED_END if past_hard_stop else KEEP_ALIVE
    return TerminationReason.SCHEDULED_END if past_hard_stop else None


# --- the status the hosts imply ------------------------------------------------------------------------
@dataclass(frozen=True)
class HostReadiness:
    """What the meeting needs to know of a role's current host."""

    launched: bool  # it has an instance and is live
    link_written: bool  # its desktop link is written (its DNS record exists)
    healthy: bool  # its desktop passed the health check


@dataclass(frozen=True)
class ImpliedStatus:
    status: str
    allowed_from: frozenset[str]
    reason: str


def status_implied(*, status: str, hosts: Mapping[str, HostReadiness]) -> ImpliedStatus | None:
    """The transition a launching meeting is due, given its current host per role, or None.

    Only forward: a meeting never goes back because a host is replaced.
    """
    if status not in PRE_HEALTHY_STATUSES or set(hosts) != set(ROLES):
        return None
    readiness = hosts.values()
    if all(host.healthy for host in readiness):
        return ImpliedStatus(MeetingStatus.HEALTHY, PRE_HEALTHY_STATUSES, EventReason.HOSTS_HEALTHY)
    if all(host.link_written for host in readiness):
        return ImpliedStatus(
            MeetingStatus.DNS_WRITTEN,
            frozenset({MeetingStatus.LAUNCHING, MeetingStatus.LAUNCHED}),
            EventReason.DNS_WRITTEN,
        )
    if all(host.launched for host in readiness):
        return ImpliedStatus(MeetingStatus.LAUNCHED, frozenset({MeetingStatus.LAUNCHING}), EventReason.HOSTS_LAUNCHED)
    return None
