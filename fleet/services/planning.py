"""Ready at the minute the lesson starts (issue 11): boot history, the learned lead, the plan, admission.

- **Boot history.** Every host records how long it took from its launch to healthy (``Host.boot_seconds``);
  one that never got there records how long it was given (``boot_censored``). ``boot_estimates_refit``
  fits a log-normal per (AMI, type, zone, cold/warm) from that history (``fleet.readiness``: censored
  boots count, recent ones weigh more, a new key starts from ``ELEPHANT_BOOT_PRIOR``) into ``BootEstimate``.
- **The learned lead.** ``BootModel`` reads the estimates once and answers, per meeting, the lead that
  makes both hosts ready by ``meet_time`` with ``ELEPHANT_READY_TARGET`` probability (planned with
  ``ELEPHANT_READY_MARGIN`` of its misses in reserve), and per host its
  health timeout (a far quantile of the same distribution).
- **The plan.** ``fleet_plan_sweep`` (beat) assigns every scheduled meeting of the next
  ``ELEPHANT_PLAN_HORIZON_HOURS`` its ``launch_at`` backwards from its deadline within the account's
  RunInstances/StartInstances buckets and vCPU quotas (``fleet.planner``), and marks the meetings the
  warm pool will serve (``launch_warm``).
- **Admission.** ``schedule_admit`` (registered with ``meetings.schedule``) refuses a booking the limits
  cannot serve, naming the nearest start times that can be, and gives each admitted meeting its
  first ``launch_at``.

``ELEPHANT_LAUNCH_POLICY=fixed`` turns all of it off: ``launch_at`` stays NULL (``meet_time -
ELEPHANT_LAUNCH_LEAD``) and the health timeout is ``ELEPHANT_HEALTH_TIMEOUT``.
"""

import itertools
import logging
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import NotSupportedError, connection
from django.db.models import BigIntegerField, Count, Func, Q
from django.utils import timezone

from elephant.prepared import PreparedRead, PreparedUpdate
from fleet import aws, planner, readiness
from fleet.models import (
    BOOTING_HOST_STATES,
    LIVE_HOST_STATES,
    BootEstimate,
    DesktopOs,
    DesktopProfile,
    Host,
    PoolInstance,
    PoolState,
)
from fleet.planner import Demand
from meetings import windows
from meetings.models import ACTIVE_STATUSES, Meeting, MeetingStatus
from meetings.schedule import Admission

logger = logging.getLogger(__name__)

LEARNED = "learned"
FIXED = "fixed"
POLICIES = (LEARNED, FIXED)
# The estimates are refitted at most this often (a fit reads the whole recent history).
REFIT_EVERY = timedelta(minutes=10)
# Suggested start times are on this grid, at most this far from the refused one.
SUGGESTION_STEP = timedelta(minutes=15)
SUGGESTION_REACH = timedelta(hours=6)
SUGGESTIONS = 3
# One advisory lock serialises admissions, so two bookings cannot both take the last room of a slot.
ADMISSION_LOCK = 0x454C4550  # "ELEP"
HOSTS_PER_MEETING = 2


def learned() -> bool:
    policy = settings.ELEPHANT_LAUNCH_POLICY
    if policy not in POLICIES:
        raise ValueError(f"ELEPHANT_LAUNCH_POLICY must be one of {', '.join(POLICIES)} (got {policy!r})")
    return policy == LEARNED


def pool_enabled() -> bool:
    return learned() and settings.ELEPHANT_WARM_POOL


def earliest_action_lead() -> timedelta:
    """How long before a lesson starts the fleet's beat tasks may first act on it, by the settings: launch
    it (``ELEPHANT_LAUNCH_LEAD`` under the fixed policy; under the learned one, as early as the plan may,
    ``ELEPHANT_MAX_LAUNCH_LEAD``) or, with the warm pool on, build pool instances for it (the pool is sized
    to the lessons of the next ``ELEPHANT_WARM_POOL_HORIZON_HOURS``). Before that the beat has nothing to
    do for the lesson (the fleet simulator skips that time)."""
    if not learned():
        return windows.launch_lead()
    lead = timedelta(minutes=settings.ELEPHANT_MAX_LAUNCH_LEAD)
    if pool_enabled():
        lead = max(lead, timedelta(hours=settings.ELEPHANT_WARM_POOL_HORIZON_HOURS))
    return lead


# --- boot history ---------------------------------------------------------------------------------
def boot_samples_record(*, hosts: Iterable[Host], now: datetime, censored: bool) -> int:
    """Record the boot of each host that has an instance and no boot yet: launch -> ``now``; censored
    (it took longer than that) when it is given up before it became healthy. Judged on the rows as they
    are, not on the objects handed in: one read, then one batch of updates, each still conditional on
    the boot not being recorded (any database: `make run` is SQLite). Returns the boots recorded."""
    pks = sorted({host.pk for host in hosts})
    if not pks:
        return 0
    launched = _boots_unrecorded(pks=pks, censored=censored)
    return _boot_record.many(
        (
            {"boot_seconds": max(0.0, (now - at).total_seconds()), "boot_censored": censored},
            {"pk": pk, "censored": censored},
        )
        for pk, at in launched
    )


