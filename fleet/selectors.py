"""Reads of hosts and of the meetings the fleet sweeps. Each function is one query."""

from collections.abc import Iterable
from datetime import datetime, timedelta
from functools import cache

from django.db.models import Exists, OuterRef, Q

from elephant.prepared import PreparedRead
from fleet.models import (
    BOOTING_HOST_STATES,
    LIVE_HOST_STATES,
    POOL_HELD_STATES,
    Host,
    HostState,
    PoolInstance,
    PoolState,
)
from meetings import windows
from meetings.models import ACTIVE_STATUSES, Meeting, MeetingStatus
from meetings.policy import PRE_HEALTHY_STATUSES

# A LAUNCHING meeting not moved on for this long is handed to the launch service again.
LAUNCH_STUCK_AFTER = timedelta(minutes=2)


# A role's current host comes first among its hosts: the newest generation (a replacement supersedes
# the host it replaces; ``hosts_current`` and ``hosts_current_many`` keep the first per role).
_NEWEST_PER_ROLE = ("role", "-generation")


def hosts_current(*, meeting_id: str) -> dict[str, Host]:
    """Role -> the role's current host (its newest generation)."""
    current: dict[str, Host] = {}
    for host in _meeting_hosts(meeting_id=meeting_id):
        current.setdefault(host.role, host)
    return current


def hosts_current_many(*, meeting_ids: Iterable[str]) -> dict[str, dict[str, Host]]:
    """Meeting id -> role -> the role's current host, in one query.

    The current host of a role is its newest generation: a replacement supersedes the host it
    replaces. (The join query, ``_join_sql``, is the same rule in SQL.)
    """
    current: dict[str, dict[str, Host]] = {}
    for host in Host.objects.filter(meeting_id__in=list(meeting_ids)).order_by("meeting_id", *_NEWEST_PER_ROLE):
        current.setdefault(host.meeting_id, {}).setdefault(host.role, host)
    return current


# One meeting's hosts, newest generation first per role: read by every per-meeting task (compiled once).
_meeting_hosts = PreparedRead(
    lambda *, meeting_id: Host.objects.filter(meeting_id=meeting_id).order_by(*_NEWEST_PER_ROLE)
)


def meeting_ids_to_launch(*, now: datetime) -> list[str]:
    """Meetings due for launch (``Meeting.objects.due_for_launch``), and LAUNCHING ones that stalled: no
    host of theirs moved for ``LAUNCH_STUCK_AFTER`` (a launch whose task is backing off after throttling
    touches its hosts at every try; queuing it again from every sweep as well would multiply the calls
    into a bucket that is already empty). Earliest first, meetings of one start by id: the order is the
    same whatever order the rows lie in (the bucket serves the first ones first)."""
    return _meeting_ids_to_launch(
        now=now, quiet=now - LAUNCH_STUCK_AFTER, meet_time_until=windows.launch_due_meet_time_until(now)
    )


def _meetings_to_launch(*, now: datetime, quiet: datetime, meet_time_until: datetime):
    stalled = Meeting.objects.filter(status=MeetingStatus.LAUNCHING, launched_at__lte=quiet).exclude(
        Exists(Host.objects.filter(meeting=OuterRef("pk"), updated_at__gt=quiet))
    )
    due = Meeting.objects.due_for_launch(now, meet_time_until=meet_time_until)
    return (due | stalled).order_by("meet_time", "pk").values_list("pk", flat=True)


# The sweeps' reads, run every few seconds, compiled once (elephant.prepared).
_meeting_ids_to_launch = PreparedRead(_meetings_to_launch)


def hosts_watched() -> list:
    """Every host whose instance the watchdog follows, as named rows: pk, instance_id, state,
    launched_at, public_address, availability_zone, dns_change_id, meeting__status."""
    return _hosts_watched()


_hosts_watched = PreparedRead(
    lambda: Host.objects.watched().values_list(
        "pk",
        "instance_id",
        "state",
        "launched_at",
        "public_address",
        "availability_zone",
        "dns_change_id",
        "meeting__status",
        named=True,
    )
)


def hosts_for_health_check(*, meeting_id: str | None = None) -> list[Host]:
    """Live hosts not yet healthy of active meetings, and healthy hosts of meetings not yet HEALTHY.

    Two reads, each searching its own index: the few hosts still booting, and the HEALTHY hosts whose
    meeting is not yet HEALTHY (its other desktop still coming). As one OR, SQLite joined every healthy host
    of the fleet to its meeting every 15 seconds (815 at a simulated peak: 0.67 ms, the two 0.38). Unordered:
    the health check's outcome does not depend on the order of its hosts. A host that turned HEALTHY between
    the two reads is in both: the second, newer row is the one kept."""
    found = {host.pk: host for host in _hosts_booting(meeting_id=meeting_id)}
    found.update((host.pk, host) for host in _hosts_healthy_early(meeting_id=meeting_id))
    return list(found.values())


