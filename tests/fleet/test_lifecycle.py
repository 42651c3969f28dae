"""From launch to HEALTHY on the local EC2 and the DCV stand-in: watchdog, DNS, health, replacement."""

from datetime import timedelta

import boto3
import pytest
import time_machine
from django.utils import timezone

from fleet import aws, services
from fleet.models import Host, HostState
from meetings.models import Meeting, MeetingStatus, TerminationReason
from tests.factories import make_meeting
from tests.fleet.conftest import REGION, aws_error, instances_of

pytestmark = pytest.mark.django_db


def launched_meeting():
    meeting = make_meeting(meet_time=timezone.now() + timedelta(minutes=2))
    services.meeting_launch(meeting_id=meeting.pk)
    return meeting


def run_watchdog():
    result = services.fleet_watchdog_sweep()
    for host_id, address, zone in result.running:
        services.host_running(host_id=host_id, address=address, availability_zone=zone)
    for host_id, state in result.lost:
        services.host_lost(host_id=host_id, ec2_state=state)
    return result


def attest(meeting):
    """The hosts' attestation (fleet.services.health.host_attested), where the model has it."""
    if services.health.host_attested(Host(attested_at=None)) is not None:
        Host.objects.filter(meeting=meeting).update(attested_at=timezone.now())


def run_health(now=None):
    result = services.fleet_health_sweep(now=now)
    for meeting_id in result.meeting_ids:
        meeting = Meeting.objects.get(pk=meeting_id)
        services.meeting_reconcile(meeting=meeting, now=now)
    return result


def test_watchdog_writes_links_then_health_makes_the_meeting_healthy(standin_port, strict):
    strict.rules(initializing_seconds=600)  # EC2's status checks stay "initializing" for the whole test
    meeting = launched_meeting()
    attest(meeting)
    result = run_watchdog()
    assert len(result.running) == 2
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.DNS_WRITTEN
    port, _ = standin_port
    for host in Host.objects.filter(meeting=meeting):
        assert host.state == HostState.DNS_WRITTEN
        assert host.public_address
        assert host.dcv_link == f"http://127.0.0.1:{port}/{host.instance_id}/"
    assert meeting.events.filter(reason="HOST_LINK").count() == 2

    health = run_health()
    assert len(health.healthy) == 2
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.HEALTHY
    assert meeting.healthy_at is not None
    for host in Host.objects.filter(meeting=meeting):
        assert host.state == HostState.HEALTHY
        # DCV answers: EC2's status checks (a minute or more of "initializing") are no gate, nor asked.
        assert host.ec2_checks_ok is None and host.dcv_answered
    # Nothing more to do on the next rounds.
    assert run_watchdog().running == []
    assert run_health().healthy == []
    # Every host change left its event, through every state on the way (RUNNING included).
    for host in Host.objects.filter(meeting=meeting):
        assert [(e.from_state, e.to_state) for e in host.events.all()] == [
            ("PENDING", "LAUNCHING"),
            ("LAUNCHING", "BOOTING"),
            ("BOOTING", "RUNNING"),
            ("RUNNING", "DNS_WRITTEN"),
            ("DNS_WRITTEN", "HEALTHY"),
        ]


def dns_zone(settings, local_aws):
    route53 = boto3.client("route53", region_name=REGION, endpoint_url=local_aws)
    zone = route53.create_hosted_zone(Name="desktops.example.com", CallerReference="t")["HostedZone"]["Id"]
    settings.ELEPHANT_DNS_ZONE_ID = zone.split("/")[-1]
    settings.ELEPHANT_DNS_DOMAIN = "desktops.example.com"
    return route53, zone


def a_records(route53, zone) -> dict[str, str]:
    records = route53.list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]
    return {r["Name"].rstrip("."): r["ResourceRecords"][0]["Value"] for r in records if r["Type"] == "A"}


def route53_calls(operations: list[str]):
    client = aws.route53_client()
    handler = lambda model, **_: operations.append(model.name)  # noqa: E731
    client.meta.events.register("before-call.route-53", handler)
    return lambda: client.meta.events.unregister("before-call.route-53", handler)


