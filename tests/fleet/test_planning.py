"""Issue 11 end to end on the real database and the local EC2: boot history with censoring, the plan
under a tight RunInstances bucket, admission refusal (service and API), warm-pool assignment and the
fallback from a failed warm start."""

import itertools
import json
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import F
from django.test import Client

from fleet import planner, profiles, readiness, services
from fleet.models import BootEstimate, DesktopProfile, Host, HostState, PoolInstance, PoolState
from fleet.services import planning
from meetings.apikeys import api_key_create
from meetings.models import Meeting, MeetingStatus, UsagePlan
from meetings.services import meeting_schedule
from tests.factories import make_host, make_meeting
from tests.fleet.conftest import aws_error

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.fixture
def frozen():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


def book(meet_time, **fields):
    return meeting_schedule(teacher_name="Tina", student_name="Stu", meet_time=meet_time, actor="test", **fields)


# --- boot history ------------------------------------------------------------------------------
def _history_host(meeting, role, *, state, ami="ami-0history", **fields):
    """A host of the boot history's one key (the image, g4dn.xlarge, us-west-2a)."""
    fields.setdefault("instance_id", f"i-{abs(hash((meeting.pk, role))) % 10**12:012x}")
    fields.setdefault("launched_at", NOW - timedelta(hours=1))
    return make_host(
        meeting, role, state=state, ami_id=ami, instance_type="g4dn.xlarge", availability_zone="us-west-2a", **fields
    )


def _booted(meeting, role, seconds, *, censored=False, ami="ami-0history"):
    return _history_host(
        meeting, role, state=HostState.TERMINATED, ami=ami, boot_seconds=seconds, boot_censored=censored
    )


def _quick_history(settings, *, meetings):
    """Two boots of about 300 s for each of ``meetings`` lessons an hour ago, fitted."""
    settings.ELEPHANT_AMI_ID = "ami-0history"
    for n in range(meetings):
        meeting = make_meeting(meet_time=NOW - timedelta(hours=1, minutes=n))
        _booted(meeting, "teacher", 300 + n)
        _booted(meeting, "student", 310 + n)
    planning.boot_estimates_refit(now=NOW, force=True)


def test_timed_out_boots_count_as_censored_and_push_the_learned_lead_up(frozen, settings):
    _quick_history(settings, meetings=20)
    (quick,) = BootEstimate.objects.all()
    lead_before = planning.BootModel.load().lead("", False)
    assert quick.samples == 40 and quick.censored == 0
    assert 290 < quick.distribution.median < 330

    # Ten more hosts gave up after 600 s: they are not dropped, they say "longer than 600 s".
    for n in range(5):
        meeting = make_meeting(meet_time=NOW - timedelta(hours=2, minutes=n))
        _booted(meeting, "teacher", 600, censored=True)
        _booted(meeting, "student", 600, censored=True)
    planning.boot_estimates_refit(now=NOW, force=True)
    (slow,) = BootEstimate.objects.all()
    assert slow.censored == 10 and slow.samples == 50
    assert slow.distribution.quantile(0.9) > 600  # a fit that dropped them would put p90 near 330 s
    assert planning.BootModel.load().lead("", False) > lead_before


def test_a_meetings_lead_aims_past_the_target_by_the_ready_margin(frozen, settings):
    _quick_history(settings, meetings=20)
    (estimate,) = BootEstimate.objects.all()
    both = [estimate.distribution] * 2

    def lead(margin):
        settings.ELEPHANT_READY_MARGIN = margin
        return planning.BootModel.load().lead("", False).total_seconds()

    exact, planned = lead(0.0), lead(0.5)
    assert readiness.ready_probability(both, exact) == pytest.approx(0.99, abs=1e-3)
    assert readiness.ready_probability(both, planned) == pytest.approx(0.995, abs=1e-3)
    assert planned > exact
    settings.ELEPHANT_READY_MARGIN = 1.0  # no miss allowed at all: refused, not a lead of forever
    with pytest.raises(ValueError, match="ELEPHANT_READY_MARGIN"):
        planning.BootModel.load().lead("", False)


def test_warm_pool_builds_feed_the_cold_boot_history(frozen, settings):
    settings.ELEPHANT_AMI_ID = "ami-0history"
    profile = DesktopProfile.objects.get(is_default=True)
    for n in range(12):
        launched = NOW - timedelta(hours=3, minutes=n)
        PoolInstance.objects.create(
            profile=profile,
            instance_id=f"i-0pool{n:012x}",
            client_token=f"pool-{n}",
            state=PoolState.READY,
            ami_id="ami-0history",
            instance_type="g4dn.xlarge",
            availability_zone="us-west-2a",
            launched_at=launched,
            attested_at=launched + timedelta(seconds=500 + n),
        )
    # A build that never attested is a boot longer than it was given, not a missing one.
    PoolInstance.objects.create(
        profile=profile,
        instance_id="i-0poolfailed0001",
        client_token="pool-failed",
        state=PoolState.FAILED,
        ami_id="ami-0history",
        instance_type="g4dn.xlarge",
        availability_zone="us-west-2a",
        launched_at=NOW - timedelta(hours=2),
        retired_at=NOW - timedelta(hours=1),
    )
    # Still booting, for a minute so far: in the fit as "longer than a minute", not yet a recorded boot.
    PoolInstance.objects.create(
        profile=profile,
        instance_id="i-0poolbuilding01",
        client_token="pool-building",
        ami_id="ami-0history",
        instance_type="g4dn.xlarge",
        availability_zone="us-west-2a",
        launched_at=NOW - timedelta(minutes=1),
    )
    planning.boot_estimates_refit(now=NOW, force=True)
    (cold,) = BootEstimate.objects.all()
    assert (cold.ami_id, cold.warm_start, cold.samples, cold.censored) == ("ami-0history", False, 13, 1)
    assert 480 < cold.distribution.median < 560
    assert (cold.observed_p50_seconds, cold.observed_p95_seconds) == (505, 511)


