"""Every sweep is a constant number of queries, whatever the number of meetings."""

import secrets
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from fleet import aws, services
from fleet.models import Host, HostState
from meetings.models import Meeting, MeetingStatus

pytestmark = pytest.mark.django_db

SWEEPS = {
    "launch": lambda now: services.fleet_launch_sweep(now=now),
    "watchdog": lambda now: services.fleet_watchdog_sweep(now=now),
    "health": lambda now: services.fleet_health_sweep(now=now),
    "termination": lambda now: services.fleet_termination_sweep(now=now),
    "reaper": lambda now: services.fleet_reap(now=now),
}


def add_meetings(count: int, now) -> None:
    """A realistic spread: due and later meetings, ended ones, and running ones with hosts."""
    statuses = [
        (MeetingStatus.SCHEDULED, now + timedelta(minutes=3)),
        (MeetingStatus.SCHEDULED, now + timedelta(days=2)),
        (MeetingStatus.TERMINATED, now - timedelta(days=1)),
        (MeetingStatus.IN_PROGRESS, now - timedelta(minutes=20)),
        (MeetingStatus.HEALTHY, now - timedelta(hours=3)),
    ]
    meetings = []
    for n in range(count):
        status, meet_time = statuses[n % len(statuses)]
        meetings.append(Meeting(teacher_name="T", student_name="S", meet_time=meet_time, status=status))
    Meeting.objects.bulk_create(meetings, batch_size=2000)
    hosts = [
        Host(
            meeting=meeting,
            role=role,
            instance_id=f"i-{secrets.token_hex(8)}",
            state=HostState.HEALTHY,
            dcv_link="http://127.0.0.1:9/",
        )
        for meeting in meetings
        if meeting.status in (MeetingStatus.IN_PROGRESS, MeetingStatus.HEALTHY)
        for role in ("teacher", "student")
    ]
    Host.objects.bulk_create(hosts, batch_size=2000)


def count_queries(sweep, now) -> int:
    with CaptureQueriesContext(connection) as queries:
        sweep(now)
    return len(queries)


def test_sweeps_take_the_same_few_queries_for_10_and_10000_meetings(ec2_hook):
    describe_calls = []
    ec2_hook.on("before-call.ec2.DescribeInstances", lambda **_: describe_calls.append(1))
    now = timezone.now()
    add_meetings(10, now)
    few = {name: count_queries(sweep, now) for name, sweep in SWEEPS.items()}

    add_meetings(9_990, now)
    assert Meeting.objects.count() == 10_000
    describe_calls.clear()
    many = {name: count_queries(sweep, now) for name, sweep in SWEEPS.items()}
    assert many == few
    assert max(many.values()) <= 3, many
    # 8,000 hosts followed with one DescribeInstances per 1,000 ids. These ids are unknown to EC2:
    # AWS names every unknown id in its error, moto only the first, so each batch is asked up to
    # three times here. Plus the reaper's one paginated listing.
    assert len(describe_calls) <= 3 * 8 + 1
    # And what the sweeps found is real work, not an empty answer.
    assert len(services.fleet_launch_sweep(now=now)) == 2_000
    termination = services.fleet_termination_sweep(now=now)
    assert (len(termination.terminate), len(termination.keep_alive)) == (2_000, 2_000)


def test_describe_is_batched(ec2, ec2_hook, monkeypatch):
    monkeypatch.setattr(aws, "DESCRIBE_BATCH", 2)  # 1,000 in production; 5 instances make the point
    ec2.run_instances(ImageId="ami-12345678", MinCount=5, MaxCount=5)
    ids = [i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    batches = []
    ec2_hook.on(
        "before-call.ec2.DescribeInstances",
        lambda params, **_: batches.append(sorted(v for k, v in params["body"].items() if k.startswith("InstanceId"))),
    )
    found, missing = aws.instances_describe([*ids, "i-0000000000000dead"])
    assert set(found) == set(ids) and missing == {"i-0000000000000dead"}
    assert len(batches) >= 3 and all(len(b) <= 2 for b in batches)


def test_route53_calls_per_sweep_do_not_grow_with_the_hosts(settings, local_aws):
    """Route 53 throttles per account: the watchdog writes every record of a sweep in one batch."""
    import boto3

    from tests.fleet.conftest import REGION

    route53 = boto3.client("route53", region_name=REGION, endpoint_url=local_aws)
    zone = route53.create_hosted_zone(Name="desktops.example.com", CallerReference="s")["HostedZone"]["Id"]
    settings.ELEPHANT_DNS_ZONE_ID = zone.split("/")[-1]
    client = aws.route53_client()
    calls = []
    handler = lambda model, **_: calls.append(model.name)  # noqa: E731
    client.meta.events.register("before-call.route-53", handler)
    now = timezone.now()
    try:
        per_sweep = {}
        for count in (3, 240):  # 6 and 480 records: one batch either way
            meetings = [
                Meeting(teacher_name="T", student_name="S", meet_time=now, status=MeetingStatus.LAUNCHED)
                for _ in range(count)
            ]
            Meeting.objects.bulk_create(meetings)
            Host.objects.bulk_create(
                Host(
                    meeting=m,
                    role=role,
                    instance_id=f"i-{secrets.token_hex(8)}",
                    state=HostState.RUNNING,
                    public_address="192.0.2.10",
                    launched_at=now,
                )
                for m in meetings
                for role in ("teacher", "student")
            )
            rounds = []
            for _ in range(2):  # submit, then see it INSYNC
                calls.clear()
                result = services.fleet_watchdog_sweep(now=now)
                rounds.append(list(calls))
            per_sweep[count] = rounds
            assert len(result.running) == 2 * count
            Host.objects.filter(state=HostState.RUNNING).update(state=HostState.DNS_WRITTEN)
    finally:
        client.meta.events.unregister("before-call.route-53", handler)
    assert per_sweep[3] == per_sweep[240] == [["ChangeResourceRecordSets"], ["GetChange"]]


def test_the_launch_sweep_hands_over_earliest_first_and_meetings_of_one_start_by_id():
    """The order the launches take the RunInstances bucket in does not follow where PostgreSQL put the rows."""
    now = timezone.now()
    start = now + timedelta(minutes=3)
    ids = ["mzzzzzzzzzzzzzzz", "maaaaaaaaaaaaaaa", "mmmmmmmmmmmmmmmm"]
    for meeting_id in ids:  # inserted out of id order: the rows lie in this order
        Meeting.objects.create(id=meeting_id, teacher_name="T", student_name="S", meet_time=start)
    Meeting.objects.create(
        id="mearlierearlier0", teacher_name="T", student_name="S", meet_time=start - timedelta(minutes=1)
    )
    assert services.fleet_launch_sweep(now=now) == ["mearlierearlier0", *sorted(ids)]