def test_dns_is_one_batch_per_sweep_and_a_host_stays_running_until_insync(settings, local_aws, strict):
    route53, zone = dns_zone(settings, local_aws)
    strict.rules(dns_sync_seconds=60)
    meetings = [launched_meeting() for _ in range(3)]
    calls = []
    stop = route53_calls(calls)
    try:
        first = run_watchdog()
        assert first.running == [] and calls == ["ChangeResourceRecordSets"]  # six records, one call
        assert len(a_records(route53, zone)) == 6
        hosts = Host.objects.filter(meeting__in=meetings)
        assert {h.state for h in hosts} == {HostState.RUNNING} and len({h.dns_change_id for h in hosts}) == 1
        calls.clear()
        assert run_watchdog().running == [] and calls == ["GetChange"]  # still PENDING: nothing slept, nothing moved
        strict.advance(61)
        calls.clear()
        assert len(run_watchdog().running) == 6 and calls == ["GetChange"]
    finally:
        stop()
    assert {h.state for h in Host.objects.filter(meeting__in=meetings)} == {HostState.DNS_WRITTEN}
    for meeting in meetings:
        meeting.refresh_from_db()
        assert meeting.status == MeetingStatus.DNS_WRITTEN


def test_a_host_whose_dns_record_could_not_be_written_stays_running_and_is_written_next_round(settings, local_aws):
    route53, zone = dns_zone(settings, local_aws)
    settings.ELEPHANT_AWS_MAX_ATTEMPTS = 1
    launched_meeting()
    client = aws.route53_client()

    def route53_down(**_):
        return aws_error("ServiceUnavailable", status=503)

    client.meta.events.register("before-send.route-53.ChangeResourceRecordSets", route53_down)
    try:
        assert run_watchdog().running == []
    finally:
        client.meta.events.unregister("before-send.route-53.ChangeResourceRecordSets", route53_down)
    hosts = list(Host.objects.all())
    assert {(h.state, h.dns_change_id, h.dcv_link) for h in hosts} == {(HostState.RUNNING, "", "")}
    assert all(h.public_address and h.running_at for h in hosts)
    # The next sweep writes both records (PENDING), the one after sees them INSYNC and hands them on.
    assert run_watchdog().running == []
    assert len(a_records(route53, zone)) == 2
    assert len(run_watchdog().running) == 2
    assert {h.state for h in Host.objects.all()} == {HostState.DNS_WRITTEN}


def test_a_refused_dns_record_fails_the_meeting_with_the_reason(settings):
    settings.ELEPHANT_DNS_ZONE_ID = "ZNOSUCHZONE"
    meeting = launched_meeting()
    result = services.fleet_watchdog_sweep()
    assert len(result.refused) == 2
    for host_id, error in result.refused:
        services.host_dns_refused(host_id=host_id, error=error)
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.FAILED and "NoSuchHostedZone" in meeting.last_error


def test_a_stale_address_never_leaks_the_record(settings, local_aws):
    """Route 53 deletes a record only with its current value; it is read first."""
    route53, zone = dns_zone(settings, local_aws)
    settings.ELEPHANT_DCV_URL_TEMPLATE = "https://{instance_id}.{domain}:8443"
    meeting = launched_meeting()
    run_watchdog()
    run_watchdog()
    host = Host.objects.filter(meeting=meeting).first()
    Host.objects.filter(pk=host.pk).update(public_address="192.0.2.77")  # the database's value went stale
    services.meeting_terminate(meeting=meeting, reason=TerminationReason.STAFF, actor="staff:sam")
    assert a_records(route53, zone) == {}


def test_a_dcv_endpoint_that_does_not_answer_is_not_healthy(settings):
    settings.ELEPHANT_DCV_URL_TEMPLATE = "http://127.0.0.1:9/{instance_id}/"  # discard port: refused
    meeting = launched_meeting()
    run_watchdog()
    run_health()
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.DNS_WRITTEN
    host = Host.objects.filter(meeting=meeting).first()
    assert host.ec2_checks_ok is None and host.dcv_answered is False and host.probe_failures == 1


def test_the_agents_healthy_report_counts(settings):
    settings.ELEPHANT_DCV_URL_TEMPLATE = "http://127.0.0.1:9/{instance_id}/"
    meeting = launched_meeting()
    run_watchdog()
    Host.objects.filter(meeting=meeting).update(agent_healthy_at=timezone.now())
    run_health()
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.HEALTHY


