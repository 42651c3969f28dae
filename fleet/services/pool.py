"""The warm pool (issue 11): per desktop profile, stopped instances that booted fully once.

Starting a stopped, configured instance serves in about a minute where a cold Windows launch takes
many (EC2 Auto Scaling warm pools do the same; hibernation is not supported on the GPU families, so
the pool holds stopped instances, billed only for their volumes).

- **Build** (``fleet_pool_sweep``, beat): an instance is launched with the profile's image and a
  boot script that lets either role's DCV user in (``profiles.pool_launch_spec``), runs its first
  boot (sysprep, the boot script, the attestation: ``fleet.attest.instance_attested``), and is
  stopped: BUILDING -> STOPPING -> READY. A build that does not attest within
  ``ELEPHANT_HEALTH_TIMEOUT_CAP`` minutes is terminated (FAILED).
- **Size**: twice the SCHEDULED meetings of the profile in the next ``ELEPHANT_WARM_POOL_HORIZON_HOURS``
  plus ``ELEPHANT_WARM_POOL_SPARE``, plus a spare for the late bookings this time of day has seen on
  the last seven days (booked too late for a cold launch: ``_late_bookings``), at most the profile's
  ``warm_pool_max`` (blank: ``ELEPHANT_WARM_POOL_MAX``). A late booking is admitted onto the pool.
  Builds draw on the RunInstances budget the launch plan leaves in the current minute. READY
  instances beyond the size (counting the READY ones before builds still on their way: only they serve
  the next minutes' lessons), older than ``ELEPHANT_WARM_POOL_MAX_AGE_HOURS`` or of an image or type
  the profile no longer names are terminated.
- **Assign** (``pool_instance_start``, from ``host_launch`` for a meeting planned warm or a
  replacement host): the oldest READY instance (one EC2 refused for capacity last) is claimed
  (READY -> ASSIGNED, row-locked with SKIP LOCKED so concurrent launches take different ones),
  tagged as the host's (CreateTags: the reaper and ``instance_find_live`` then know it as the
  host's), and started (StartInstances). Single use: it ends with its meeting like any host. A
  capacity error on start is tried again as the profile's other types (ModifyInstanceAttribute),
  then on a READY instance in another zone; one that no type starts goes back (READY, host tags
  removed, last in line) and after three the host falls back to a cold launch. A throttled start
  puts it back and raises, so the launch is retried.
- **Off** (``ELEPHANT_WARM_POOL`` false, or the ``fixed`` policy): the sweep drains the pool.
"""

import hashlib
import logging
import math
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import SimpleNamespace

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from elephant.prepared import PreparedRead
from fleet import aws, locks, planner, profiles
from fleet.models import LIVE_HOST_STATES, DesktopProfile, Host, PoolInstance, PoolState
from fleet.services import planning
from meetings.models import Meeting, MeetingStatus

logger = logging.getLogger(__name__)

# A build whose RunInstances never recorded an instance (a crash in between) is given up after this.
BUILD_CLAIM_LEASE = timedelta(minutes=5)
HOST_TAG_KEYS = ("MeetingID", "Role", "Generation")
# Pool instances a warm start tries (each outside the (type, zone) pools EC2 refused) before launching cold.
WARM_START_TRIES = 3
# A (type, zone) pool EC2 refused a start in is not asked again for this long (capacity comes back in minutes).
CAPACITY_MEMORY = timedelta(minutes=5)
# How many past days of late bookings size the pool's spare for them.
LATE_BOOKING_DAYS = 7


@dataclass(frozen=True)
class WarmStart:
    instance: aws.Instance
    attested_at: datetime | None


def warm_start_wanted(*, host: Host) -> bool:
    """A host starts from the pool when the pool is on and its meeting was planned warm, or it
    replaces a host that failed (the fastest way to a second chance)."""
    return planning.pool_enabled() and (host.meeting.launch_warm or host.generation > 1)