def _unrecorded(*, censored: bool):
    rows = Host.objects.filter(boot_seconds__isnull=True, launched_at__isnull=False).exclude(instance_id="")
    return rows.filter(healthy_at__isnull=True) if censored else rows


# Each health check's and each give-up's read and writes: compiled once (elephant.prepared).
_boots_unrecorded = PreparedRead(
    lambda *, pks, censored: _unrecorded(censored=censored).filter(pk__in=pks).values_list("pk", "launched_at")
)
_boot_record = PreparedUpdate(lambda *, pk, censored: _unrecorded(censored=censored).filter(pk=pk))


class _EpochMicroseconds(Func):
    """A datetime column as whole microseconds since 1970-01-01 UTC, worked out by the database: a
    history of thousands of boots is read every ten minutes, and an integer per row costs nothing to
    read where a datetime is parsed from SQLite's text in Python. Exact (integers), so an age from it
    is the float ``timedelta.total_seconds()`` gives (both divide whole microseconds by a million).
    NULL stays NULL. SQLite holds Django's naive UTC text (``YYYY-MM-DD HH:MM:SS[.ffffff]``)."""

    output_field = BigIntegerField()

    def as_sqlite(self, compiler, connection, **extra_context):
        column, params = compiler.compile(self.source_expressions[0])
        # The whole seconds from the text's first 19 characters: SQLite's date functions keep milliseconds
        # and would round .999999 up to the next second.
        seconds = f"CAST(strftime('%%s', substr({column}, 1, 19)) AS INTEGER)"
        fraction = f"CAST(substr({column} || '.000000', 21, 6) AS INTEGER)"
        return f"({seconds} * 1000000 + {fraction})", [*params, *params]  # the column twice

    def as_postgresql(self, compiler, connection, **extra_context):
        column, params = compiler.compile(self.source_expressions[0])
        return f"CAST(EXTRACT(EPOCH FROM {column}) * 1000000 AS BIGINT)", params

    def as_sql(self, compiler, connection, **extra_context):
        raise NotSupportedError(f"the boot history reads PostgreSQL or SQLite, not {connection.vendor}")


_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _epoch_us(moment: datetime) -> int:
    return (moment - _UNIX_EPOCH) // timedelta(microseconds=1)


def _age_days(now_us: int, launched_us: int) -> float:
    """``(now - launched).total_seconds() / 86400`` from whole microseconds (the same float)."""
    return (now_us - launched_us) / 1_000_000 / 86400


def _pool_build_samples(*, since: datetime, now: datetime):
    """The warm pool's builds are cold boots of the same AMIs and types: launch -> attested, or censored
    at the failure of a build that never attested (one query). A build still booting says nothing yet."""
    now_us = _epoch_us(now)
    for ami, instance_type, zone, launched, attested, retired in _pool_build_rows(since=since):
        end = attested if attested is not None else retired
        seconds = max(0.0, (end - launched) / 1_000_000)
        yield (ami, instance_type, zone, False), seconds, attested is None, _age_days(now_us, launched)


# The history a refit reads (on SQLite, every ten minutes: PostgreSQL sums it itself), thousands of rows:
# compiled once, the times as whole microseconds and the rows as the driver gives them (no converter per
# value; the flags are made bool where they are read).
_host_boot_rows = PreparedRead(
    lambda *, since: (
        Host.objects.filter(boot_seconds__isnull=False, launched_at__gte=since)
        .exclude(ami_id="")
        .values_list(
            "ami_id",
            "instance_type",
            "availability_zone",
            "warm_start",
            "boot_seconds",
            "boot_censored",
            _EpochMicroseconds("launched_at"),
        )
    ),
    raw=True,
)
_pool_build_rows = PreparedRead(
    lambda *, since: (
        PoolInstance.objects.filter(launched_at__gte=since)
        .exclude(instance_id="")
        .exclude(ami_id="")
        .filter(Q(attested_at__isnull=False) | Q(state=PoolState.FAILED, retired_at__isnull=False))
        .values_list(
            "ami_id",
            "instance_type",
            "availability_zone",
            _EpochMicroseconds("launched_at"),
            _EpochMicroseconds("attested_at"),
            _EpochMicroseconds("retired_at"),
        )
    ),
    raw=True,
)


@dataclass
class KeyHistory:
    """One key's recorded boots as the fit and the admin use them."""

    stats: readiness.BootStats = field(default_factory=readiness.BootStats)
    samples: int = 0
    censored: int = 0
    observed_p50: float | None = None
    observed_p95: float | None = None
    observed_tail: float | None = None  # the readiness.TAIL_QUANTILE of the uncensored boots