def test_route53_record_is_written_and_deleted(settings, local_aws):
    route53, zone = dns_zone(settings, local_aws)
    settings.ELEPHANT_DCV_URL_TEMPLATE = "https://{instance_id}.{domain}:8443"
    meeting = launched_meeting()
    run_watchdog()
    run_watchdog()  # the change batch is PENDING when submitted, INSYNC at the next look
    hosts = list(Host.objects.filter(meeting=meeting))
    assert a_records(route53, zone) == {f"{h.instance_id}.desktops.example.com": h.public_address for h in hosts}
    assert {h.dcv_link for h in hosts} == {f"https://{h.instance_id}.desktops.example.com:8443" for h in hosts}
    services.meeting_terminate(meeting=meeting, reason=TerminationReason.STAFF, actor="staff:sam")
    assert a_records(route53, zone) == {}


def test_a_bad_link_template_fails_the_meeting_clearly(settings):
    settings.ELEPHANT_DCV_URL_TEMPLATE = "https://{instance}.{domain}:8443"
    meeting = launched_meeting()
    run_watchdog()
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.FAILED
    assert "ELEPHANT_DCV_URL_TEMPLATE" in meeting.last_error


def test_health_timeout_replaces_the_host_once_then_fails(settings, ec2):
    settings.ELEPHANT_LAUNCH_POLICY = "fixed"  # the fixed ELEPHANT_HEALTH_TIMEOUT (the learned one: test_planning)
    settings.ELEPHANT_DCV_URL_TEMPLATE = "http://127.0.0.1:9/{instance_id}/"  # never answers
    meeting = launched_meeting()
    run_watchdog()
    first = {h.role: h.instance_id for h in Host.objects.filter(meeting=meeting)}
    later = timezone.now() + timedelta(minutes=settings.ELEPHANT_HEALTH_TIMEOUT + 1)
    with time_machine.travel(later):
        run_health(now=later)
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.DNS_WRITTEN
    current = {h.role: h for h in Host.objects.filter(meeting=meeting, generation=2)}
    assert set(current) == {"teacher", "student"}
    assert all(h.instance_id and h.instance_id not in first.values() for h in current.values())
    assert set(Host.objects.filter(generation=1).values_list("state", flat=True)) == {HostState.UNHEALTHY}
    assert meeting.events.filter(reason="HOST_REPLACED").count() == 2
    live = {i["InstanceId"] for i in instances_of(ec2, meeting.pk)}
    assert live == {h.instance_id for h in current.values()}  # the first generation is terminated

    much_later = later + timedelta(minutes=settings.ELEPHANT_HEALTH_TIMEOUT + 1)
    with time_machine.travel(much_later):
        run_watchdog()
        run_health(now=much_later)
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.FAILED
    assert meeting.termination_reason == TerminationReason.HEALTH_TIMEOUT
    assert "not healthy within" in meeting.last_error
    assert instances_of(ec2, meeting.pk) == []


def test_a_host_that_dies_is_replaced_and_its_replacement_dying_fails_the_meeting(ec2):
    meeting = launched_meeting()
    run_watchdog()
    run_health()
    teacher = Host.objects.get(meeting=meeting, role="teacher")
    ec2.terminate_instances(InstanceIds=[teacher.instance_id])
    result = run_watchdog()
    assert [state for _, state in result.lost] in (["shutting-down"], ["terminated"])
    teacher.refresh_from_db()
    assert teacher.state == HostState.FAILED and "outside Elephant" in teacher.last_error
    replacement = Host.objects.get(meeting=meeting, role="teacher", generation=2)
    assert replacement.instance_id and replacement.state == HostState.BOOTING
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.HEALTHY  # never backward; the link updates when it runs

    ec2.terminate_instances(InstanceIds=[replacement.instance_id])
    run_watchdog()
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.FAILED
    assert meeting.termination_reason == TerminationReason.HOST_LOST
    assert instances_of(ec2, meeting.pk) == []