def pool_instance_start(
    *, host: Host, spec: aws.LaunchSpec, now: datetime | None = None, profile: DesktopProfile | None = None
) -> WarmStart | None:
    """Start a READY pool instance of the host's profile (``profile``, when the caller resolved it) as
    the host's instance; None when the pool has none that starts: the caller launches cold.

    EC2 runs out of capacity per (instance type, zone), and a stopped instance starts in its own zone
    or not at all. A start refused for capacity is tried again as each other type of the profile in
    the same zone (ModifyInstanceAttribute on the stopped instance, as AWS's Instance Scheduler
    does); an instance no type starts goes back to the pool, and the next READY one outside the
    refused (type, zone) pools is tried, up to ``WARM_START_TRIES`` instances, before the cold launch.
    """
    now = now or timezone.now()
    profile = profile or profiles.desktop_profile_resolve(host.meeting.desktop_profile)
    if profile.pk is None:
        return None
    # The (type, zone) pools EC2 refused a start in just now, for this host or another.
    out_of_capacity = set(_refused_since(since=now - CAPACITY_MEMORY))
    for _ in range(WARM_START_TRIES):
        with transaction.atomic():
            claimed = locks.pool_instance_claim(
                host_id=host.pk,
                profile_id=profile.pk,
                ami_id=spec.image_id,
                instance_types=spec.instance_types,
                avoid=out_of_capacity,
            )
            if claimed is None:
                return None
            if claimed.state == PoolState.READY:
                PoolInstance.objects.filter(pk=claimed.pk).update(state=PoolState.ASSIGNED, host=host, assigned_at=now)
        names = {"meeting_id": host.meeting_id, "role": host.role, "generation": host.generation}
        try:
            aws.tags_create([claimed.instance_id], aws.instance_tags(**names))
            # One already ASSIGNED to this host (a launch resumed after a crash) may be running: start it as it is.
            resumed = claimed.state == PoolState.ASSIGNED
            started_as = _start_as_some_type(claimed, spec=spec, out_of_capacity=out_of_capacity, as_is=resumed)
        except aws.AwsTransientError as exc:
            _release(claimed, error=str(exc), profile=profile)
            raise
        except aws.AwsError as exc:
            if exc.code in aws.QUOTA_CODES:
                # The account's running vCPUs are used up: the instance is fine, the quota is the answer
                # (a cold launch would meet it too). Back to the pool; the launch fails with why.
                _release(claimed, error=str(exc), profile=profile)
                raise
            # Not startable (EC2 says it is not stopped, or it is gone): out of the pool; try the next.
            logger.warning("warm start of %s for host %s refused: %s", claimed.instance_id, host.pk, exc)
            _retire([claimed], state=PoolState.FAILED, error=str(exc), now=now)
            continue
        if started_as is None:
            _release(
                claimed,
                error=f"no capacity to start it in {claimed.availability_zone}",
                profile=profile,
                refused_at=now,
            )
            continue
        instance = aws.Instance(
            instance_id=claimed.instance_id,
            state="pending",
            instance_type=started_as,
            availability_zone=claimed.availability_zone,
            launch_time=now,
        )
        return WarmStart(instance=instance, attested_at=claimed.attested_at)
    logger.warning("no warm-pool instance of %s started for host %s; launching cold", profile.name, host.pk)
    return None


def _start_as_some_type(
    claimed: PoolInstance, *, spec: aws.LaunchSpec, out_of_capacity: set[tuple[str, str]], as_is: bool = False
) -> str | None:
    """StartInstances on ``claimed`` as its own type, then as each other type of the profile EC2 has not
    just refused in its zone (changing the stopped instance's type first; ``as_is``: its own type only,
    whatever was refused). The type it started as, or None when capacity refused them all
    (``out_of_capacity`` learns each refused pool)."""
    zone = claimed.availability_zone
    types = [claimed.instance_type, *(t for t in spec.instance_types if t != claimed.instance_type)]
    for instance_type in types[:1] if as_is else types:
        if (instance_type, zone) in out_of_capacity and not as_is:
            continue
        if instance_type != claimed.instance_type:
            aws.instance_type_modify(claimed.instance_id, instance_type)
            PoolInstance.objects.filter(pk=claimed.pk).update(instance_type=instance_type)
            claimed.instance_type = instance_type
        try:
            aws.instance_start(claimed.instance_id)
        except aws.AwsCapacityError as exc:
            logger.warning("warm start of %s as %s: %s", claimed.instance_id, instance_type, exc)
            out_of_capacity.add((instance_type, zone))
            continue
        return instance_type
    return None