def test_the_fitted_tail_reaches_the_slowest_percent_of_boots_on_record(frozen, settings):
    """120 boots: most take 60-120 s, two in a hundred take 400 s. The refit's estimate (what the lead
    and the health timeout read) has its 99th percentile at the boots seen there, not below them."""
    settings.ELEPHANT_AMI_ID = "ami-0history"
    for n in range(60):
        meeting = make_meeting(meet_time=NOW - timedelta(hours=1, minutes=n))
        _booted(meeting, "teacher", 400 if n % 25 == 0 else 60 + n)
        _booted(meeting, "student", 400 if n % 25 == 1 else 120 - n)
    planning.boot_estimates_refit(now=NOW, force=True)
    (estimate,) = BootEstimate.objects.all()
    assert estimate.samples == 120
    assert estimate.distribution.quantile(0.99) == pytest.approx(400, rel=0.01)
    assert planning.BootModel.load().lead("", False) > timedelta(seconds=400)


def test_boots_still_going_on_count_as_censored_so_a_slow_hour_moves_the_lead_before_it_ends(frozen, settings):
    """Twenty boots of about 300 s on record, then ten hosts launched 40 minutes ago and still not healthy:
    the fit takes them as longer than 40 minutes now, not when they finally time out."""
    _quick_history(settings, meetings=10)
    lead_before = planning.BootModel.load().lead("", False)
    for n in range(5):
        meeting = make_meeting(meet_time=NOW + timedelta(minutes=5 + n), status=MeetingStatus.LAUNCHED)
        for role in ("teacher", "student"):
            _history_host(meeting, role, state=HostState.BOOTING, launched_at=NOW - timedelta(minutes=40))
    planning.boot_estimates_refit(now=NOW, force=True)
    (estimate,) = BootEstimate.objects.all()
    assert (estimate.samples, estimate.censored) == (20, 0)  # the record counts finished boots only
    assert estimate.distribution.quantile(0.9) > 40 * 60
    assert planning.BootModel.load().lead("", False) > lead_before + timedelta(minutes=20)


def test_the_history_summed_in_postgresql_equals_the_history_read_row_by_row(frozen, settings):
    """The refit adds a month of boots up in SQL (one row per key); SQLite (make run) reads them. Same fit."""
    for n in range(30):
        meeting = make_meeting(meet_time=NOW - timedelta(days=n % 20, minutes=n))
        _booted(meeting, "teacher", 200 + 13 * n, censored=n % 7 == 0)
        _booted(meeting, "student", 250 + 11 * n, ami="ami-0other")
        Host.objects.filter(meeting=meeting).update(launched_at=NOW - timedelta(days=n % 20, hours=1))
    since = NOW - timedelta(days=60)
    summed = planning._history(since=since, now=NOW, summed=True)
    read = planning._history(since=since, now=NOW, summed=False)
    assert summed.keys() == read.keys() and len(summed) == 2
    for key, history in summed.items():
        other = read[key]
        assert (history.samples, history.censored) == (other.samples, other.censored)
        assert (history.observed_p50, history.observed_p95) == (other.observed_p50, other.observed_p95)
        assert history.observed_tail == other.observed_tail
        assert history.stats.known_weight == pytest.approx(other.stats.known_weight)
        assert history.stats.known_y == pytest.approx(other.stats.known_y)
        assert history.stats.known_y2 == pytest.approx(other.stats.known_y2)
        flat = [value for pair in sorted(history.stats.censored) for value in pair]
        assert flat == pytest.approx([value for pair in sorted(other.stats.censored) for value in pair])


def test_the_history_read_row_by_row_adds_each_boot_at_the_age_timedelta_gives_to_the_last_digit(frozen, settings):
    """The row path reads times as whole microseconds the database works out (no datetime per row): each
    boot's age and a pool build's seconds are the floats ``timedelta.total_seconds()`` gives, so the sums
    are the same to the last digit as adding the ORM's own values (fractions of seconds included)."""
    profile = DesktopProfile.objects.get(is_default=True)
    expected = readiness.BootStats()
    half_life = settings.ELEPHANT_BOOT_HALF_LIFE_DAYS
    for n in range(12):
        meeting = make_meeting(meet_time=NOW - timedelta(days=n, minutes=n))
        _booted(meeting, "teacher", 311.5 + 17 * n, censored=n % 5 == 0)
        Host.objects.filter(meeting=meeting).update(
            launched_at=NOW - timedelta(days=n, hours=1, microseconds=123_457 * n + 1)
        )
    for n in range(5):
        launched = NOW - timedelta(days=n, hours=2, seconds=n, microseconds=999_999 - n)
        PoolInstance.objects.create(
            profile=profile,
            instance_id=f"i-0exact{n:011x}",
            client_token=f"pool-exact-{n}",
            state=PoolState.READY if n % 2 else PoolState.FAILED,
            ami_id="ami-0history",
            instance_type="g4dn.xlarge",
            availability_zone="us-west-2a",
            launched_at=launched,
            attested_at=launched + timedelta(seconds=400 + n, microseconds=7 * n + 3) if n % 2 else None,
            retired_at=None if n % 2 else launched + timedelta(minutes=30, microseconds=n),
        )
    since = NOW - timedelta(days=60)
    hosts = Host.objects.filter(boot_seconds__isnull=False, launched_at__gte=since).values_list(
        "boot_seconds", "boot_censored", "launched_at"
    )
    for seconds, censored, launched in hosts:
        expected.add_boot(seconds, censored, (NOW - launched).total_seconds() / 86400, half_life)
    builds = PoolInstance.objects.values_list("launched_at", "attested_at", "retired_at")
    for launched, attested, retired in builds:
        seconds = max(0.0, ((attested or retired) - launched).total_seconds())
        expected.add_boot(seconds, attested is None, (NOW - launched).total_seconds() / 86400, half_life)
    ((key, history),) = planning._history(since=since, now=NOW, summed=False).items()
    assert key == ("ami-0history", "g4dn.xlarge", "us-west-2a", False) and type(key[3]) is bool
    assert (history.samples, history.censored) == (17, 3 + 3)
    assert history.stats == expected  # exact: the same floats, added in the same order