def test_a_fault_while_replacing_a_lost_host_loses_no_replacement(ec2, ec2_hook, settings):
    meeting = launched_meeting()
    run_watchdog()
    run_health()
    teacher = Host.objects.get(meeting=meeting, role="teacher")
    ec2.terminate_instances(InstanceIds=[teacher.instance_id])
    settings.ELEPHANT_AWS_MAX_ATTEMPTS = 1
    ec2_hook.on("before-send.ec2.TerminateInstances", lambda **_: aws_error("RequestLimitExceeded", status=503))
    try:
        run_watchdog()  # host_lost_task: the old instance's termination is throttled
    except aws.AwsTransientError:
        pass
    ec2_hook.clear()
    # The task's retry and the next sweeps.
    assert not services.host_lost(host_id=teacher.pk, ec2_state="terminated")
    run_watchdog()
    run_health()
    teacher.refresh_from_db()
    assert teacher.state == HostState.FAILED
    replacement = Host.objects.get(meeting=meeting, role="teacher", generation=2)
    assert replacement.instance_id
    assert replacement.instance_id in {i["InstanceId"] for i in instances_of(ec2, meeting.pk)}


def test_a_fault_after_a_replacement_times_out_still_fails_the_meeting(settings, ec2, ec2_hook):
    settings.ELEPHANT_LAUNCH_POLICY = "fixed"
    settings.ELEPHANT_DCV_URL_TEMPLATE = "http://127.0.0.1:9/{instance_id}/"  # never answers
    meeting = launched_meeting()
    run_watchdog()
    later = timezone.now() + timedelta(minutes=settings.ELEPHANT_HEALTH_TIMEOUT + 1)
    with time_machine.travel(later):
        run_health(now=later)
    # Only the teacher's replacement stays unhealthy.
    Host.objects.filter(meeting=meeting, role="student", generation=2).update(agent_healthy_at=timezone.now())
    settings.ELEPHANT_AWS_MAX_ATTEMPTS = 1
    ec2_hook.on("before-send.ec2.TerminateInstances", lambda **_: aws_error("RequestLimitExceeded", status=503))
    much_later = later + timedelta(minutes=settings.ELEPHANT_HEALTH_TIMEOUT + 1)
    with time_machine.travel(much_later):
        run_watchdog()
        try:
            run_health(now=much_later)
        except aws.AwsTransientError:
            pass
        ec2_hook.clear()
        run_health(now=much_later)
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.FAILED
    assert meeting.termination_reason == TerminationReason.HEALTH_TIMEOUT
    services.fleet_reap(now=much_later + timedelta(minutes=settings.ELEPHANT_REAPER_GRACE_MINUTES))
    assert instances_of(ec2, meeting.pk) == []


def test_watchdog_marks_terminating_hosts_terminated(ec2):
    meeting = launched_meeting()
    services.meeting_terminate(meeting=meeting, reason=TerminationReason.STAFF, actor="staff:sam")
    assert set(Host.objects.filter(meeting=meeting).values_list("state", flat=True)) == {HostState.TERMINATING}
    result = run_watchdog()
    assert result.terminated == 2
    hosts = Host.objects.filter(meeting=meeting)
    assert {h.state for h in hosts} == {HostState.TERMINATED}
    assert all(h.terminated_at for h in hosts)
    assert instances_of(ec2, meeting.pk) == []


def test_one_unknown_id_never_voids_a_status_batch(ec2, strict):
    ids = [i["InstanceId"] for i in ec2.run_instances(ImageId="ami-12345678", MinCount=2, MaxCount=2)["Instances"]]
    strict.advance(120)  # these two are two minutes old
    fresh = ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    strict.rules(invisible_seconds=60)
    # The fresh id is unknown to EC2 for now, one never existed: the other two still count.
    assert aws.instances_status_ok([*ids, fresh, "i-00000000000000dead"]) == set(ids)
    strict.rules(invisible_seconds=0, initializing_seconds=60)
    assert aws.instances_status_ok([*ids, fresh]) == set(ids)  # the fresh one's checks are "initializing"


def test_a_host_that_has_not_attested_needs_the_status_checks_too(strict):
    if services.health.host_attested(Host(attested_at=None)) is None:
        pytest.skip("hosts do not attest in this tree")
    strict.rules(initializing_seconds=600)
    meeting = launched_meeting()
    run_watchdog()
    run_health()
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.DNS_WRITTEN  # DCV answers, the checks still say "initializing"
    assert {(h.ec2_checks_ok, h.dcv_answered) for h in Host.objects.filter(meeting=meeting)} == {(False, True)}
    strict.advance(601)
    run_health()
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.HEALTHY