def pool_instance_assigned(*, host: Host, instance_id: str) -> PoolInstance | None:
    """The pool instance handed to ``host`` as ``instance_id`` (a warm start a crash left unrecorded)."""
    return PoolInstance.objects.filter(host=host, instance_id=instance_id, state=PoolState.ASSIGNED).first()


def _release(
    pool_instance: PoolInstance, *, error: str, profile: DesktopProfile, refused_at: datetime | None = None
) -> None:
    """Back to READY after a start that did not happen (its host tags removed, best effort: the
    reaper knows a held pool instance whatever its tags); ``refused_at``: EC2 had no capacity for it."""
    try:
        aws.tags_delete([pool_instance.instance_id], HOST_TAG_KEYS)
        aws.tags_create([pool_instance.instance_id], aws.pool_tags(profile=profile.name)[:1])
    except aws.AwsError as exc:
        logger.warning("could not restore the pool tags of %s: %s", pool_instance.instance_id, exc)
    refused = {"refused_at": refused_at} if refused_at is not None else {}
    PoolInstance.objects.filter(pk=pool_instance.pk, state=PoolState.ASSIGNED).update(
        state=PoolState.READY, host=None, assigned_at=None, last_error=error[:2000], **refused
    )


# --- the sweep ---------------------------------------------------------------------------------------
@dataclass
class PoolSweepResult:
    built: int = 0
    stopped: int = 0
    ready: int = 0
    retired: int = 0
    failed: int = 0


def fleet_pool_sweep(*, now: datetime | None = None) -> PoolSweepResult:
    """Follow the builds, stop the attested, retire what is not wanted, build what is missing.
    A constant number of queries and batched AWS calls (one RunInstances per build)."""
    now = now or timezone.now()
    result = PoolSweepResult()
    enabled = planning.pool_enabled()
    # Plain rows of the fields the sweep reads (it looks at every instance the pool holds each minute).
    rows = [SimpleNamespace(pk=row["id"], **row) for row in _sweep_rows()]
    if not rows and not enabled:
        return result
    images = {profile.pk: _profile_image(profile) for profile in profiles.desktop_profiles_all()}
    _follow(rows, now=now, result=result)
    wanted = _wanted(now=now) if enabled else {}
    held = [r for r in rows if r.state in (PoolState.BUILDING, PoolState.STOPPING, PoolState.READY)]
    retire = [r for r in rows if r.state == PoolState.RETIRING]
    max_age = timedelta(hours=settings.ELEPHANT_WARM_POOL_MAX_AGE_HOURS)
    counts: Counter = Counter()
    for row in _newest_first(held):  # the oldest READY ones are the ones beyond the size
        spec_ami, spec_types = images[row.profile_id]
        stale = row.ami_id != spec_ami or (row.instance_type and row.instance_type not in spec_types)
        too_old = now - row.launched_at > max_age
        beyond = counts[row.profile_id] >= wanted.get(row.profile_id, 0)
        if not enabled or (row.state == PoolState.READY and (stale or too_old or beyond)):
            retire.append(row)
        else:
            counts[row.profile_id] += 1
    if retire:
        result.retired += _retire(retire, state=PoolState.RETIRED, error="", now=now)
    if enabled:
        _build(wanted=wanted, have=counts, now=now, result=result)
    return result


def _newest_first(rows: list) -> list:
    """Held instances in the order the pool keeps them: the READY ones first (stopped and booted, they serve
    a lesson within minutes), newest first, then those still on their way to READY. So a pool above its size
    (lessons launched cold, or ending, shrink it) retires a READY instance only when the READY ones alone
    are more than it needs: a build still booting cannot serve the lessons of the next minutes, and keeping
    it in a READY one's place turned those lessons cold too late to be ready (scenario G in
    docs/benchmarks.md). Builds of one sweep share a launch time: the id orders them, not the order the
    query returned them in (where the table holds the rows, which updates move), so one pool retires the
    same instance in every run."""
    return sorted(rows, key=lambda r: (r.state == PoolState.READY, r.launched_at, r.pk), reverse=True)