def _history(*, since: datetime, now: datetime, summed: bool | None = None) -> dict[tuple, KeyHistory]:
    """Every key's recorded boots since ``since`` (hosts' and pool builds'). PostgreSQL adds the
    uncensored ones up itself (one row per key, whatever the months of history); elsewhere they are
    read (``summed`` picks one way regardless, for the test that holds them equal)."""
    if summed if summed is not None else connection.vendor == "postgresql":
        return _history_summed(since=since, now=now)
    half_life = settings.ELEPHANT_BOOT_HALF_LIFE_DAYS
    now_us = _epoch_us(now)
    boots = (
        ((ami, instance_type, zone, bool(warm)), seconds, bool(censored), _age_days(now_us, launched))
        for ami, instance_type, zone, warm, seconds, censored, launched in _host_boot_rows(since=since)
    )
    found: dict[tuple, KeyHistory] = defaultdict(KeyHistory)
    observed: dict[tuple, list[float]] = defaultdict(list)
    # Each boot as its values, not a BootSample (a refit adds every boot of the history, every ten minutes).
    for key, seconds, censored, age_days in itertools.chain(boots, _pool_build_samples(since=since, now=now)):
        history = found[key]
        history.stats.add_boot(seconds, censored, age_days, half_life)
        history.samples += 1
        history.censored += censored
        if not censored:
            observed[key].append(seconds)
    for key, seconds in observed.items():
        seconds.sort()
        history = found[key]
        history.observed_p50, history.observed_p95 = _percentile(seconds, 0.50), _percentile(seconds, 0.95)
        history.observed_tail = _percentile(seconds, readiness.TAIL_QUANTILE)
    return dict(found)


def _history_sql() -> str:
    host, pool = Host._meta.db_table, PoolInstance._meta.db_table
    return f"""
        WITH boots AS (
            SELECT ami_id, instance_type, availability_zone, warm_start AS warm,
                   boot_seconds AS seconds, boot_censored AS censored, launched_at
            FROM "{host}"
            WHERE boot_seconds IS NOT NULL AND launched_at >= %(since)s AND ami_id <> ''
            UNION ALL
            SELECT ami_id, instance_type, availability_zone, FALSE,
                   GREATEST(EXTRACT(EPOCH FROM COALESCE(attested_at, retired_at) - launched_at), 0)::float8,
                   attested_at IS NULL, launched_at
            FROM "{pool}"
            WHERE launched_at >= %(since)s AND instance_id <> '' AND ami_id <> ''
              AND (attested_at IS NOT NULL OR (state = %(failed)s AND retired_at IS NOT NULL))
        ), weighted AS (
            SELECT *,
                   POWER(0.5::float8, GREATEST(EXTRACT(EPOCH FROM %(now)s - launched_at), 0)::float8
                         / 86400.0 / %(half_life)s) AS w,
                   LN(GREATEST(seconds, 0.001)::float8) AS y
            FROM boots
        )
        SELECT ami_id, instance_type, availability_zone, warm, COUNT(*), COUNT(*) FILTER (WHERE censored),
               COALESCE(SUM(w ORDER BY launched_at, seconds) FILTER (WHERE NOT censored AND w > 1e-9), 0),
               COALESCE(SUM(w * y ORDER BY launched_at, seconds) FILTER (WHERE NOT censored AND w > 1e-9), 0),
               COALESCE(SUM(w * y * y ORDER BY launched_at, seconds) FILTER (WHERE NOT censored AND w > 1e-9), 0),
               PERCENTILE_DISC(0.5) WITHIN GROUP (ORDER BY seconds) FILTER (WHERE NOT censored),
               PERCENTILE_DISC(0.95) WITHIN GROUP (ORDER BY seconds) FILTER (WHERE NOT censored),
               PERCENTILE_DISC(%(tail)s) WITHIN GROUP (ORDER BY seconds) FILTER (WHERE NOT censored),
               ARRAY_AGG(y ORDER BY launched_at, seconds) FILTER (WHERE censored AND w > 1e-9),
               ARRAY_AGG(w ORDER BY launched_at, seconds) FILTER (WHERE censored AND w > 1e-9)
        FROM weighted GROUP BY 1, 2, 3, 4
    """


def _history_summed(*, since: datetime, now: datetime) -> dict[tuple, KeyHistory]:
    params = {
        "since": since,
        "now": now,
        "half_life": settings.ELEPHANT_BOOT_HALF_LIFE_DAYS,
        "failed": PoolState.FAILED,
        "tail": readiness.TAIL_QUANTILE,
    }
    found = {}
    with connection.cursor() as cursor:
        cursor.execute(_history_sql(), params)
        for ami, instance_type, zone, warm, count, censored, w, wy, wy2, p50, p95, tail, ys, ws in cursor.fetchall():
            stats = readiness.BootStats(
                known_weight=w, known_y=wy, known_y2=wy2, censored=list(zip(ys or [], ws or [], strict=True))
            )
            found[(ami, instance_type, zone, warm)] = KeyHistory(stats, count, censored, p50, p95, tail)
    return found