def test_the_summed_history_does_not_depend_on_the_order_the_table_holds_its_rows(frozen, settings):
    """Floating-point sums depend on the order of their terms, and PostgreSQL reads a table in the order
    its rows lie, which updates and vacuuming change: the fit adds the boots up in launch order, so the
    same history gives the same fit to the last digit (the fleet simulator repeats on it)."""
    for n in range(150):
        meeting = make_meeting(meet_time=NOW - timedelta(days=n % 40, minutes=n))
        _booted(meeting, "teacher", 200 + 37.3 * (n % 17) + n / 7, censored=n % 9 == 0)
        _booted(meeting, "student", 260 + 23.9 * (n % 13) + n / 3)
        Host.objects.filter(meeting=meeting).update(launched_at=NOW - timedelta(days=n % 40, hours=1, seconds=n))
    since = NOW - timedelta(days=60)

    def fit():
        ((key, history),) = planning._history(since=since, now=NOW, summed=True).items()
        stats = history.stats
        return stats.known_weight, stats.known_y, stats.known_y2, stats.censored

    def physical_order():
        with connection.cursor() as cursor:
            cursor.execute("SELECT id FROM fleet_host")
            return [row[0] for row in cursor.fetchall()]

    def sum_as_read():  # what a sum in the table's order gives: w * ln(seconds) of the finished boots
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT SUM(POWER(0.5::float8, EXTRACT(EPOCH FROM %s - launched_at)::float8 / 86400.0 / %s)"
                " * LN(boot_seconds)) FROM fleet_host WHERE NOT boot_censored",
                [NOW, settings.ELEPHANT_BOOT_HALF_LIFE_DAYS],
            )
            return cursor.fetchone()[0]

    before, order, read_before = fit(), physical_order(), sum_as_read()
    # Each row rewritten, last first: the new row versions lie in another order. Space earlier tests left in
    # the table's pages may take some of them where they were; a second pass lands where the first left none.
    for _ in range(3):
        for pk in reversed(physical_order()):
            Host.objects.filter(pk=pk).update(boot_seconds=F("boot_seconds"))
        if sum_as_read() != read_before:
            break
    assert physical_order() != order
    assert sum_as_read() != read_before  # the data can tell: added in the table's order, the sum moves
    assert fit() == before  # exactly: not approximately


def test_a_host_given_up_before_healthy_records_a_censored_boot(frozen):
    meeting = make_meeting(meet_time=NOW + timedelta(minutes=5), status=MeetingStatus.LAUNCHED)
    host = make_host(
        meeting, "teacher", state=HostState.BOOTING, instance_id="i-0abc", launched_at=NOW - timedelta(seconds=700)
    )
    healthy = make_host(
        meeting, "student", instance_id="i-0def", launched_at=NOW - timedelta(seconds=900), healthy_at=NOW
    )
    services.hosts_terminate([host, healthy])
    host.refresh_from_db()
    healthy.refresh_from_db()
    assert (host.boot_seconds, host.boot_censored) == (700, True)
    assert healthy.boot_seconds is None  # it was healthy: its boot is not a timeout


def test_a_healthy_host_records_its_boot_and_first_dcv_answer(settings, strict):
    meeting = make_meeting(meet_time=datetime.now(UTC) + timedelta(minutes=2))
    services.meeting_launch(meeting_id=meeting.pk)
    result = services.fleet_watchdog_sweep()
    for host_id, address, zone in result.running:
        services.host_running(host_id=host_id, address=address, availability_zone=zone)
    Host.objects.filter(meeting=meeting).update(attested_at=datetime.now(UTC))
    services.fleet_health_sweep()
    hosts = list(Host.objects.filter(meeting=meeting))
    assert {h.state for h in hosts} == {HostState.HEALTHY}
    for host in hosts:
        assert host.ami_id == settings.ELEPHANT_AMI_ID and host.ec2_launch_time is not None
        assert host.dcv_answered_at is not None and host.boot_seconds is not None and not host.boot_censored


# --- the plan -------------------------------------------------------------------------------------
def test_a_meeting_the_quota_cannot_place_launches_at_its_deadline_not_hours_early(frozen, settings):
    """Two meetings at one start where the vCPU quota holds one: the plan places one and cannot place the
    other. That one launches at its own deadline (its lead before the start), not at the earliest allowed
    (ELEPHANT_MAX_LAUNCH_LEAD before): hours early it would hold the quota from the meetings that fit."""
    settings.ELEPHANT_LAUNCH_POLICY = "fixed"  # book without admission, then plan
    start = NOW + timedelta(hours=6)
    meetings = [book(start) for _ in range(2)]
    settings.ELEPHANT_LAUNCH_POLICY = "learned"
    settings.ELEPHANT_VCPU_QUOTA = {"g": 8}  # one meeting's two g4dn.xlarge at a time
    result = services.fleet_plan_sweep(now=NOW)
    assert len(result.unplaceable) == 1
    deadline = start - planning.BootModel.load().lead("", False)
    launches = dict(Meeting.objects.filter(pk__in=[m.pk for m in meetings]).values_list("pk", "launch_at"))
    (unplaced,) = result.unplaceable
    assert deadline - timedelta(minutes=1) <= launches[unplaced] <= deadline
    assert start - launches[unplaced] < timedelta(minutes=settings.ELEPHANT_MAX_LAUNCH_LEAD)
    assert services.fleet_launch_sweep(now=deadline - timedelta(minutes=2)) == [
        pk for pk in launches if pk != unplaced and launches[pk] <= deadline - timedelta(minutes=2)
    ]


