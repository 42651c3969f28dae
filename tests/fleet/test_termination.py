"""Termination rules (ARCHITECTURE.md section 3), the staff action, and the reaper."""

from datetime import timedelta

import celery.app.task
import pytest
import time_machine
from django.utils import timezone

from fleet import services, tasks
from fleet.models import Host, HostState
from meetings.models import Meeting, MeetingStatus, TerminationReason
from meetings.policy import PRE_HEALTHY_STATUSES
from meetings.services import meeting_keep_alive, meeting_start_on_join
from tests.factories import make_meeting
from tests.fleet.conftest import TEST_AMI, instances_of

pytestmark = pytest.mark.django_db

T = TerminationReason


def run_termination_sweep(now):
    result = services.fleet_termination_sweep(now=now)
    for meeting_id in result.keep_alive:
        meeting_keep_alive(meeting_id=meeting_id)
    for meeting_id, reason in result.terminate:
        services.meeting_terminate(meeting=Meeting.objects.get(pk=meeting_id), reason=reason)
    return result


def healthy_meeting_with_instances(*, status=MeetingStatus.HEALTHY, **fields):
    meeting = make_meeting(meet_time=timezone.now(), duration_minutes=60, **fields)
    services.meeting_launch(meeting_id=meeting.pk)
    Meeting.objects.filter(pk=meeting.pk).update(status=status)
    if status not in PRE_HEALTHY_STATUSES:
        Host.objects.filter(meeting=meeting).update(state=HostState.HEALTHY)
    meeting.refresh_from_db()
    return meeting


@pytest.mark.parametrize(
    "status, teacher_data, student_data, expected",
    [
        (MeetingStatus.HEALTHY, "", "", T.NO_SHOW_TIMEOUT),
        (MeetingStatus.DNS_WRITTEN, "", "", T.PLATFORM_FAULT),  # the desktops were not ready: nobody's fault
        (MeetingStatus.IN_PROGRESS, "s3://rec/t", "", T.PARTIAL_NO_SHOW_TIMEOUT),
        (MeetingStatus.HEALTHY, "", "s3://rec/s", T.PARTIAL_NO_SHOW_TIMEOUT),
        (MeetingStatus.IN_PROGRESS, "s3://rec/t", "s3://rec/s", T.FIFTEEN_MIN_SUCCESS),
    ],
)
def test_safety_net_at_fifteen_minutes(ec2, status, teacher_data, student_data, expected):
    meeting = healthy_meeting_with_instances(
        status=status, teacher_session_data=teacher_data, student_session_data=student_data
    )
    at_14 = meeting.meet_time + timedelta(minutes=14, seconds=59)
    assert run_termination_sweep(at_14).terminate == []
    at_15 = meeting.meet_time + timedelta(minutes=15)
    with time_machine.travel(at_15):
        result = run_termination_sweep(at_15)
    assert result.terminate == [(meeting.pk, expected)]
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.TERMINATED
    assert meeting.termination_reason == expected
    assert meeting.events.filter(to_status=MeetingStatus.TERMINATED, reason=expected).count() == 1
    assert instances_of(ec2, meeting.pk) == []
    assert set(Host.objects.filter(meeting=meeting).values_list("state", flat=True)) == {HostState.TERMINATING}


def test_in_progress_without_data_is_kept_alive_then_ends_with_success(ec2):
    meeting = healthy_meeting_with_instances(status=MeetingStatus.IN_PROGRESS)
    at_15 = meeting.meet_time + timedelta(minutes=15)
    result = run_termination_sweep(at_15)
    assert result.keep_alive == [meeting.pk] and result.terminate == []
    assert meeting.events.filter(reason="SAFETY_NET_KEPT_ALIVE").count() == 1
    assert run_termination_sweep(at_15 + timedelta(minutes=1)).keep_alive == []  # recorded once

    # One side recorded later: not a partial no-show any more, the meeting runs on.
    Meeting.objects.filter(pk=meeting.pk).update(teacher_session_data="s3://rec/t")
    assert run_termination_sweep(at_15 + timedelta(minutes=20)).terminate == []
    Meeting.objects.filter(pk=meeting.pk).update(student_session_data="s3://rec/s")
    result = run_termination_sweep(at_15 + timedelta(minutes=21))
    assert result.terminate == [(meeting.pk, T.SUCCESS)]
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.TERMINATED and meeting.termination_reason == T.SUCCESS
    assert instances_of(ec2, meeting.pk) == []