_SWEEP_FIELDS = (
    "id",
    "profile_id",
    "state",
    "instance_id",
    "client_token",
    "ami_id",
    "instance_type",
    "launched_at",
    "attested_at",
)


def _profile_image(profile: DesktopProfile) -> tuple[str, tuple[str, ...]]:
    types = tuple(profile.instance_type_list or settings.ELEPHANT_INSTANCE_TYPES)
    return profile.ami_id or settings.ELEPHANT_AMI_ID, types


def _follow(rows: list[PoolInstance], *, now: datetime, result: PoolSweepResult) -> None:
    """BUILDING -> STOPPING once attested (StopInstances), STOPPING -> READY once EC2 says stopped;
    a build that never attested, or an instance EC2 lost, is given up."""
    moving = [r for r in rows if r.state in (PoolState.BUILDING, PoolState.STOPPING) and r.instance_id]
    described, missing = aws.instances_describe(r.instance_id for r in moving) if moving else ({}, set())
    build_timeout = timedelta(minutes=settings.ELEPHANT_HEALTH_TIMEOUT_CAP)
    to_stop, to_ready, failed = [], [], []
    for row in rows:
        instance = described.get(row.instance_id)
        gone = row.instance_id in missing or (
            instance is not None and instance.state in ("shutting-down", "terminated")
        )
        if row.state == PoolState.BUILDING:
            if not row.instance_id:
                if now - row.launched_at > BUILD_CLAIM_LEASE:
                    failed.append((row, "RunInstances never recorded an instance"))
            elif gone:
                failed.append((row, f"EC2 lost it ({instance.state if instance else 'not found'})"))
            elif row.attested_at is not None:
                to_stop.append(row)
            elif now - row.launched_at > build_timeout:
                failed.append((row, f"did not attest within {settings.ELEPHANT_HEALTH_TIMEOUT_CAP} minutes"))
        elif row.state == PoolState.STOPPING:
            if gone:
                failed.append((row, f"EC2 lost it ({instance.state if instance else 'not found'})"))
            elif instance is not None and instance.state == "stopped":
                to_ready.append(row)
    if to_stop:
        aws.instances_stop(r.instance_id for r in to_stop)
        PoolInstance.objects.filter(pk__in=[r.pk for r in to_stop], state=PoolState.BUILDING).update(
            state=PoolState.STOPPING
        )
        for row in to_stop:
            row.state = PoolState.STOPPING
        result.stopped += len(to_stop)
    if to_ready:
        PoolInstance.objects.filter(pk__in=[r.pk for r in to_ready], state=PoolState.STOPPING).update(
            state=PoolState.READY, stopped_at=now
        )
        for row in to_ready:
            row.state, row.stopped_at = PoolState.READY, now
        result.ready += len(to_ready)
    for row, error in failed:
        logger.warning("warm-pool instance %s failed: %s", row.instance_id or row.client_token, error)
    if failed:
        result.failed += _retire(
            [row for row, _ in failed], state=PoolState.FAILED, error="; ".join({e for _, e in failed}), now=now
        )


def _retire(rows: list[PoolInstance], *, state: str, error: str, now: datetime) -> int:
    """Terminate pool instances (RETIRING until EC2 took the request, then ``state``)."""
    pks = [r.pk for r in rows]
    # No host keeps a retired instance (one that failed to start for it may be handed its next one).
    PoolInstance.objects.filter(pk__in=pks).update(state=PoolState.RETIRING, last_error=error[:2000], host=None)
    for row in rows:
        row.state = PoolState.RETIRING
    ids = [r.instance_id for r in rows if r.instance_id]
    if ids:
        try:
            aws.instances_terminate(ids)
        except aws.AwsError as exc:
            logger.warning("could not terminate %d warm-pool instances (%s); the next sweep retries", len(ids), exc)
            return 0
    PoolInstance.objects.filter(pk__in=pks, state=PoolState.RETIRING).update(state=state, retired_at=now)
    for row in rows:
        row.state = state
    return len(rows)