def test_a_tight_bucket_spreads_a_crowded_start_over_earlier_minutes(frozen, settings):
    settings.ELEPHANT_LAUNCH_POLICY = "fixed"  # book without admission, then plan
    start = NOW + timedelta(hours=3)
    meetings = [book(start) for _ in range(10)]
    settings.ELEPHANT_LAUNCH_POLICY = "learned"
    settings.ELEPHANT_RUN_INSTANCES_PER_SECOND = 0.05  # 3 a minute; at the 0.8 share: 2, one meeting
    result = services.fleet_plan_sweep(now=NOW)
    assert result.planned == 10 and result.changed == 10 and not result.unplaceable
    launches = sorted(Meeting.objects.filter(pk__in=[m.pk for m in meetings]).values_list("launch_at", flat=True))
    deadline = start - planning.BootModel.load().lead("", False)
    assert len(set(launches)) == 10  # one meeting per minute
    assert launches[-1] <= deadline and launches[0] >= deadline - timedelta(minutes=10)
    # The launch sweep selects by launch_at: only the first is due at its minute.
    assert services.fleet_launch_sweep(now=launches[0]) == [m.pk for m in Meeting.objects.filter(launch_at=launches[0])]
    assert services.fleet_plan_sweep(now=NOW).changed == 0  # a second sweep writes nothing


def test_no_launch_is_planned_earlier_than_the_fleets_earliest_action_lead(frozen, settings):
    """How long before a lesson the beat may first act on it (the fleet simulator sleeps through the rest):
    the fixed lead, the plan's longest lead, or the warm pool's horizon when the pool is on and that is
    longer. A start too crowded for its hours is planned back to that lead and no further."""
    settings.ELEPHANT_LAUNCH_POLICY, settings.ELEPHANT_LAUNCH_LEAD = "fixed", 5
    settings.ELEPHANT_WARM_POOL, settings.ELEPHANT_WARM_POOL_HORIZON_HOURS = True, 6.0
    assert planning.earliest_action_lead() == timedelta(minutes=5)  # the fixed policy keeps no pool
    start = NOW + timedelta(hours=5)
    meetings = [book(start) for _ in range(100)]  # booked under fixed: no admission
    settings.ELEPHANT_LAUNCH_POLICY, settings.ELEPHANT_MAX_LAUNCH_LEAD = "learned", 120
    assert planning.earliest_action_lead() == timedelta(hours=6)
    settings.ELEPHANT_WARM_POOL = False
    assert planning.earliest_action_lead() == timedelta(minutes=120)
    settings.ELEPHANT_RUN_INSTANCES_PER_SECOND = 0.05  # one meeting a minute: a hundred minutes of launches
    result = services.fleet_plan_sweep(now=NOW)
    launches = Meeting.objects.filter(pk__in=[m.pk for m in meetings]).exclude(pk__in=result.unplaceable)
    assert result.unplaceable and launches.count() >= 50  # the ones that fit between the two leads
    assert min(launches.values_list("launch_at", flat=True)) == start - planning.earliest_action_lead()


def test_the_plan_sweep_is_a_constant_number_of_queries(frozen, settings, django_assert_max_num_queries):
    settings.ELEPHANT_LAUNCH_POLICY = "fixed"
    for n in range(30):
        book(NOW + timedelta(hours=2, minutes=n))
    settings.ELEPHANT_LAUNCH_POLICY = "learned"
    with django_assert_max_num_queries(12):
        services.fleet_plan_sweep(now=NOW)


# --- admission ----------------------------------------------------------------------------------
def test_a_booking_the_quota_cannot_serve_is_refused_naming_free_times(frozen, settings):
    settings.ELEPHANT_VCPU_QUOTA = {"g": 8}  # one meeting's two g4dn.xlarge at a time
    start = NOW + timedelta(days=1)
    first = book(start)
    assert first.launch_at is not None and first.launch_at < start
    with pytest.raises(ValidationError) as refused:
        book(start + timedelta(minutes=30))
    (message,) = refused.value.message_dict["meet_time"]
    assert "No desktops can be ready for 2026-12-08 12:30 UTC" in message
    assert "nearest start times" in message
    suggested = message.split("free: ")[1].rstrip(".").split(", ")
    assert suggested and all(s.endswith("UTC") for s in suggested)
    moment = datetime.strptime(suggested[0], "%Y-%m-%d %H:%M UTC").replace(tzinfo=UTC)
    assert book(moment).launch_at is not None  # the first suggestion is bookable
    assert Meeting.objects.count() == 2


def test_the_api_refuses_with_the_same_message(frozen, settings):
    settings.ELEPHANT_VCPU_QUOTA = {"g": 8}
    book(NOW + timedelta(days=1))
    key = api_key_create(
        name="acme", plan=UsagePlan.objects.create(name="p", rate_per_second=10, burst=10, daily_quota=100)
    )
    response = Client().post(
        "/api/v1/meetings",
        data=json.dumps({"teacher_name": "T", "student_name": "S", "meet_time": "2026-12-08T12:00:00Z"}),
        content_type="application/json",
        headers={"Authorization": f"Api-Key {key[1]}"},
    )
    assert response.status_code == 400
    assert "nearest start times" in json.dumps(response.json())
    assert Meeting.objects.count() == 1