def test_a_meeting_joined_after_the_sweep_judged_it_is_not_ended_as_a_no_show(ec2, monkeypatch):
    """The sweep's verdict is queued; the task judges the meeting as it is when it runs."""
    meeting = healthy_meeting_with_instances(status=MeetingStatus.HEALTHY)
    queued = []
    monkeypatch.setattr(celery.app.task.Task, "delay", lambda task, *args, **kwargs: queued.append((task, args)))
    with time_machine.travel(meeting.meet_time + timedelta(minutes=15, seconds=1)):
        assert tasks.fleet_termination_sweep_task() == 1  # HEALTHY, nobody recorded: a no-show
        assert meeting_start_on_join(meeting=meeting, role="student")  # a moment later
        for task, args in queued:
            assert task.apply(args=args).successful()
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.IN_PROGRESS
    assert meeting.events.filter(reason="SAFETY_NET_KEPT_ALIVE").count() == 1
    assert len(instances_of(ec2, meeting.pk)) == 2


def test_hard_stop_at_the_scheduled_end_plus_grace(ec2, settings):
    settings.ELEPHANT_OVERRUN_GRACE = 15
    meeting = healthy_meeting_with_instances(status=MeetingStatus.IN_PROGRESS)
    run_termination_sweep(meeting.meet_time + timedelta(minutes=15))  # kept alive
    Meeting.objects.filter(pk=meeting.pk).update(teacher_session_data="s3://rec/t")
    before = meeting.meet_time + timedelta(minutes=60 + 15) - timedelta(seconds=1)
    assert run_termination_sweep(before).terminate == []
    at_stop = meeting.meet_time + timedelta(minutes=60 + 15)
    assert run_termination_sweep(at_stop).terminate == [(meeting.pk, T.SCHEDULED_END)]
    meeting.refresh_from_db()
    assert meeting.termination_reason == T.SCHEDULED_END
    assert instances_of(ec2, meeting.pk) == []


def test_a_short_meeting_ends_at_its_end_before_the_safety_net(settings):
    settings.ELEPHANT_OVERRUN_GRACE = 0
    meeting = make_meeting(meet_time=timezone.now(), duration_minutes=1, status=MeetingStatus.IN_PROGRESS)
    assert run_termination_sweep(meeting.meet_time + timedelta(seconds=59)).terminate == []
    assert run_termination_sweep(meeting.meet_time + timedelta(minutes=1)).terminate == [(meeting.pk, T.SCHEDULED_END)]


def test_rules_ignore_meetings_that_are_not_active():
    now = timezone.now()
    for status in (MeetingStatus.SCHEDULED, MeetingStatus.TERMINATED, MeetingStatus.CANCELLED, MeetingStatus.FAILED):
        make_meeting(meet_time=now - timedelta(hours=3), status=status)
    result = run_termination_sweep(now)
    assert result.terminate == [] and result.keep_alive == []


def test_staff_termination(ec2):
    meeting = healthy_meeting_with_instances(status=MeetingStatus.IN_PROGRESS)
    assert services.meeting_terminate(meeting=meeting, reason=T.STAFF, actor="staff:sam")
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.TERMINATED and meeting.termination_reason == T.STAFF
    assert meeting.events.get(to_status=MeetingStatus.TERMINATED).actor == "staff:sam"
    assert instances_of(ec2, meeting.pk) == []
    # Again: no second transition, the terminations are simply re-sent.
    assert not services.meeting_terminate(meeting=meeting, reason=T.STAFF, actor="staff:sam")
    assert meeting.events.filter(to_status=MeetingStatus.TERMINATED).count() == 1


def test_a_replacement_still_booting_at_the_safety_net_is_a_platform_fault_not_a_no_show(ec2):
    meeting = healthy_meeting_with_instances(status=MeetingStatus.HEALTHY)
    # The student's desktop was lost and its replacement is still booting when the net is judged.
    Host.objects.filter(meeting=meeting, role="student").update(state=HostState.FAILED)
    Host.objects.create(meeting=meeting, role="student", generation=2, state=HostState.BOOTING, instance_id="i-0b")
    at_15 = meeting.meet_time + timedelta(minutes=15)
    with time_machine.travel(at_15):
        result = services.fleet_termination_sweep(now=at_15)
        assert result.terminate == [(meeting.pk, T.PLATFORM_FAULT)]
        assert services.meeting_termination_rules_apply(meeting_id=meeting.pk, now=at_15) == T.PLATFORM_FAULT
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.TERMINATED and meeting.termination_reason == T.PLATFORM_FAULT
    assert "not a no-show" in T(meeting.termination_reason).label