def _in_flight(*, since: datetime, now: datetime):
    """Boots still going on (hosts not yet healthy, pool builds not yet attested): each took at least
    as long as it has run so far, which the fit counts as censored, so a slow hour moves the lead
    while its boots are still coming up rather than once they are over (one query each). In launch
    order, as ``_history_sql`` adds its sums up: floating-point addition depends on the order, and
    rows come back in whatever order the table holds them, so two runs of one history would differ
    in the last digits of a fit (and once in a while in a lead rounded up to the second)."""
    hosts = (
        Host.objects.filter(
            state__in=BOOTING_HOST_STATES, boot_seconds__isnull=True, healthy_at__isnull=True, launched_at__gte=since
        )
        .exclude(instance_id="")
        .exclude(ami_id="")
        .values_list("ami_id", "instance_type", "availability_zone", "warm_start", "launched_at")
        .order_by("launched_at", "pk")
    )
    builds = (
        PoolInstance.objects.filter(state=PoolState.BUILDING, attested_at__isnull=True, launched_at__gte=since)
        .exclude(instance_id="")
        .exclude(ami_id="")
        .values_list("ami_id", "instance_type", "availability_zone", "launched_at")
        .order_by("launched_at", "pk")
    )
    rows = itertools.chain(hosts, ((ami, kind, zone, False, at) for ami, kind, zone, at in builds))
    for ami, instance_type, zone, warm, launched in rows:
        seconds = max(0.0, (now - launched).total_seconds())
        yield (ami, instance_type, zone, warm), readiness.BootSample(seconds=seconds, censored=True)


def _prior(os: str, warm: bool) -> readiness.Prior:
    table = settings.ELEPHANT_BOOT_PRIOR
    median, p95 = table.get(os, table.get(DesktopOs.WINDOWS, {})).get("warm" if warm else "cold", (420, 1200))
    return readiness.Prior(
        distribution=readiness.LogNormal.from_median_p95(float(median), float(p95)),
        weight=settings.ELEPHANT_BOOT_PRIOR_WEIGHT,
    )


# Reads every plan makes (each minute) and every booking: compiled once (elephant.prepared).
_last_fitted_at = PreparedRead(
    lambda: BootEstimate.objects.order_by("-fitted_at").values_list("fitted_at", flat=True)[:1]
)
_estimates_all = PreparedRead(lambda: BootEstimate.objects.all())


def boot_estimates_refit(*, now: datetime | None = None, force: bool = False) -> int:
    """Fit every key's distribution from the last ``ELEPHANT_BOOT_HISTORY_DAYS`` of boots, and the boots
    still going on (censored at how long they have run so far): a constant number of queries, one write
    per key. Skipped when the last fit is younger than ``REFIT_EVERY`` (unless ``force``). Returns the
    number of keys fitted."""
    now = now or timezone.now()
    if not force:
        last = next(iter(_last_fitted_at()), None)
        if last is not None and now - last < REFIT_EVERY:
            return 0
    since = now - timedelta(days=settings.ELEPHANT_BOOT_HISTORY_DAYS)
    found = _history(since=since, now=now)
    for key, sample in _in_flight(since=since, now=now):
        found.setdefault(key, KeyHistory()).stats.add(sample, half_life_days=settings.ELEPHANT_BOOT_HALF_LIFE_DAYS)
    os_of_ami = _os_of_amis()
    for (ami, instance_type, zone, warm), history in found.items():
        fit = readiness.boot_fit(history.stats, prior=_prior(os_of_ami.get(ami, DesktopOs.WINDOWS), warm))
        fit = readiness.tail_held(fit, observed=history.observed_tail, samples=history.samples - history.censored)
        BootEstimate.objects.update_or_create(
            ami_id=ami,
            instance_type=instance_type,
            availability_zone=zone,
            warm_start=warm,
            defaults={
                "mu": fit.mu,
                "sigma": fit.sigma,
                "samples": history.samples,
                "censored": history.censored,
                "observed_p50_seconds": history.observed_p50,
                "observed_p95_seconds": history.observed_p95,
                "fitted_at": now,
            },
        )
    if not found:
        BootEstimate.objects.update(fitted_at=now)
    return len(found)


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _os_of_amis() -> dict[str, str]:
    """Which OS each AMI runs, from the profiles that name it (the settings' AMI: the default profile's)."""
    found = {}
    for profile in DesktopProfile.objects.all():
        found.setdefault(profile.ami_id or settings.ELEPHANT_AMI_ID, profile.os)
    return found


# --- the model the plan reads ---------------------------------------------------------------------
@dataclass
class ProfileLaunch:
    """What the plan needs of a profile: its image and first type, OS, vCPUs and quota family."""

    name: str
    os: str
    ami_id: str
    instance_type: str
    pool_max: int

    @property
    def vcpus(self) -> int:
        return planner.vcpus_of(self.instance_type)

    @property
    def family(self) -> str:
        return planner.quota_family(self.instance_type)