def test_under_the_fixed_policy_everything_is_admitted_without_launch_at(frozen, settings):
    settings.ELEPHANT_LAUNCH_POLICY = "fixed"
    settings.ELEPHANT_VCPU_QUOTA = {"g": 8}
    meetings = [book(NOW + timedelta(days=1)) for _ in range(3)]
    assert [m.launch_at for m in meetings] == [None] * 3


# --- the warm pool --------------------------------------------------------------------------------
def _pool_instance(ec2, settings, state="stopped", zone="us-west-2a"):
    answer = ec2.run_instances(ImageId=settings.ELEPHANT_AMI_ID, InstanceType="g4dn.xlarge", MinCount=1, MaxCount=1)
    instance_id = answer["Instances"][0]["InstanceId"]
    ec2.create_tags(
        Resources=[instance_id],
        Tags=[
            {"Key": "ElephantPool", "Value": "default"},
            {"Key": "Project", "Value": "Elephant"},
            {"Key": "ElephantDeployment", "Value": settings.ELEPHANT_DEPLOYMENT},
        ],
    )
    if state == "stopped":
        ec2.stop_instances(InstanceIds=[instance_id])
    return PoolInstance.objects.create(
        profile=DesktopProfile.objects.default(),
        instance_id=instance_id,
        state=PoolState.READY,
        client_token=f"pool-{instance_id}",
        ami_id=settings.ELEPHANT_AMI_ID,
        instance_type="g4dn.xlarge",
        availability_zone=zone,
        attested_at=datetime.now(UTC) - timedelta(hours=1),
        stopped_at=datetime.now(UTC) - timedelta(minutes=50),
    )


def _state(ec2, instance_id):
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def test_a_warm_meeting_starts_pool_instances_tagged_as_its_hosts(settings, ec2):
    settings.ELEPHANT_WARM_POOL = True
    pooled = [_pool_instance(ec2, settings) for _ in range(2)]
    meeting = make_meeting(meet_time=datetime.now(UTC) + timedelta(minutes=2), launch_warm=True)
    services.meeting_launch(meeting_id=meeting.pk)
    hosts = {h.role: h for h in Host.objects.filter(meeting=meeting)}
    assert {h.instance_id for h in hosts.values()} == {p.instance_id for p in pooled}
    for role, host in hosts.items():
        assert host.warm_start and host.attested_at is not None and host.state == HostState.BOOTING
        described = _state(ec2, host.instance_id)
        assert described["State"]["Name"] in ("pending", "running")
        tags = {t["Key"]: t["Value"] for t in described["Tags"]}
        assert tags["MeetingID"] == meeting.pk and tags["Role"] == role
    assert set(PoolInstance.objects.values_list("state", flat=True)) == {PoolState.ASSIGNED}
    # The reaper leaves them alone: they are the hosts' now.
    assert services.fleet_reap().terminated == []


def test_a_failed_warm_start_falls_back_to_a_cold_launch_and_keeps_the_pool_instance(settings, ec2, ec2_hook):
    settings.ELEPHANT_WARM_POOL = True
    pooled = _pool_instance(ec2, settings)
    ec2_hook.on(
        "before-send.ec2.StartInstances",
        lambda **_: aws_error("InsufficientInstanceCapacity", "We currently do not have sufficient capacity.", 500),
    )
    meeting = make_meeting(meet_time=datetime.now(UTC) + timedelta(minutes=2), launch_warm=True)
    services.meeting_launch(meeting_id=meeting.pk)
    hosts = list(Host.objects.filter(meeting=meeting))
    assert len(hosts) == 2 and all(h.instance_id and not h.warm_start for h in hosts)
    assert pooled.instance_id not in {h.instance_id for h in hosts}
    pooled.refresh_from_db()
    assert pooled.state == PoolState.READY and pooled.host is None and "capacity" in pooled.last_error
    assert _state(ec2, pooled.instance_id)["State"]["Name"] == "stopped"
    tags = {t["Key"] for t in _state(ec2, pooled.instance_id)["Tags"]}
    assert "MeetingID" not in tags
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.LAUNCHED


def _refuse_starts(ec2, ec2_hook, refuse):
    """StartInstances answers InsufficientInstanceCapacity (HTTP 500, as EC2) when ``refuse(instance)``
    says so of the instance as the local EC2 describes it now; the refused ids are listed."""
    refused = []

    def hook(request, **_):
        body = request.body.decode() if isinstance(request.body, bytes) else str(request.body)
        for reservation in ec2.describe_instances()["Reservations"]:
            for instance in reservation["Instances"]:
                if instance["InstanceId"] in body and refuse(instance):
                    refused.append((instance["InstanceId"], instance["InstanceType"]))
                    return aws_error(
                        "InsufficientInstanceCapacity", "We currently do not have sufficient capacity.", 500
                    )
        return None

    ec2_hook.on("before-send.ec2.StartInstances", hook)
    return refused