def test_the_verdict_never_blames_people_for_desktops_that_were_not_ready():
    from meetings.policy import termination_verdict

    meet_time = timezone.now()
    judge = dict(meet_time=meet_time, duration_minutes=60, kept_alive=False, now=meet_time + timedelta(minutes=15))
    for status in (MeetingStatus.LAUNCHING, MeetingStatus.HEALTHY):
        for teacher, student in (("", ""), ("s3://t", "")):
            assert (
                termination_verdict(
                    status=status,
                    teacher_session_data=teacher,
                    student_session_data=student,
                    hosts_ready=False,
                    **judge,
                )
                == T.PLATFORM_FAULT
            )
    both = termination_verdict(
        status=MeetingStatus.IN_PROGRESS, teacher_session_data="t", student_session_data="s", hosts_ready=False, **judge
    )
    assert both == T.FIFTEEN_MIN_SUCCESS
    ready = termination_verdict(
        status=MeetingStatus.HEALTHY, teacher_session_data="", student_session_data="", hosts_ready=True, **judge
    )
    assert ready == T.NO_SHOW_TIMEOUT


# --- the reaper ------------------------------------------------------------------------------------
def run_tagged(ec2, tags: dict, deployment: str | None = "test") -> str:
    if deployment is not None:
        tags = {**tags, "ElephantDeployment": deployment}
    spec = [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
    response = ec2.run_instances(ImageId=TEST_AMI, MinCount=1, MaxCount=1, TagSpecifications=spec)
    return response["Instances"][0]["InstanceId"]


def live_ids(ec2) -> set[str]:
    found = ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])
    return {i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]}


def test_reaper_terminates_instances_of_terminal_and_unknown_meetings(ec2):
    active = healthy_meeting_with_instances(status=MeetingStatus.IN_PROGRESS)
    active_ids = set(Host.objects.filter(meeting=active).values_list("instance_id", flat=True))
    ended = make_meeting(status=MeetingStatus.TERMINATED)
    left_behind = run_tagged(ec2, {"Project": "Elephant", "MeetingID": ended.pk, "Role": "teacher"})
    unknown = run_tagged(ec2, {"Project": "Elephant", "MeetingID": "zzzzzzzzzzzzzzzz", "Role": "student"})
    untagged_meeting = run_tagged(ec2, {"Project": "Elephant"})
    not_ours = run_tagged(ec2, {"Project": "SomethingElse", "MeetingID": ended.pk})

    result = services.fleet_reap()
    assert set(result.terminated) == {left_behind, unknown, untagged_meeting}
    assert live_ids(ec2) == active_ids | {not_ours}
    event = ended.events.get(reason="REAPED")
    assert left_behind in event.detail and "TERMINATED" in event.detail and event.actor == "reaper"
    assert result.events == 1
    assert services.fleet_reap().terminated == []


def test_the_reaper_never_touches_another_deployments_instances(ec2, settings):
    """Staging and production in one account: each reaps only its own ElephantDeployment."""
    ended = make_meeting(status=MeetingStatus.TERMINATED)
    staging = run_tagged(ec2, {"Project": "Elephant", "MeetingID": ended.pk, "Role": "teacher"}, deployment="staging")
    old_style = run_tagged(ec2, {"Project": "Elephant", "MeetingID": ended.pk, "Role": "teacher"}, deployment=None)
    ours = run_tagged(ec2, {"Project": "Elephant", "MeetingID": ended.pk, "Role": "student"})
    assert services.fleet_reap().terminated == [ours]
    assert live_ids(ec2) == {staging, old_style}
    settings.ELEPHANT_DEPLOYMENT = "staging"
    assert services.fleet_reap().terminated == [staging]


def test_the_watchdog_leaves_another_deployments_instance_alone(ec2):
    """A host row pointing at another deployment's instance (a restored or shared database) is not acted on."""
    meeting = make_meeting(status=MeetingStatus.LAUNCHED, meet_time=timezone.now())
    theirs = run_tagged(ec2, {"Project": "Elephant", "MeetingID": meeting.pk, "Role": "teacher"}, deployment="staging")
    ec2.terminate_instances(InstanceIds=[theirs])
    host = Host.objects.create(meeting=meeting, role="teacher", instance_id=theirs, state=HostState.BOOTING)
    result = services.fleet_watchdog_sweep()
    assert (result.lost, result.running) == ([], [])
    host.refresh_from_db()
    assert host.state == HostState.BOOTING


def test_reaper_spares_a_fresh_untracked_instance_of_an_active_meeting_but_not_an_old_one(ec2, settings):
    meeting = healthy_meeting_with_instances(status=MeetingStatus.HEALTHY)
    stray = run_tagged(ec2, {"Project": "Elephant", "MeetingID": meeting.pk, "Role": "teacher", "Generation": "1"})
    assert services.fleet_reap().terminated == []  # maybe a launch still recording it
    later = timezone.now() + timedelta(minutes=settings.ELEPHANT_REAPER_GRACE_MINUTES + 1)
    with time_machine.travel(later):
        assert services.fleet_reap(now=later).terminated == [stray]
    assert "no host tracks it" in meeting.events.get(reason="REAPED").detail