@dataclass
class BootModel:
    """The estimates and profiles, read once (two queries), answering leads and timeouts."""

    estimates: dict[tuple[str, str, str, bool], readiness.LogNormal] = field(default_factory=dict)
    profiles: dict[str, ProfileLaunch] = field(default_factory=dict)  # "" is the default profile
    _leads: dict[tuple[str, bool], timedelta] = field(default_factory=dict)

    @classmethod
    def load(cls) -> "BootModel":
        model = cls()
        for estimate in _estimates_all():
            key = (estimate.ami_id, estimate.instance_type, estimate.availability_zone, estimate.warm_start)
            model.estimates[key] = estimate.distribution
        from fleet.profiles import builtin_default_profile, desktop_profiles_all

        rows = desktop_profiles_all()
        default = next((p for p in rows if p.is_default), None) or builtin_default_profile()
        for profile in [*rows, default]:
            types = profile.instance_type_list or list(settings.ELEPHANT_INSTANCE_TYPES) or [""]
            launch = ProfileLaunch(
                name=profile.name,
                os=profile.os,
                ami_id=profile.ami_id or settings.ELEPHANT_AMI_ID,
                instance_type=types[0],
                pool_max=settings.ELEPHANT_WARM_POOL_MAX if profile.warm_pool_max is None else profile.warm_pool_max,
            )
            model.profiles[profile.name] = launch
            if profile is default:
                model.profiles[""] = launch
        return model

    def profile(self, name: str) -> ProfileLaunch:
        return self.profiles.get(name) or self.profiles[""]

    def distribution(self, *, ami_id: str, instance_type: str, zone: str, warm: bool, os: str) -> readiness.LogNormal:
        """The key's fit; for a zone without one, the slowest fit of the image and type in any zone; else the prior."""
        exact = self.estimates.get((ami_id, instance_type, zone, warm))
        if exact is not None:
            return exact
        others = [d for (a, t, _, w), d in self.estimates.items() if (a, t, w) == (ami_id, instance_type, warm)]
        if others:
            return max(others, key=lambda d: d.quantile(0.99))
        return _prior(os, warm).distribution

    def meeting_distribution(self, profile_name: str, warm: bool) -> readiness.LogNormal:
        profile = self.profile(profile_name)
        return self.distribution(
            ami_id=profile.ami_id, instance_type=profile.instance_type, zone="", warm=warm, os=profile.os
        )

    def lead(self, profile_name: str, warm: bool) -> timedelta:
        """How long before ``meet_time`` a meeting of this profile launches so both hosts are ready in time."""
        key = (profile_name, warm)
        if key not in self._leads:
            distribution = self.meeting_distribution(profile_name, warm)
            target = readiness.plan_target(settings.ELEPHANT_READY_TARGET, margin=settings.ELEPHANT_READY_MARGIN)
            seconds = readiness.launch_lead([distribution] * HOSTS_PER_MEETING, target=target)
            self._leads[key] = timedelta(seconds=math.ceil(seconds))
        return self._leads[key]

    def health_timeout(self, host: Host) -> timedelta:
        """How long ``host`` may take from launch to healthy before it is replaced."""
        if not learned():
            return timedelta(minutes=settings.ELEPHANT_HEALTH_TIMEOUT)
        profile = self.profile(host.meeting.desktop_profile if _meeting_loaded(host) else "")
        distribution = self.distribution(
            ami_id=host.ami_id or profile.ami_id,
            instance_type=host.instance_type or profile.instance_type,
            zone=host.availability_zone,
            warm=host.warm_start,
            os=profile.os,
        )
        seconds = readiness.health_timeout(
            distribution,
            quantile=settings.ELEPHANT_HEALTH_TIMEOUT_QUANTILE,
            floor_seconds=settings.ELEPHANT_HEALTH_TIMEOUT * 60,
            cap_seconds=settings.ELEPHANT_HEALTH_TIMEOUT_CAP * 60,
        )
        return timedelta(seconds=math.ceil(seconds))


def _meeting_loaded(host: Host) -> bool:
    return Host.meeting.is_cached(host)


# The model the health checks read, reloaded once a minute (estimates are refitted every ten; every
# reconcile and health sweep would otherwise read it again). Keyed by the minute of ``now``.
_current: dict[str, tuple[datetime, BootModel]] = {}
CURRENT_FOR = timedelta(minutes=1)


def boot_model_current(*, now: datetime | None = None) -> BootModel:
    now = now or timezone.now()
    cached = _current.get("model")
    if cached is None or not cached[0] <= now < cached[0] + CURRENT_FOR:
        cached = (now, BootModel.load())
        _current["model"] = cached
    return cached[1]


def boot_model_forget() -> None:
    """Drop the cached model (tests, and after staff change a profile)."""
    _current.clear()


def health_timeout_of(hosts: Iterable[Host]) -> dict[int, timedelta]:
    """Each host's health timeout (the model read at most once a minute, whatever the number of hosts)."""
    hosts = list(hosts)
    if not learned():
        fixed = timedelta(minutes=settings.ELEPHANT_HEALTH_TIMEOUT)
        return {host.pk: fixed for host in hosts}
    if not hosts:
        return {}
    model = boot_model_current()
    return {host.pk: model.health_timeout(host) for host in hosts}


# --- limits ---------------------------------------------------------------------------------------
_quota_cache: dict[str, tuple[datetime, int | None]] = {}
QUOTA_CACHE = timedelta(hours=6)