def _for_health_check(hosts, *, meeting_id: str | None):
    if meeting_id is not None:
        hosts = hosts.filter(meeting_id=meeting_id)
    return hosts.select_related("meeting").only(*_HEALTH_FIELDS).order_by()


# The health sweep's reads, every few seconds: compiled once (elephant.prepared).
_hosts_booting = PreparedRead(
    lambda *, meeting_id: _for_health_check(
        Host.objects.filter(state__in=sorted(BOOTING_HOST_STATES), meeting__status__in=sorted(ACTIVE_STATUSES)),
        meeting_id=meeting_id,
    )
)
_hosts_healthy_early = PreparedRead(
    lambda *, meeting_id: _for_health_check(
        Host.objects.filter(
            state=HostState.HEALTHY,
            meeting_id__in=Meeting.objects.filter(status__in=sorted(PRE_HEALTHY_STATUSES)).values("pk"),
        ),
        meeting_id=meeting_id,
    )
)


_HEALTH_FIELDS = (
    "id",
    "meeting_id",
    "role",
    "generation",
    "instance_id",
    "state",
    "dcv_link",
    "launched_at",
    "created_at",
    "updated_at",
    "agent_healthy_at",
    "meeting__status",
    "attested_at",
    # What the learned health timeout reads (fleet.services.planning.health_timeout_of), and the first DCV answer.
    "ami_id",
    "instance_type",
    "availability_zone",
    "warm_start",
    "dcv_answered_at",
    "meeting__desktop_profile",
)


def meeting_ids_with_hosts_not_ready(*, meeting_id: str | None = None) -> set[str]:
    """Active meetings with a current host live but not yet healthy (launching, booting, a
    replacement on its way): what the termination verdict needs to tell a platform fault from a
    no-show. One query; retired generations are never live, so every live host is current."""
    return set(_with_hosts_not_ready(meeting_id=meeting_id))


def _hosts_not_ready(*, meeting_id: str | None):
    hosts = Host.objects.filter(meeting__status__in=sorted(ACTIVE_STATUSES), state__in=sorted(BOOTING_HOST_STATES))
    if meeting_id is not None:
        hosts = hosts.filter(meeting_id=meeting_id)
    return hosts.values_list("meeting_id", flat=True).distinct()


# Read by the termination sweep and every termination verdict: compiled once (elephant.prepared).
_with_hosts_not_ready = PreparedRead(_hosts_not_ready)


def meeting_statuses(*, meeting_ids: Iterable[str]) -> dict[str, str]:
    return dict(Meeting.objects.filter(pk__in=list(meeting_ids)).values_list("pk", "status"))


def instances_tracked() -> dict[str, tuple[str, str]]:
    """Instance id -> (meeting id, meeting status) of every live or terminating host (one query over
    the state index, no list of ids: the reaper asks it about every instance of the deployment)."""
    return {instance_id: (meeting_id, status) for instance_id, meeting_id, status in _instances_tracked()}


_instances_tracked = PreparedRead(
    lambda: (
        Host.objects.filter(state__in=sorted(LIVE_HOST_STATES | {HostState.TERMINATING}))
        .exclude(instance_id="")
        .values_list("instance_id", "meeting_id", "meeting__status")
    )
)


def instance_ids_pooled(*, assigned_since: datetime) -> set[str]:
    """The instance ids the warm pool holds (building, stopping, stopped and ready), and those it
    handed to a host since ``assigned_since`` (being started: the host records it in a moment)."""
    return set(_instance_ids_pooled(assigned_since=assigned_since))


def _pooled(*, assigned_since: datetime):
    held = Q(state__in=sorted(POOL_HELD_STATES)) | Q(state=PoolState.ASSIGNED, assigned_at__gte=assigned_since)
    # Unordered: the caller makes a set of them (the model's ordering would sort every row each sweep).
    return PoolInstance.objects.filter(held).exclude(instance_id="").values_list("instance_id", flat=True).order_by()


_instance_ids_pooled = PreparedRead(_pooled)


@cache
def _join_sql() -> str:
    meeting, host = Meeting._meta.db_table, Host._meta.db_table
    # Hand-written because the join endpoint is the hottest read: compiling the equivalent
    # ORM query (two correlated subqueries) cost more than running it (bench/join.py).
    return (
        f'SELECT m.*, h."dcv_link" AS role_dcv_link, h."instance_id" AS role_instance_id '
        f'FROM "{meeting}" m LEFT JOIN "{host}" h ON h."id" = ('
        f'SELECT c."id" FROM "{host}" c WHERE c."meeting_id" = m."id" AND c."role" = %s '
        f'ORDER BY c."generation" DESC LIMIT 1) '
        f'WHERE m."id" = %s'
    )


def meeting_get_for_join(*, meeting_id: str, role: str) -> Meeting | None:
    """The meeting with the role's current DCV link and instance id, in one query.

    The current host of a role is its newest generation, as in ``hosts_current_many``.
    """
    return next(iter(Meeting.objects.raw(_join_sql(), [role, meeting_id])), None)