def test_a_capacity_error_on_a_warm_start_starts_the_instance_as_another_type_of_the_profile(settings, ec2, ec2_hook):
    """EC2 has no g4dn.xlarge to start in the instance's zone: the stopped instance is changed to the
    profile's next type and started as that, still warm (AWS's Instance Scheduler does the same)."""
    settings.ELEPHANT_WARM_POOL = True
    settings.ELEPHANT_INSTANCE_TYPES = ["g4dn.xlarge", "g5.xlarge"]
    pooled = [_pool_instance(ec2, settings) for _ in range(2)]
    refused = _refuse_starts(ec2, ec2_hook, lambda instance: instance["InstanceType"] == "g4dn.xlarge")
    meeting = make_meeting(meet_time=datetime.now(UTC) + timedelta(minutes=2), launch_warm=True)
    services.meeting_launch(meeting_id=meeting.pk)
    hosts = list(Host.objects.filter(meeting=meeting))
    assert sorted(refused) == sorted((p.instance_id, "g4dn.xlarge") for p in pooled)
    assert all(h.warm_start and h.instance_type == "g5.xlarge" for h in hosts)
    assert {h.instance_id for h in hosts} == {p.instance_id for p in pooled}
    for host in hosts:
        assert _state(ec2, host.instance_id)["InstanceType"] == "g5.xlarge"
    assert set(PoolInstance.objects.values_list("instance_type", flat=True)) == {"g5.xlarge"}


def test_a_warm_start_no_type_can_start_moves_to_a_pool_instance_of_another_zone(settings, ec2, ec2_hook):
    """Every type refused for one instance (its zone is out): it goes back to the pool and READY
    instances elsewhere start instead, before any cold launch."""
    settings.ELEPHANT_WARM_POOL = True
    settings.ELEPHANT_INSTANCE_TYPES = ["g4dn.xlarge", "g5.xlarge"]
    short = _pool_instance(ec2, settings, zone="us-west-2a")
    PoolInstance.objects.filter(pk=short.pk).update(stopped_at=datetime.now(UTC) - timedelta(hours=2))  # oldest
    others = [_pool_instance(ec2, settings, zone="us-west-2b") for _ in range(2)]
    refused = _refuse_starts(ec2, ec2_hook, lambda instance: instance["InstanceId"] == short.instance_id)
    meeting = make_meeting(meet_time=datetime.now(UTC) + timedelta(minutes=2), launch_warm=True)
    services.meeting_launch(meeting_id=meeting.pk)
    hosts = list(Host.objects.filter(meeting=meeting))
    # The first host tried it as each type; the second knew its pool was refused a moment ago and never asked.
    assert refused == [(short.instance_id, "g4dn.xlarge"), (short.instance_id, "g5.xlarge")]
    assert all(h.warm_start for h in hosts)
    assert {h.instance_id for h in hosts} == {p.instance_id for p in others}
    short.refresh_from_db()
    assert short.state == PoolState.READY and short.host is None and "capacity" in short.last_error
    assert _state(ec2, short.instance_id)["State"]["Name"] == "stopped"


def test_a_warm_start_refused_for_the_vcpu_quota_keeps_the_instance_and_fails_the_launch_with_why(
    settings, ec2, ec2_hook
):
    """VcpuLimitExceeded is the account's answer, not the instance's fault: the instance goes back to the
    pool (never retired, never handed to the host twice) and the meeting fails with the quota named."""
    settings.ELEPHANT_WARM_POOL = True
    pooled = [_pool_instance(ec2, settings) for _ in range(3)]
    ec2_hook.on(
        "before-send.ec2.StartInstances",
        lambda **_: aws_error("VcpuLimitExceeded", "You have requested more vCPU capacity than your limit."),
    )
    meeting = make_meeting(meet_time=datetime.now(UTC) + timedelta(minutes=2), launch_warm=True)
    services.meeting_launch(meeting_id=meeting.pk)
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.FAILED and "vCPU" in meeting.last_error
    assert set(PoolInstance.objects.values_list("state", flat=True)) == {PoolState.READY}
    assert not PoolInstance.objects.filter(host__isnull=False).exists()
    assert {_state(ec2, p.instance_id)["State"]["Name"] for p in pooled} == {"stopped"}


def test_pool_builds_leave_the_vcpu_quota_to_the_lessons_planned_before_they_stop(settings, frozen):
    """A quota of 40 vCPUs (ten g4dn.xlarge): three lessons planned within the next cold boot will take six
    of them, so four builds fit; and the plan counts a running build against the quota too."""
    from fleet.services import pool

    settings.ELEPHANT_WARM_POOL = True
    settings.ELEPHANT_WARM_POOL_SPARE = 0
    settings.ELEPHANT_VCPU_QUOTA = {"g": 40}
    settings.ELEPHANT_INSTANCE_TYPES = ["g4dn.xlarge"]
    for minutes in (10, 11, 12):
        make_meeting(meet_time=NOW + timedelta(minutes=40 + minutes), launch_at=NOW + timedelta(minutes=minutes))
    spec = profiles.pool_launch_spec(profile=DesktopProfile.objects.get(is_default=True))
    assert pool._build_vcpu_room(spec=spec, now=NOW) == 4
    settings.ELEPHANT_VCPU_QUOTA = {"g": 8}
    assert pool._build_vcpu_room(spec=spec, now=NOW) == 0
    settings.ELEPHANT_VCPU_QUOTA = {}
    settings.ELEPHANT_SERVICE_QUOTAS = False
    assert pool._build_vcpu_room(spec=spec, now=NOW) is None  # no quota known: builds are not held back
    PoolInstance.objects.create(
        profile=DesktopProfile.objects.get(is_default=True),
        client_token="b",
        state=PoolState.BUILDING,
        instance_id="i-0build",
        instance_type="g4dn.xlarge",
        launched_at=NOW,
    )
    occupied = planning._occupied(now=NOW, model=planning.BootModel.load())
    assert occupied[("g", planner.slot_of(NOW))] == 4