def limits(*, families: Iterable[str], now: datetime) -> planner.Limits:
    """The account's limits as the plan uses them: the buckets' refill (times ELEPHANT_PLAN_BUCKET_SHARE)
    and the vCPU quota per family (ELEPHANT_VCPU_QUOTA, else Service Quotas, cached for six hours)."""
    quotas = {family: int(value) for family, value in settings.ELEPHANT_VCPU_QUOTA.items()}
    if settings.ELEPHANT_SERVICE_QUOTAS:
        for family in set(families) - set(quotas):
            cached = _quota_cache.get(family)
            if cached is None or now - cached[0] > QUOTA_CACHE:
                cached = (now, aws.vcpu_quota(family))
                _quota_cache[family] = cached
            if cached[1] is not None:
                quotas[family] = cached[1]
    return planner.Limits.from_bucket(
        refill_per_second=settings.ELEPHANT_RUN_INSTANCES_PER_SECOND,
        start_refill_per_second=settings.ELEPHANT_START_INSTANCES_PER_SECOND,
        share=settings.ELEPHANT_PLAN_BUCKET_SHARE,
        vcpu_quota=quotas,
    )


def _occupied(*, now: datetime, model: BootModel) -> planner.Occupancy:
    """vCPUs of the hosts running now, per family until their meeting's hard stop (one query, one row
    per type, profile and schedule: the hosts of lessons that end together count together), and of the
    warm pool's builds for about a cold boot (one more)."""
    running = []
    for instance_type, profile_name, meet_time, duration, count in _running_hosts():
        instance_type = instance_type or model.profile(profile_name).instance_type
        until = windows.hard_stop_at(meet_time, duration)
        vcpus = planner.vcpus_of(instance_type) * count
        running.append((planner.quota_family(instance_type), vcpus, now, until))
    # Warm-pool builds run too, for about a cold boot (stopped, they hold no vCPUs).
    for instance_type, count in _builds_running():
        instance_type = instance_type or model.profile("").instance_type
        until = now + model.lead("", False)
        running.append((planner.quota_family(instance_type), planner.vcpus_of(instance_type) * count, now, until))
    return planner.vcpus_running(running)


_running_hosts = PreparedRead(
    lambda: (
        Host.objects.filter(state__in=sorted(LIVE_HOST_STATES), meeting__status__in=sorted(ACTIVE_STATUSES))
        .values_list("instance_type", "meeting__desktop_profile", "meeting__meet_time", "meeting__duration_minutes")
        .annotate(n=Count("pk"))
        .order_by()
    )
)
_builds_running = PreparedRead(
    lambda: (
        PoolInstance.objects.filter(state=PoolState.BUILDING)
        .values_list("instance_type")
        .annotate(n=Count("pk"))
        .order_by()
    )
)
_pool_stock = PreparedRead(
    lambda: PoolInstance.objects.held().values_list("profile__name", "state").annotate(n=Count("pk")).order_by()
)


# --- the plan ----------------------------------------------------------------------------------------
class Booking(NamedTuple):
    """A meeting as the plan sees it (a scheduled one, or one being booked; a tuple: the plan reads
    hundreds each minute)."""

    key: str
    meet_time: datetime
    duration_minutes: int
    desktop_profile: str = ""
    warm: bool = False
    launch_at: datetime | None = None  # as planned before (None for one being booked)


def _demands(bookings: Iterable[Booking], *, model: BootModel, now: datetime) -> list[planner.Demand]:
    """What each booking asks of the plan. A plan holds every scheduled meeting of the horizon and is
    made each minute, so what is the same for all meetings of a profile (its lead, vCPUs and quota
    family) and the settings are worked out once per call, not once per meeting."""
    reach = timedelta(minutes=settings.ELEPHANT_MAX_LAUNCH_LEAD)
    per_profile: dict[tuple[str, bool], tuple[timedelta, int, str]] = {}
    runs: dict[int, timedelta] = {}  # per duration: from meet_time to the hard stop
    demands = []
    for booking in bookings:
        key = (booking.desktop_profile, booking.warm)
        if key not in per_profile:
            profile = model.profile(booking.desktop_profile)
            per_profile[key] = (model.lead(*key), profile.vcpus, profile.family)
        lead, vcpus, family = per_profile[key]
        if booking.duration_minutes not in runs:
            runs[booking.duration_minutes] = windows.hard_stop_after(booking.duration_minutes)
        deadline = booking.meet_time - lead
        earliest = max(now, booking.meet_time - reach)
        # Positional, in Demand's order (key, deadline, earliest, end, instances, vCPUs, family, bucket): the
        # plan makes hundreds a minute. Booked at short notice: launch at once (the desktops are late, but as
        # early as they can be).
        demands.append(
            Demand(
                booking.key,
                max(deadline, earliest),
                earliest,
                booking.meet_time + runs[booking.duration_minutes],
                HOSTS_PER_MEETING,
                vcpus,
                family,
                planner.START if booking.warm else planner.RUN,
            )
        )
    return demands


@dataclass
class _Context:
    """What every plan of one sweep or one booking shares: the model, the limits, the running vCPUs."""

    model: BootModel
    now: datetime
    _limits: planner.Limits | None = None
    _occupied: planner.Occupancy | None = None

    @property
    def limits(self) -> planner.Limits:
        if self._limits is None:
            families = {p.family for p in self.model.profiles.values()}
            self._limits = limits(families=families, now=self.now)
        return self._limits

    @property
    def occupied(self) -> planner.Occupancy:
        if self._occupied is None:
            self._occupied = _occupied(now=self.now, model=self.model)
        return self._occupied


def _plan(bookings: list[Booking], *, context: _Context) -> planner.Plan:
    demands = _demands(bookings, model=context.model, now=context.now)
    return planner.plan_launches(demands, context.limits, occupied=context.occupied)