def _wanted(*, now: datetime) -> dict[int, int]:
    """Profile id -> pool size: twice its SCHEDULED meetings of the horizon plus the spare, and the spare
    its late bookings call for (``_late_bookings``), within its max."""
    horizon = now + timedelta(hours=settings.ELEPHANT_WARM_POOL_HORIZON_HOURS)
    upcoming = dict(_upcoming(now=now, horizon=horizon))
    profiles_active = _profiles_active()
    late = _late_bookings(now=now, profiles_active=profiles_active)
    wanted = {}
    for profile in profiles_active:
        meetings = upcoming.get(profile.name, 0) + (upcoming.get("", 0) if profile.is_default else 0)
        limit = settings.ELEPHANT_WARM_POOL_MAX if profile.warm_pool_max is None else profile.warm_pool_max
        size = planning.HOSTS_PER_MEETING * meetings + settings.ELEPHANT_WARM_POOL_SPARE if meetings else 0
        wanted[profile.pk] = min(limit, size + late.get(profile.pk, 0))
    return wanted


def _in_windows(*, bounds: list[datetime]):
    days = Q()
    for since, until in zip(bounds[::2], bounds[1::2], strict=True):
        days |= Q(meet_time__gte=since, meet_time__lt=until)
    # Unordered (the caller counts): the database then searches each day's window in the meet_time index
    # instead of walking all of it in order (SQLite: one index scan per window, not a scan of every lesson).
    return Meeting.objects.filter(days).values_list("desktop_profile", "meet_time", "created_at").order_by()


# The sweep's reads, each minute: compiled once (elephant.prepared).
_sweep_rows = PreparedRead(
    lambda: PoolInstance.objects.filter(
        state__in=(PoolState.BUILDING, PoolState.STOPPING, PoolState.READY, PoolState.RETIRING)
    ).values(*_SWEEP_FIELDS)
)
_profiles_active = PreparedRead(lambda: DesktopProfile.objects.filter(is_active=True))
_upcoming = PreparedRead(
    lambda *, now, horizon: (
        Meeting.objects.filter(status=MeetingStatus.SCHEDULED, meet_time__gt=now, meet_time__lte=horizon)
        .values_list("desktop_profile")
        .annotate(n=Count("pk"))
        .values_list("desktop_profile", "n")
    )
)
_booked_in = PreparedRead(_in_windows)
# Read at every warm start.
_refused_since = PreparedRead(
    lambda *, since: (
        PoolInstance.objects.filter(refused_at__gte=since).values_list("instance_type", "availability_zone").order_by()
    )
)


def _late_bookings(*, now: datetime, profiles_active: list[DesktopProfile]) -> dict[int, int]:
    """Profile id -> hosts to keep for late bookings: lessons booked too late for a cold launch (less than
    the profile's cold lead before their start) can be ready only from the pool. Expected from the same
    time of day on the last ``LATE_BOOKING_DAYS`` days: the lessons that started in the window a spare
    takes to be rebuilt (the cold lead, at least an hour) from now, per day that had lessons then, as a
    mean plus two standard deviations (Poisson), two hosts each (one query)."""
    model = planning.boot_model_current(now=now)
    leads = {p.pk: model.lead("" if p.is_default else p.name, False) for p in profiles_active}
    if not leads:
        return {}
    window = max(timedelta(hours=1), max(leads.values()))
    bounds = []
    for day in range(1, LATE_BOOKING_DAYS + 1):
        bounds += [now - timedelta(days=day), now - timedelta(days=day) + window]
    rows = _booked_in(bounds=bounds)
    by_name = {p.name: p for p in profiles_active}
    default = next((p for p in profiles_active if p.is_default), None)
    counts: Counter = Counter()
    observed: set[int] = set()  # the past days (1 = yesterday) that had lessons in the window
    for name, meet_time, created_at in rows:
        observed.add(math.ceil((now - meet_time) / timedelta(days=1)))
        profile = by_name.get(name) or (default if not name else None)
        if profile is not None and meet_time - created_at < leads[profile.pk]:
            counts[profile.pk] += 1
    late = {}
    for pk, count in counts.items():
        mean = count / len(observed)
        late[pk] = planning.HOSTS_PER_MEETING * math.ceil(mean + 2 * math.sqrt(mean))
    return late


