"""Launching hosts against the local EC2: tags, idempotency, fallbacks, configuration errors."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from fleet import aws, services
from fleet.models import Host, HostState
from meetings.models import MeetingEvent, MeetingStatus, TerminationReason
from tests.factories import make_meeting
from tests.fleet.conftest import aws_error, instances_of

pytestmark = pytest.mark.django_db


def due_meeting(**fields):
    return make_meeting(meet_time=timezone.now() + timedelta(minutes=2), **fields)


def test_launch_starts_one_tagged_instance_per_role(ec2, settings):
    meeting = due_meeting()
    assert services.meeting_launch(meeting_id=meeting.pk)
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.LAUNCHED
    assert meeting.launched_at is not None
    instances = instances_of(ec2, meeting.pk)
    assert len(instances) == 2
    by_role = {}
    for instance in instances:
        tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
        by_role[tags["Role"]] = (instance, tags)
        assert tags["MeetingID"] == meeting.pk
        assert tags["Project"] == "Elephant"
        assert tags["Name"] == f"{meeting.pk}_{tags['Role']}"
        assert tags["ElephantDeployment"] == "test"
        assert instance["ImageId"] == settings.ELEPHANT_AMI_ID
        assert instance["InstanceType"] == "g4dn.xlarge"
        assert instance["PublicIpAddress"]
    hosts = {h.role: h for h in Host.objects.filter(meeting=meeting)}
    assert set(hosts) == {"teacher", "student"}
    for role, host in hosts.items():
        assert host.instance_id == by_role[role][0]["InstanceId"]
        assert host.state == HostState.BOOTING
        assert host.instance_type == "g4dn.xlarge"
        assert host.availability_zone.startswith("us-west-2")
    reasons = list(meeting.events.values_list("reason", flat=True))
    assert reasons.count("HOST_LAUNCHED") == 2
    assert "LAUNCH" in reasons and "HOSTS_LAUNCHED" in reasons


def test_each_candidate_has_its_own_deterministic_client_token(ec2_hook, strict):
    """EC2 binds a token to its parameters: a fallback must not reuse it for another type."""
    strict.capacity(instance_type="g4dn.xlarge")
    sent = []
    ec2_hook.on(
        "before-call.ec2.RunInstances",
        lambda params, **_: sent.append((params["body"]["InstanceType"], params["body"]["ClientToken"])),
    )
    meeting = due_meeting()
    services.meeting_launch(meeting_id=meeting.pk)
    tokens = [token for _, token in sent]
    assert [t for t, _ in sent] == ["g4dn.xlarge", "g5.xlarge", "g4dn.xlarge", "g5.xlarge"]
    assert len(set(tokens)) == 4 and all(len(t) <= 64 and t.isascii() for t in tokens)
    candidates = [aws.LaunchCandidate(instance_type=t) for t in ("g4dn.xlarge", "g5.xlarge")]
    for role, offset in (("teacher", 0), ("student", 2)):
        for n, candidate in enumerate(candidates):
            token = aws.client_token(meeting_id=meeting.pk, role=role, generation=1, candidate=candidate)
            assert tokens[offset + n] == token
    assert aws.client_token(meeting_id=meeting.pk, role="teacher", generation=2, candidate=candidates[0]) not in tokens


def test_a_task_delivered_twice_launches_nothing_twice(ec2):
    meeting = due_meeting()
    assert services.meeting_launch(meeting_id=meeting.pk)
    assert not services.meeting_launch(meeting_id=meeting.pk)  # LAUNCHED already: nothing to do
    assert len(instances_of(ec2, meeting.pk)) == 2
    assert Host.objects.filter(meeting=meeting).count() == 2


def test_a_worker_killed_between_run_instances_and_the_database_write_leaves_no_duplicate(ec2, ec2_hook):
    class WorkerKilled(BaseException):
        pass

    def kill(**_):
        raise WorkerKilled

    meeting = due_meeting()
    ec2_hook.on("after-call.ec2.RunInstances", kill)
    with pytest.raises(WorkerKilled):
        services.meeting_launch(meeting_id=meeting.pk)
    ec2_hook.clear()
    # The first host's instance exists in EC2, the database knows nothing of it.
    assert len(instances_of(ec2, meeting.pk)) == 1
    stuck = Host.objects.get(meeting=meeting, state=HostState.LAUNCHING)
    assert stuck.instance_id == ""

    # Redelivered at once: the claim's lease is still held, so only the other role launches.
    services.meeting_launch(meeting_id=meeting.pk)
    assert len(instances_of(ec2, meeting.pk)) == 2
    stuck.refresh_from_db()
    assert stuck.instance_id == ""

    # Redelivered after the lease (acks_late + visibility timeout): the tag look-up adopts it.
    with time_machine.travel(timezone.now() + timedelta(minutes=3)):
        services.meeting_launch(meeting_id=meeting.pk)
    instances = instances_of(ec2, meeting.pk)
    assert len(instances) == 2
    stuck.refresh_from_db()
    assert stuck.state == HostState.BOOTING
    assert stuck.instance_id in {i["InstanceId"] for i in instances}
    assert meeting.events.filter(reason="HOST_ADOPTED").count() == 1
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.LAUNCHED


def test_a_capacity_error_moves_to_the_next_type_at_once_without_spending_retries(ec2, ec2_hook, strict):
    """EC2 answers InsufficientInstanceCapacity as HTTP 500 (the strict proxy does too): no retry, next type."""
    strict.capacity(instance_type="g4dn.xlarge")
    sends = []
    ec2_hook.on("before-send.ec2.RunInstances", lambda request, **_: sends.append(request.body))
    meeting = due_meeting()
    assert services.meeting_launch(meeting_id=meeting.pk)
    instances = instances_of(ec2, meeting.pk)
    assert {i["InstanceType"] for i in instances} == {"g5.xlarge"}
    assert set(Host.objects.filter(meeting=meeting).values_list("instance_type", flat=True)) == {"g5.xlarge"}
    # One refused g4dn and one g5 per role: no attempt repeated by the retry policy.
    assert len(sends) == 4


def test_no_capacity_anywhere_fails_the_meeting_with_the_reason(ec2, ec2_hook, strict):
    strict.capacity()  # every type, every zone
    sends = []
    ec2_hook.on("before-send.ec2.RunInstances", lambda **_: sends.append(1))
    meeting = due_meeting()
    services.meeting_launch(meeting_id=meeting.pk)
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.FAILED
    assert meeting.termination_reason == TerminationReason.LAUNCH_FAILED
    assert "g4dn.xlarge" in meeting.last_error and "g5.xlarge" in meeting.last_error
    assert instances_of(ec2, meeting.pk) == []
    assert len(sends) == 2  # the teacher's two candidates, once each; the meeting failed with them


def test_capacity_missing_in_one_zone_moves_to_the_next_zone(settings, ec2, strict):
    subnets = two_zone_subnets(ec2, settings)
    strict.capacity(instance_type="g4dn.xlarge", availability_zone="us-west-2a")
    meeting = due_meeting()
    services.meeting_launch(meeting_id=meeting.pk)
    placed = {i["InstanceType"] + " " + i["SubnetId"] for i in instances_of(ec2, meeting.pk)}
    assert placed == {f"g4dn.xlarge {subnets['us-west-2b']}"}  # both hosts: the type first, then the zone


def two_zone_subnets(ec2, settings) -> dict[str, str]:
    vpc = ec2.create_vpc(CidrBlock="10.8.0.0/16")["Vpc"]["VpcId"]
    subnets = {}
    for n, zone in enumerate(("us-west-2a", "us-west-2b")):
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.8.{n}.0/24", AvailabilityZone=zone)["Subnet"]
        subnets[zone] = subnet["SubnetId"]
    settings.ELEPHANT_SUBNET_IDS = list(subnets.values())
    return subnets


def test_teacher_and_student_are_spread_over_the_zones(settings, ec2):
    two_zone_subnets(ec2, settings)
    meeting = due_meeting()
    services.meeting_launch(meeting_id=meeting.pk)
    zones = dict(Host.objects.filter(meeting=meeting).values_list("role", "availability_zone"))
    assert zones == {"teacher": "us-west-2a", "student": "us-west-2b"}


def test_a_repeated_launch_after_a_crash_gets_the_same_instance_from_its_token(ec2, ec2_hook, strict):
    """The tag look-up cannot see an instance EC2 does not list yet; the candidate's token still
    makes EC2 answer with the instance the crashed worker started instead of a second one."""

    class WorkerKilled(BaseException):
        pass

    def kill(**_):
        raise WorkerKilled

    strict.capacity(instance_type="g4dn.xlarge")
    strict.rules(invisible_seconds=3600)
    meeting = due_meeting()
    ec2_hook.on("after-call.ec2.RunInstances", kill)
    with pytest.raises(WorkerKilled):
        services.meeting_launch(meeting_id=meeting.pk)
    ec2_hook.clear()
    strict.capacity(instance_type="g4dn.xlarge", available=True)  # capacity is back for the first candidate
    with time_machine.travel(timezone.now() + timedelta(minutes=3)):  # past the claim's lease
        services.meeting_launch(meeting_id=meeting.pk)
    strict.rules(invisible_seconds=0)
    instances = instances_of(ec2, meeting.pk)
    teacher = Host.objects.get(meeting=meeting, role="teacher")
    # The teacher resumed with the g5 candidate's token: EC2 answered with the crashed worker's
    # instance. Starting the chain again at g4dn (available again) would have made a second one.
    assert len(instances) == 2
    assert teacher.instance_type == "g5.xlarge" and teacher.instance_id in {i["InstanceId"] for i in instances}
    assert Host.objects.get(meeting=meeting, role="student").instance_type == "g4dn.xlarge"


def test_a_launch_whose_claim_passed_to_another_worker_stops_before_the_next_candidate(ec2, ec2_hook, strict):
    strict.capacity(instance_type="g4dn.xlarge")
    meeting = due_meeting()

    def another_worker_claims(request, **_):
        if "InstanceType=g4dn.xlarge" in str(request.body):
            Host.objects.filter(meeting=meeting, role="teacher").update(launched_at=timezone.now() + timedelta(1))

    ec2_hook.on("before-send.ec2.RunInstances", another_worker_claims)
    services.meeting_launch(meeting_id=meeting.pk)
    teacher = Host.objects.get(meeting=meeting, role="teacher")
    assert teacher.state == HostState.LAUNCHING and teacher.instance_id == ""
    assert [i["Tags"] for i in instances_of(ec2, meeting.pk) if {"Key": "Role", "Value": "teacher"} in i["Tags"]] == []


def test_a_quota_error_fails_at_once_with_what_staff_can_do(ec2, ec2_hook):
    sends = []

    def no_vcpus(**_):
        sends.append(1)
        return aws_error("VcpuLimitExceeded", "You have requested more vCPU capacity than your current vCPU limit")

    ec2_hook.on("before-send.ec2.RunInstances", no_vcpus)
    meeting = due_meeting()
    services.meeting_launch(meeting_id=meeting.pk)
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.FAILED and meeting.termination_reason == TerminationReason.LAUNCH_FAILED
    assert "VcpuLimitExceeded" in meeting.last_error and "Service Quotas" in meeting.last_error
    assert len(sends) == 1  # no other type tried, nothing retried


def test_a_fallback_list_mixing_gpu_vendors_is_refused_before_any_call(settings, ec2, ec2_hook):
    settings.ELEPHANT_INSTANCE_TYPES = ["g4dn.xlarge", "g4ad.xlarge"]
    sends = []
    ec2_hook.on("before-send.ec2.RunInstances", lambda **_: sends.append(1))
    meeting = due_meeting()
    services.meeting_launch(meeting_id=meeting.pk)
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.FAILED and "mix GPU vendors" in meeting.last_error
    assert "AMD: g4ad.xlarge" in meeting.last_error and sends == []
    assert aws.instance_types_problem(["g4dn.xlarge", "g5.xlarge", "g6.xlarge"]) == ""


def test_the_root_volume_uses_the_amis_device_encrypted_and_the_public_address_is_asked_for(ec2, ec2_hook):
    sent = []
    ec2_hook.on("before-call.ec2.RunInstances", lambda params, **_: sent.append(params["body"]))
    meeting = due_meeting()
    services.meeting_launch(meeting_id=meeting.pk)
    body = sent[0]
    assert body["BlockDeviceMapping.1.DeviceName"] == "/dev/xvda"  # the registered test AMI's root
    assert body["BlockDeviceMapping.1.Ebs.Encrypted"] == "true"
    assert body["NetworkInterface.1.AssociatePublicIpAddress"] == "true"
    instance = instances_of(ec2, meeting.pk)[0]
    # (moto always lists its own /dev/sda1 root; EC2 would add that as a second, blank disk.)
    mapped = {m["DeviceName"]: m["Ebs"]["VolumeId"] for m in instance["BlockDeviceMappings"]}
    assert ec2.describe_volumes(VolumeIds=[mapped["/dev/xvda"]])["Volumes"][0]["Encrypted"]


def test_only_a_public_address_is_handed_out_for_public_dns(settings):
    private_only = aws.Instance(instance_id="i-1", state="running", private_address="10.0.0.5")
    assert aws.instance_address(private_only) == ""
    settings.ELEPHANT_PUBLIC_IP = False  # private subnets, a private hosted zone
    assert aws.instance_address(private_only) == "10.0.0.5"


def test_throttling_is_retried_with_backoff(ec2, ec2_hook):
    calls = []

    def throttle_twice(**_):
        calls.append(1)
        if len(calls) <= 2:
            return aws_error("RequestLimitExceeded", "Request limit exceeded.", status=503)
        return None

    ec2_hook.on("before-send.ec2.RunInstances", throttle_twice)
    meeting = due_meeting()
    services.meeting_launch(meeting_id=meeting.pk)
    assert len(calls) == 4  # two refusals, then one RunInstances per role
    assert len(instances_of(ec2, meeting.pk)) == 2


def test_throttling_past_the_policy_raises_for_the_task_to_retry(ec2, ec2_hook, settings):
    settings.ELEPHANT_AWS_MAX_ATTEMPTS = 3
    ec2_hook.on("before-send.ec2.RunInstances", lambda **_: aws_error("RequestLimitExceeded", status=503))
    meeting = due_meeting()
    with pytest.raises(aws.AwsTransientError):
        services.meeting_launch(meeting_id=meeting.pk)
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.LAUNCHING  # nothing lost: a retry resumes
    host = Host.objects.get(meeting=meeting, role="teacher")
    assert host.state == HostState.PENDING and "RequestLimitExceeded" in host.last_error
    ec2_hook.clear()
    services.meeting_launch(meeting_id=meeting.pk)
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.LAUNCHED
    assert len(instances_of(ec2, meeting.pk)) == 2


def test_a_launch_that_keeps_failing_transiently_fails_the_meeting_at_the_health_timeout(ec2, ec2_hook, settings):
    """Each retry re-claims the host; that must not restart its clock, or the meeting never fails."""
    settings.ELEPHANT_AWS_MAX_ATTEMPTS = 1
    ec2_hook.on("before-send.ec2.RunInstances", lambda **_: aws_error("RequestLimitExceeded", status=503))
    meeting = due_meeting()
    start = timezone.now()
    for minute in (0, 3, 6, 9):  # the task's retries and the launch sweep keep trying
        with time_machine.travel(start + timedelta(minutes=minute)), pytest.raises(aws.AwsTransientError):
            services.meeting_launch(meeting_id=meeting.pk)
    with time_machine.travel(start + timedelta(minutes=settings.ELEPHANT_HEALTH_TIMEOUT, seconds=30)):
        services.meeting_launch(meeting_id=meeting.pk)
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.FAILED
    assert meeting.termination_reason == TerminationReason.LAUNCH_FAILED
    assert "not launched within" in meeting.last_error and "RequestLimitExceeded" in meeting.last_error
    assert instances_of(ec2, meeting.pk) == []


def test_an_unusable_endpoint_url_fails_the_meeting(settings, ec2):
    settings.AWS_ENDPOINT_URL = "localhost:4566"  # no scheme
    aws.aws_clients_reset()
    meeting = due_meeting()
    services.meeting_launch(meeting_id=meeting.pk)
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.FAILED
    assert meeting.termination_reason == TerminationReason.LAUNCH_FAILED
    assert "localhost:4566" in meeting.last_error


def test_missing_ami_fails_the_meeting_without_calling_aws(settings, ec2, caplog):
    settings.ELEPHANT_AMI_ID = ""
    meeting = due_meeting()
    assert not services.meeting_launch(meeting_id=meeting.pk)
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.FAILED
    assert meeting.termination_reason == TerminationReason.LAUNCH_FAILED
    assert meeting.last_error == "ELEPHANT_AMI_ID is not set"
    assert "ELEPHANT_AMI_ID is not set" in caplog.text
    assert MeetingEvent.objects.filter(meeting=meeting, to_status=MeetingStatus.FAILED).count() == 1
    # A second delivery does not loop: the meeting is terminal.
    assert not services.meeting_launch(meeting_id=meeting.pk)


def test_wrong_network_settings_fail_the_meeting_with_the_aws_message(settings, ec2):
    settings.ELEPHANT_SUBNET_IDS = ["subnet-doesnotexist"]
    meeting = due_meeting()
    services.meeting_launch(meeting_id=meeting.pk)
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.FAILED
    assert "InvalidSubnetID.NotFound" in meeting.last_error
    host = Host.objects.get(meeting=meeting, role="teacher")
    assert host.state == HostState.FAILED and "subnet-doesnotexist" in host.last_error


def test_subnets_and_security_groups_are_used(settings, ec2):
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.1.0/24", AvailabilityZone="us-west-2b")["Subnet"]
    group = ec2.create_security_group(GroupName="dcv", Description="dcv", VpcId=vpc)["GroupId"]
    settings.ELEPHANT_SUBNET_IDS = [subnet["SubnetId"]]
    settings.ELEPHANT_SECURITY_GROUP_IDS = [group]
    meeting = due_meeting()
    services.meeting_launch(meeting_id=meeting.pk)
    for instance in instances_of(ec2, meeting.pk):
        assert instance["SubnetId"] == subnet["SubnetId"]
        assert instance["Placement"]["AvailabilityZone"] == "us-west-2b"
        assert [g["GroupId"] for g in instance["NetworkInterfaces"][0]["Groups"]] == [group]


def test_a_meeting_not_due_or_cancelled_is_not_launched(ec2):
    later = make_meeting(meet_time=timezone.now() + timedelta(hours=2))
    cancelled = due_meeting(status=MeetingStatus.CANCELLED)
    assert services.fleet_launch_sweep() == []
    assert not services.meeting_launch(meeting_id=cancelled.pk)
    assert services.meeting_launch(meeting_id="nosuchmeeting000") is False
    assert instances_of(ec2, later.pk) == [] and instances_of(ec2, cancelled.pk) == []


@pytest.mark.django_db(transaction=True)
def test_launch_transitions_and_host_changes_are_announced(ec2):
    from meetings.signals import meeting_changed

    heard = []

    def receiver(sender, meeting_id, from_status, to_status, reason, **kwargs):
        heard.append((from_status, to_status, reason))

    meeting_changed.connect(receiver)
    try:
        meeting = due_meeting()
        heard.clear()
        services.meeting_launch(meeting_id=meeting.pk)
    finally:
        meeting_changed.disconnect(receiver)
    transitions = [(f, t) for f, t, _ in heard if t]
    assert transitions == [
        (MeetingStatus.SCHEDULED, MeetingStatus.LAUNCHING),
        (MeetingStatus.LAUNCHING, MeetingStatus.LAUNCHED),
    ]
    assert sorted(r for _, t, r in heard if not t) == ["HOST_LAUNCHED", "HOST_LAUNCHED"]


def test_a_launching_meeting_is_handed_out_again_only_once_its_hosts_went_quiet():
    """A launch backing off after throttling touches its hosts at every try; the sweep queues it again only
    when nothing moved for two minutes (a crashed worker), not on every sweep on top of its own retries."""
    from fleet.models import Host

    now = timezone.now()
    launching = dict(status=MeetingStatus.LAUNCHING, launched_at=now - timedelta(minutes=10))
    retrying = make_meeting(meet_time=now + timedelta(minutes=5), **launching)
    Host.objects.create(meeting=retrying, role="teacher", state=HostState.PENDING)
    Host.objects.filter(meeting=retrying).update(updated_at=now - timedelta(seconds=30))
    quiet = make_meeting(meet_time=now + timedelta(minutes=5), **launching)
    Host.objects.create(meeting=quiet, role="teacher", state=HostState.PENDING)
    Host.objects.filter(meeting=quiet).update(updated_at=now - timedelta(minutes=3))
    hostless = make_meeting(meet_time=now + timedelta(minutes=5), **launching)  # died before creating hosts
    fresh = make_meeting(meet_time=now + timedelta(minutes=5), status=MeetingStatus.LAUNCHING, launched_at=now)
    handed_out = set(services.fleet_launch_sweep(now=now))
    assert {quiet.pk, hostless.pk} <= handed_out
    assert retrying.pk not in handed_out and fresh.pk not in handed_out