def _scheduled(*, since: datetime, until: datetime, exclude: Iterable[str] = ()) -> list[Booking]:
    return list(map(Booking._make, _scheduled_rows(since=since, until=until, exclude=list(exclude))))


# Read by every plan (each minute) and every booking: compiled once (elephant.prepared).
_scheduled_rows = PreparedRead(
    lambda *, since, until, exclude: (
        Meeting.objects.filter(status=MeetingStatus.SCHEDULED, meet_time__gte=since, meet_time__lte=until)
        .exclude(pk__in=exclude)
        .values_list("pk", "meet_time", "duration_minutes", "desktop_profile", "launch_warm", "launch_at")
    )
)


def _pool_coverage(bookings: list[Booking], *, model: BootModel, now: datetime) -> list[Booking]:
    """Mark the meetings the warm pool can serve: its ready (stopped) instances go to the earliest
    meetings of their profile, and instances still building to meetings late enough for the build to
    finish first (one query)."""
    if not pool_enabled():  # every meeting cold (each booking as read, unless it was planned warm before)
        return [b._replace(warm=False) if b.warm else b for b in bookings]
    stock: dict[str, dict[str, int]] = defaultdict(lambda: {"ready": 0, "building": 0})
    for profile_name, state, count in _pool_stock():
        stock[profile_name]["ready" if state in (PoolState.READY, PoolState.STOPPING) else "building"] += count
    covered = []
    for booking in sorted(bookings, key=lambda b: (b.meet_time, b.key)):
        profile = model.profile(booking.desktop_profile)
        have = stock[profile.name]
        warm = False
        if have["ready"] >= HOSTS_PER_MEETING:
            have["ready"] -= HOSTS_PER_MEETING
            warm = True
        elif have["ready"] + have["building"] >= HOSTS_PER_MEETING:
            built_by = now + model.lead(booking.desktop_profile, False)
            if booking.meet_time - model.lead(booking.desktop_profile, True) >= built_by:
                from_ready = have["ready"]
                have["ready"] = 0
                have["building"] -= HOSTS_PER_MEETING - from_ready
                warm = True
        covered.append(booking if booking.warm == warm else booking._replace(warm=warm))
    return covered


@dataclass
class PlanResult:
    planned: int = 0
    changed: int = 0
    unplaceable: list[str] = field(default_factory=list)


# The plan's writes: one statement per meeting whose launch changed, compiled once (elephant.prepared) and
# sent as one executemany (bulk_update would build a CASE of every changed meeting each minute).
_launch_at_update = PreparedUpdate(lambda *, pk: Meeting.objects.filter(pk=pk))


def fleet_plan_sweep(*, now: datetime | None = None) -> PlanResult:
    """Refit the boot estimates when due, then plan every scheduled meeting of the horizon and write
    the ``launch_at`` / ``launch_warm`` that changed (a constant number of queries)."""
    now = now or timezone.now()
    result = PlanResult()
    if not learned():
        return result
    boot_estimates_refit(now=now)
    model = BootModel.load()
    bookings = _scheduled(
        since=now - timedelta(hours=1), until=now + timedelta(hours=settings.ELEPHANT_PLAN_HORIZON_HOURS)
    )
    was_warm = {booking.key: booking.warm for booking in bookings}
    bookings = _pool_coverage(bookings, model=model, now=now)
    context = _Context(model=model, now=now)
    plan = _plan(bookings, context=context)
    result.planned = len(bookings)
    result.unplaceable = list(plan.refused)
    changed = []
    for booking in bookings:
        # A meeting the limits cannot place (admitted against another lead, or the quota filled since)
        # launches at its deadline, not as early as it may: earlier would hold its vCPUs longer and take the
        # bucket room of meetings that fit, so one unplaceable meeting would push the next out (a cascade
        # seen under a tight vCPU quota). The burst the plan leaves free serves it.
        launch_at = plan.launch_at.get(booking.key) or _demands([booking], model=model, now=now)[0].deadline
        if (booking.launch_at, was_warm[booking.key]) != (launch_at, booking.warm):
            changed.append(({"launch_at": launch_at, "launch_warm": booking.warm}, {"pk": booking.key}))
    _launch_at_update.many(changed)
    result.changed = len(changed)
    if plan.refused:
        logger.warning(
            "the plan could not place %d meetings within the limits: %s", len(plan.refused), plan.refused[:10]
        )
    return result


# --- admission at booking ------------------------------------------------------------------------------
def _window(meet_time: datetime, duration_minutes: int) -> tuple[datetime, datetime]:
    """The meetings whose launches or running hosts can compete with one at ``meet_time``."""
    reach = timedelta(minutes=settings.ELEPHANT_MAX_LAUNCH_LEAD)
    longest = timedelta(minutes=settings.ELEPHANT_MAX_DURATION_MINUTES + settings.ELEPHANT_OVERRUN_GRACE)
    end = windows.hard_stop_at(meet_time, duration_minutes)
    return meet_time - reach - longest, end + reach


