"""Every row lock the fleet takes (STYLE 13): a reader sees each ``select_for_update`` here.

Each is taken inside the caller's short ``transaction.atomic()`` and held until it commits;
never across an AWS call (STYLE 4).
"""

from collections.abc import Iterable

from django.db.models import F, Q

from elephant.prepared import PreparedRead
from fleet.models import Host, PoolInstance, PoolState
from meetings.models import Meeting


def meeting_lock(*, meeting_id: str) -> Meeting:
    """The meeting, locked: a host change and the meeting's event or status commit together,
    and one host's retirement decides its replacement before another's does."""
    return _meeting_locked.get(pk=meeting_id)


# What the callers read of it (status, version, and what a replacement's launch needs); another field is
# loaded when first read. Taken at every host change: compiled once (elephant.prepared).
_meeting_locked = PreparedRead(
    lambda *, pk: (
        Meeting.objects.select_for_update()
        .only("id", "status", "version", "desktop_profile", "launch_warm", "meet_time", "duration_minutes")
        .filter(pk=pk)
    )
)


def hosts_lock(*, pks: Iterable[int], states: Iterable[str]) -> dict[int, tuple[str, str]]:
    """Lock the hosts with the ids ``pks`` that are in one of ``states``: host id -> (state, meeting id).

    A bulk transition then changes exactly these rows and records where each came from. The read is compiled
    once per number of ids (elephant.prepared): the sweeps take it every 15 seconds.
    """
    ids = sorted(set(pks))
    if not ids:
        return {}
    return {pk: (state, meeting_id) for pk, state, meeting_id in _hosts_locked(pks=ids, states=sorted(states))}


_hosts_locked = PreparedRead(
    lambda *, pks, states: (
        Host.objects.filter(pk__in=pks, state__in=states)
        .select_for_update()
        .order_by("pk")
        .values_list("pk", "state", "meeting_id")
    )
)


# The claim's first read (a launch resumed after a crash), at every warm start: compiled once.
_assigned_to = PreparedRead(
    lambda *, host_id: PoolInstance.objects.filter(host_id=host_id, state=PoolState.ASSIGNED)[:1]
)


def pool_instance_claim(
    *,
    host_id: int,
    profile_id: int,
    ami_id: str,
    instance_types: Iterable[str],
    avoid: Iterable[tuple[str, str]] = (),
) -> PoolInstance | None:
    """The warm-pool instance a host's launch takes: the one already assigned to it (a launch resumed
    after a crash), else the oldest READY one of its profile with its image and a type it may use,
    locked, none of the (type, zone) pools in ``avoid`` (out of capacity just now), and one refused for
    capacity before only when there is no other. SKIP LOCKED:
    concurrent launches take different instances instead of queueing on one."""
    mine = next(iter(_assigned_to(host_id=host_id)), None)
    if mine is not None:
        return mine
    refused = Q()
    for instance_type, zone in sorted(avoid):
        refused |= Q(instance_type=instance_type, availability_zone=zone)
    found = _ready_to_claim(
        profile_id=profile_id, ami_id=ami_id, instance_types=list(instance_types), refused=refused or None
    )
    return found[0] if found else None


def _ready(*, profile_id: int, ami_id: str, instance_types: list[str], refused: Q | None):
    rows = PoolInstance.objects.select_for_update(skip_locked=True).filter(
        profile_id=profile_id, state=PoolState.READY, ami_id=ami_id, instance_type__in=instance_types
    )
    if refused is not None:
        rows = rows.exclude(refused)
    # Oldest first, and one EC2 refused for capacity last: its zone is likely still out.
    return rows.exclude(instance_id="").order_by(F("refused_at").asc(nulls_first=True), "stopped_at", "pk")[:1]


# At every warm start: compiled once per set of refused (type, zone) pools, most often none.
_ready_to_claim = PreparedRead(_ready)