def test_a_warm_start_a_crash_left_unrecorded_is_adopted_as_warm(settings, ec2):
    """The worker died after StartInstances and before the host row was written: the next launch adopts
    the instance (its tags name the host) and still records a warm start, attested at its build."""
    from fleet import aws

    settings.ELEPHANT_WARM_POOL = True
    pooled = _pool_instance(ec2, settings)
    meeting = make_meeting(
        meet_time=datetime.now(UTC) + timedelta(minutes=2), launch_warm=True, status=MeetingStatus.LAUNCHING
    )
    host = make_host(meeting, "teacher", state=HostState.PENDING, instance_id="", dcv_link="")
    PoolInstance.objects.filter(pk=pooled.pk).update(state=PoolState.ASSIGNED, host=host, assigned_at=NOW)
    ec2.create_tags(
        Resources=[pooled.instance_id], Tags=aws.instance_tags(meeting_id=meeting.pk, role="teacher", generation=1)
    )
    ec2.start_instances(InstanceIds=[pooled.instance_id])
    assert services.host_launch(host=host)
    host.refresh_from_db()
    assert host.instance_id == pooled.instance_id
    assert host.warm_start and host.attested_at == pooled.attested_at
    assert PoolInstance.objects.filter(state=PoolState.READY).count() == 0


def test_the_reaper_spares_held_pool_instances_and_reaps_ones_the_pool_does_not_hold(settings, ec2, frozen):
    held = _pool_instance(ec2, settings)
    stray = _pool_instance(ec2, settings)
    PoolInstance.objects.filter(pk=stray.pk).update(state=PoolState.RETIRED)
    with time_machine.travel(NOW + timedelta(hours=1), tick=False):
        reaped = services.fleet_reap().terminated
    assert reaped == [stray.instance_id]
    assert _state(ec2, held.instance_id)["State"]["Name"] == "stopped"


def test_the_pool_sweep_builds_to_the_schedule_and_stops_what_attested(settings, frozen):
    settings.ELEPHANT_WARM_POOL = True
    settings.ELEPHANT_WARM_POOL_SPARE = 1
    settings.ELEPHANT_LAUNCH_POLICY = "fixed"
    for hour in (2, 3):
        book(NOW + timedelta(hours=hour))
    settings.ELEPHANT_LAUNCH_POLICY = "learned"
    result = services.fleet_pool_sweep(now=NOW)
    assert result.built == 5  # two meetings' hosts and one spare
    building = list(PoolInstance.objects.filter(state=PoolState.BUILDING))
    assert len(building) == 5 and all(p.instance_id for p in building)
    PoolInstance.objects.filter(pk=building[0].pk).update(attested_at=NOW)
    result = services.fleet_pool_sweep(now=NOW + timedelta(minutes=1))
    assert result.stopped == 1 and result.built == 0
    settings.ELEPHANT_WARM_POOL = False
    services.fleet_pool_sweep(now=NOW + timedelta(minutes=2))
    assert not PoolInstance.objects.held().exists()  # off: drained


def test_the_pool_sweep_retires_the_first_built_of_instances_built_together(settings, ec2, frozen):
    """Three READY instances built in one sweep (one launch time) for a pool sized to two: the sweep
    keeps the newest and retires the first built (the lowest id)."""
    settings.ELEPHANT_WARM_POOL = True
    settings.ELEPHANT_WARM_POOL_SPARE = 0
    settings.ELEPHANT_LAUNCH_POLICY = "fixed"
    book(NOW + timedelta(hours=2))
    settings.ELEPHANT_LAUNCH_POLICY = "learned"
    ids = [_pool_instance(ec2, settings).pk for _ in range(3)]
    PoolInstance.objects.filter(pk__in=ids).update(launched_at=NOW - timedelta(hours=1))
    assert services.fleet_pool_sweep(now=NOW).retired == 1
    assert set(PoolInstance.objects.held().values_list("pk", flat=True)) == set(ids[1:])


def test_which_pool_instance_is_retired_does_not_follow_the_order_the_rows_came_in():
    """The rows come in the order the table holds them, which updates and vacuuming move: the order the
    sweep keeps and retires in is the same for every order they come in."""
    from types import SimpleNamespace

    from fleet.services.pool import _newest_first

    built = NOW - timedelta(hours=1)
    rows = [SimpleNamespace(pk=pk, state=PoolState.READY, launched_at=built) for pk in (7, 3, 5)]
    rows.append(SimpleNamespace(pk=1, state=PoolState.READY, launched_at=built + timedelta(minutes=1)))
    rows.append(SimpleNamespace(pk=2, state=PoolState.BUILDING, launched_at=built - timedelta(hours=1)))
    orders = {tuple(r.pk for r in _newest_first(list(p))) for p in itertools.permutations(rows)}
    assert orders == {(1, 7, 5, 3, 2)}


def test_a_pool_above_its_size_keeps_its_ready_instances_over_builds_still_booting(settings, ec2, frozen):
    """Two READY instances and two builds on their way, for a pool sized to two (one lesson in half an
    hour): the READY ones are kept, as only they can start in time; neither is retired for a build."""
    settings.ELEPHANT_WARM_POOL = True
    settings.ELEPHANT_WARM_POOL_SPARE = 0
    settings.ELEPHANT_LAUNCH_POLICY = "fixed"
    book(NOW + timedelta(minutes=30))
    settings.ELEPHANT_LAUNCH_POLICY = "learned"
    ready = {_pool_instance(ec2, settings).pk for _ in range(2)}
    PoolInstance.objects.filter(pk__in=ready).update(launched_at=NOW - timedelta(hours=2))
    builds = {_pool_instance(ec2, settings, state="running").pk for _ in range(2)}
    PoolInstance.objects.filter(pk__in=builds).update(
        state=PoolState.BUILDING, attested_at=None, stopped_at=None, launched_at=NOW - timedelta(minutes=5)
    )
    result = services.fleet_pool_sweep(now=NOW)
    assert result.retired == 0 and result.built == 0
    assert set(PoolInstance.objects.filter(state=PoolState.READY).values_list("pk", flat=True)) == ready
    planning_coverage = planning._pool_coverage(
        planning._scheduled(since=NOW, until=NOW + timedelta(hours=1)), model=planning.BootModel.load(), now=NOW
    )
    assert [booking.warm for booking in planning_coverage] == [True]  # the lesson is served warm