def _admits(candidate: Booking, *, context: _Context, others: list[Booking]) -> datetime | None:
    """The launch time the plan gives ``candidate`` among ``others``, or None when adding it would leave
    a meeting without room (the candidate or one already admitted)."""
    with_it = _plan([*others, candidate], context=context)
    if candidate.key in with_it.refused:
        return None
    if with_it.refused and len(with_it.refused) > len(_plan(others, context=context).refused):
        return None
    return with_it.launch_at[candidate.key]


def schedule_admit(
    *, starts: list[datetime], duration_minutes: int, desktop_profile: str = "", exclude_meeting_id: str = ""
) -> list[Admission]:
    """Admit bookings (one per start, as a weekly series gives) or raise ``ValidationError`` on
    ``meet_time`` naming the nearest start times the limits can serve.

    Runs inside the booking's transaction: an advisory lock makes concurrent bookings take turns, so
    two cannot both take the last room of a slot. Under the ``fixed`` policy everything is admitted
    with no ``launch_at`` (``meet_time - ELEPHANT_LAUNCH_LEAD``).
    """
    if not learned():
        return [Admission(launch_at=None) for _ in starts]
    now = timezone.now()
    if connection.in_atomic_block and connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ADMISSION_LOCK])
    context = _Context(model=BootModel.load(), now=now)
    admitted = []
    booked: list[Booking] = []
    exclude = [exclude_meeting_id] if exclude_meeting_id else []
    for index, start in enumerate(starts):
        candidate = Booking(f"new-{index}", start, duration_minutes, desktop_profile)
        since, until = _window(start, duration_minutes)
        others = [*_scheduled(since=since, until=until, exclude=exclude), *booked]
        others = [b for b in others if since <= b.meet_time <= until]
        candidate = _warm_if_late(candidate, others=others, context=context)
        launch_at = _admits(candidate, context=context, others=others)
        if launch_at is None:
            raise ValidationError(
                {"meet_time": [_refusal(start, duration_minutes, desktop_profile, context=context, exclude=exclude)]}
            )
        booked.append(candidate)
        admitted.append(Admission(launch_at=launch_at, warm=candidate.warm))
    return admitted


def _warm_if_late(candidate: Booking, *, others: list[Booking], context: _Context) -> Booking:
    """A booking too late for a cold launch to be ready in time (its cold deadline is before the next
    plan) goes on the warm pool when the pool has instances for it, so the launch sweep does not start
    it cold before the plan sweep sees it: the pool keeps a spare for exactly these (``pool._wanted``)."""
    if not pool_enabled():
        return candidate
    cold_deadline = candidate.meet_time - context.model.lead(candidate.desktop_profile, False)
    if cold_deadline > context.now + timedelta(seconds=settings.ELEPHANT_PLAN_SECONDS):
        return candidate
    covered = _pool_coverage([*others, candidate], model=context.model, now=context.now)
    return next(b for b in covered if b.key == candidate.key)


def _refusal(
    start: datetime, duration_minutes: int, desktop_profile: str, *, context: _Context, exclude: list[str]
) -> str:
    suggestions = nearest_free_starts(start, duration_minutes, desktop_profile, context=context, exclude=exclude)
    when = start.strftime("%Y-%m-%d %H:%M UTC")
    if not suggestions:
        return (
            f"No desktops can be ready for {when}: the account's EC2 launch limits are taken by other lessons, "
            f"and no start within {SUGGESTION_REACH.total_seconds() / 3600:g} hours is free. Pick another day."
        )
    listed = ", ".join(s.strftime("%Y-%m-%d %H:%M UTC") for s in suggestions)
    return (
        f"No desktops can be ready for {when}: the account's EC2 launch limits are taken by other lessons "
        f"at that time. The nearest start times with desktops free: {listed}."
    )


def nearest_free_starts(
    start: datetime,
    duration_minutes: int,
    desktop_profile: str = "",
    *,
    context: _Context | None = None,
    exclude: list[str] | None = None,
    count: int = SUGGESTIONS,
) -> list[datetime]:
    """The start times nearest to ``start`` (on a 15-minute grid, before or after, none in the past)
    that the limits can serve (one read of the meetings around them)."""
    if context is None:
        context = _Context(model=BootModel.load(), now=timezone.now())
    base = start.replace(second=0, microsecond=0)
    base -= timedelta(minutes=base.minute % 15)
    offsets = [timedelta(0)] if base != start else []
    for step in range(1, int(SUGGESTION_REACH / SUGGESTION_STEP) + 1):
        offsets += [step * SUGGESTION_STEP, -step * SUGGESTION_STEP]
    lo = _window(start - SUGGESTION_REACH, duration_minutes)[0]
    hi = _window(start + SUGGESTION_REACH, duration_minutes)[1]
    everything = _scheduled(since=lo, until=hi, exclude=exclude or [])
    found: list[datetime] = []
    for offset in offsets:
        moment = base + offset
        if moment <= context.now or moment == start:
            continue
        since, until = _window(moment, duration_minutes)
        others = [b for b in everything if since <= b.meet_time <= until]
        if _admits(Booking("suggestion", moment, duration_minutes, desktop_profile), context=context, others=others):
            found.append(moment)
            if len(found) == count:
                break
    return sorted(found)