def _build(*, wanted: dict[int, int], have: Counter, now: datetime, result: PoolSweepResult) -> None:
    """Launch what the pool lacks, within the RunInstances budget the launch plan leaves this minute."""
    deficits = {pk: size - have[pk] for pk, size in wanted.items() if size > have[pk]}
    if not deficits:
        return
    budget = _build_budget(now=now)
    profiles_by_pk = DesktopProfile.objects.in_bulk(list(deficits))
    for pk, deficit in sorted(deficits.items()):
        profile = profiles_by_pk[pk]
        spec = profiles.pool_launch_spec(profile=profile)
        room = _build_vcpu_room(spec=spec, now=now)
        for index in range(min(deficit, budget, deficit if room is None else room)):
            if not _build_one(profile=profile, spec=spec, rotation=("teacher", "student")[index % 2], now=now):
                return  # out of capacity, throttled or refused: the next sweep tries again
            budget -= 1
            result.built += 1
        if budget <= 0:
            return


def _build_budget(*, now: datetime) -> int:
    """RunInstances calls the plan does not use in the current minute (cold launches planned in it)."""
    per_slot = planning.limits(families=(), now=now).launches_per_slot
    planned = Meeting.objects.filter(
        status=MeetingStatus.SCHEDULED, launch_warm=False, launch_at__gte=now, launch_at__lt=now + timedelta(minutes=1)
    ).count()
    return max(0, per_slot - planning.HOSTS_PER_MEETING * planned)


def _build_vcpu_room(*, spec: aws.LaunchSpec, now: datetime) -> int | None:
    """Builds the running-vCPU quota has room for (None: no quota known): a build runs for about a cold
    boot, so it must fit beside every live host, every build still running and every launch planned
    before it is stopped (three counts; every host taken as one of this type, which errs on the side of
    the lessons: a build never takes the vCPUs a planned launch counts on)."""
    instance_type = (spec.instance_types or ("",))[0]
    family, vcpus = planner.quota_family(instance_type), planner.vcpus_of(instance_type)
    quota = planning.limits(families=[family], now=now).vcpu_quota.get(family)
    if quota is None:
        return None
    until = now + planning.boot_model_current(now=now).lead("", False)
    live = Host.objects.filter(state__in=LIVE_HOST_STATES).exclude(instance_id="").count()
    building = PoolInstance.objects.filter(state=PoolState.BUILDING).count()
    planned = Meeting.objects.filter(status=MeetingStatus.SCHEDULED, launch_at__lte=until).count()
    taken = (live + building + planning.HOSTS_PER_MEETING * planned) * vcpus
    return max(0, (quota - taken) // vcpus)


def _build_one(*, profile: DesktopProfile, spec: aws.LaunchSpec, rotation: str, now: datetime) -> bool:
    token = uuid.uuid4().hex
    row = PoolInstance.objects.create(
        profile=profile, client_token=token, state=PoolState.BUILDING, ami_id=spec.image_id, launched_at=now
    )

    def token_for(candidate: aws.LaunchCandidate) -> str:
        where = hashlib.sha256(f"{candidate.instance_type}|{candidate.where}".encode()).hexdigest()[:16]
        return f"pool-{token}-{where}"

    try:
        instance = aws.instance_launch(
            tags=aws.pool_tags(profile=profile.name),
            token_for=token_for,
            what=f"the warm pool of {profile.name}",
            rotation=rotation,
            spec=spec,
        )
    except aws.AwsError as exc:
        PoolInstance.objects.filter(pk=row.pk).update(
            state=PoolState.FAILED, retired_at=now, last_error=str(exc)[:2000]
        )
        logger.warning("warm-pool build for %s: %s", profile.name, exc)
        return False
    PoolInstance.objects.filter(pk=row.pk).update(
        instance_id=instance.instance_id,
        instance_type=instance.instance_type,
        availability_zone=instance.availability_zone,
    )
    return True