def test_the_pool_keeps_a_spare_for_the_late_bookings_of_this_time_of_day(settings, frozen):
    """Each of the last seven days, about this hour, lessons were booked ten minutes before they started:
    too late for a cold Windows launch. The pool keeps instances for them before anyone books."""
    from fleet.services import pool

    settings.ELEPHANT_WARM_POOL = True
    settings.ELEPHANT_WARM_POOL_SPARE = 0
    for day in range(1, 8):
        for n in range(3):  # three late bookings a day, 20 to 40 minutes from now on that day
            meet_time = NOW - timedelta(days=day) + timedelta(minutes=20 + 10 * n)
            meeting = make_meeting(meet_time=meet_time, status=MeetingStatus.TERMINATED)
            Meeting.objects.filter(pk=meeting.pk).update(created_at=meet_time - timedelta(minutes=10))
        early = make_meeting(meet_time=NOW - timedelta(days=day, minutes=-30), status=MeetingStatus.TERMINATED)
        Meeting.objects.filter(pk=early.pk).update(created_at=early.meet_time - timedelta(days=2))  # not late
    default = DesktopProfile.objects.get(is_default=True)
    # Three a day: 2 * ceil(3 + 2 * sqrt(3)) = 14 hosts, with nothing booked yet for the coming hours.
    assert pool._wanted(now=NOW) == {default.pk: 14}
    assert services.fleet_pool_sweep(now=NOW).built == 14
    # A day without late bookings at this hour keeps none.
    assert pool._wanted(now=NOW + timedelta(hours=6)) == {default.pk: 0}
    # A fleet with one day of history counts that day's, not a seventh of it.
    Meeting.objects.filter(meet_time__lt=NOW - timedelta(days=1, hours=1)).delete()
    assert pool._wanted(now=NOW) == {default.pk: 14}


def test_a_late_booking_goes_on_the_warm_pool_instead_of_a_cold_launch_that_cannot_be_ready(settings, ec2):
    settings.ELEPHANT_WARM_POOL = True
    pooled = [_pool_instance(ec2, settings) for _ in range(2)]
    now = datetime.now(UTC)
    # A cold Windows launch needs more than half an hour (the prior), a warm start about twelve minutes.
    late = book(now + timedelta(minutes=15))
    assert late.launch_warm
    warm_lead = planning.BootModel.load().lead("", True)
    assert now <= late.launch_at <= late.meet_time - warm_lead  # started a warm lead ahead, not at once
    services.meeting_launch(meeting_id=late.pk)
    hosts = list(Host.objects.filter(meeting=late))
    assert {h.instance_id for h in hosts} == {p.instance_id for p in pooled} and all(h.warm_start for h in hosts)
    # With the pool empty now, the next late booking is admitted cold (launched at once, best effort).
    other = book(now + timedelta(minutes=15))
    assert not other.launch_warm and other.launch_at <= now + timedelta(minutes=1)


def test_the_health_sweep_reconciles_only_meetings_behind_their_hosts(frozen, settings):
    """Waiting meetings are not reconciled every sweep: only one whose status missed a step its
    hosts show (and timeouts, pending launches, new health, as before)."""
    settings.ELEPHANT_LAUNCH_POLICY = "fixed"  # a 15-minute health timeout: nobody times out here
    launched = NOW - timedelta(minutes=2)

    def meeting_with(status, host_state):
        meeting = make_meeting(meet_time=NOW + timedelta(minutes=10), status=status)
        for role in ("teacher", "student"):
            make_host(meeting, role, state=host_state, launched_at=launched, dcv_link="http://127.0.0.1:9/")
        return meeting

    waiting = meeting_with(MeetingStatus.LAUNCHED, HostState.BOOTING)  # in step: nothing to do
    behind_launch = meeting_with(MeetingStatus.LAUNCHING, HostState.BOOTING)  # should be LAUNCHED
    behind_link = meeting_with(MeetingStatus.LAUNCHED, HostState.DNS_WRITTEN)  # should be DNS_WRITTEN
    # A replacement whose launch is backing off after throttling (touched 30 s ago) is left to its retries;
    # one whose launch went quiet (its worker died) is handed out again.
    retrying = make_meeting(meet_time=NOW + timedelta(minutes=10), status=MeetingStatus.LAUNCHED)
    quiet = make_meeting(meet_time=NOW + timedelta(minutes=10), status=MeetingStatus.LAUNCHED)
    for meeting, touched in ((retrying, NOW - timedelta(seconds=30)), (quiet, NOW - timedelta(minutes=3))):
        make_host(meeting, "teacher", state=HostState.BOOTING, launched_at=launched, dcv_link="http://127.0.0.1:9/")
        host = make_host(meeting, "student", state=HostState.PENDING, instance_id="", generation=2)
        Host.objects.filter(pk=host.pk).update(updated_at=touched)
    result = services.fleet_health_sweep(now=NOW)
    assert result.meeting_ids == {behind_launch.pk, behind_link.pk, quiet.pk}
    assert waiting.pk not in result.meeting_ids and retrying.pk not in result.meeting_ids
    for meeting_id in {behind_launch.pk, behind_link.pk}:
        services.meeting_reconcile(meeting=Meeting.objects.get(pk=meeting_id), now=NOW)
    assert Meeting.objects.get(pk=behind_launch.pk).status == MeetingStatus.LAUNCHED
    assert Meeting.objects.get(pk=behind_link.pk).status == MeetingStatus.DNS_WRITTEN
