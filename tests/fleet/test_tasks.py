"""The Celery entry points: thin, retried on a database outage and on throttling, nothing lost."""

from datetime import timedelta

import pytest
from django.db import OperationalError, connection
from django.utils import timezone

from elephant.celery import app as celery_app
from fleet import tasks
from meetings.models import MeetingEvent, MeetingStatus, TerminationReason
from tests.factories import make_meeting
from tests.fleet.conftest import aws_error, instances_of


class DatabaseDown:
    """Fail the first ``times`` statements that touch ``table`` the way a lost connection does."""

    def __init__(self, table: str, *, times: int = 1, verb: str = "UPDATE"):
        self.table, self.left, self.verb = table, times, verb

    def __call__(self, execute, sql, params, many, context):
        if self.left and sql.lstrip().upper().startswith(self.verb) and self.table in sql:
            self.left -= 1
            raise OperationalError("server closed the connection unexpectedly")
        return execute(sql, params, many, context)


@pytest.mark.django_db(transaction=True)
def test_a_task_failing_on_a_database_outage_is_retried_and_loses_no_transition(ec2):
    meeting = make_meeting(meet_time=timezone.now() + timedelta(minutes=1))
    outage = DatabaseDown("meetings_meeting", times=2)
    with connection.execute_wrapper(outage):
        result = tasks.meeting_launch_task.apply(args=[meeting.pk])
    assert result.successful(), result.traceback
    assert outage.left == 0
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.LAUNCHED
    assert MeetingEvent.objects.filter(meeting=meeting, to_status=MeetingStatus.LAUNCHING).count() == 1
    assert len(instances_of(ec2, meeting.pk)) == 2


@pytest.mark.django_db(transaction=True)
def test_terminate_task_survives_an_outage_during_the_transition(ec2, settings):
    past_hard_stop = timezone.now() - timedelta(minutes=60 + settings.ELEPHANT_OVERRUN_GRACE + 1)
    meeting = make_meeting(meet_time=past_hard_stop, duration_minutes=60, status=MeetingStatus.IN_PROGRESS)
    outage = DatabaseDown("meetings_meeting")
    with connection.execute_wrapper(outage):
        result = tasks.meeting_termination_rules_task.apply(args=[meeting.pk])
    assert outage.left == 0
    assert result.successful(), result.traceback
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.TERMINATED
    assert meeting.termination_reason == TerminationReason.SCHEDULED_END
    assert MeetingEvent.objects.filter(meeting=meeting, to_status=MeetingStatus.TERMINATED).count() == 1


@pytest.mark.django_db(transaction=True)
def test_throttling_beyond_the_aws_policy_is_retried_by_the_task(ec2, ec2_hook, settings):
    settings.ELEPHANT_AWS_MAX_ATTEMPTS = 2
    calls = []

    def throttled_for_a_while(**_):
        calls.append(1)
        return aws_error("RequestLimitExceeded", status=503) if len(calls) <= 3 else None

    ec2_hook.on("before-send.ec2.RunInstances", throttled_for_a_while)
    meeting = make_meeting(meet_time=timezone.now() + timedelta(minutes=1))
    result = tasks.meeting_launch_task.apply(args=[meeting.pk])
    assert result.successful(), result.traceback
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.LAUNCHED
    assert len(instances_of(ec2, meeting.pk)) == 2


@pytest.mark.django_db(transaction=True)
def test_sweep_tasks_hand_out_one_task_per_meeting():
    """Through the real broker (this run's own Redis db)."""
    with celery_app.connection_for_write() as conn, conn.SimpleQueue("celery") as queue:
        while True:  # leftovers of an interrupted earlier run
            try:
                queue.get(timeout=0.1).ack()
            except queue.Empty:
                break
        due = make_meeting(meet_time=timezone.now() + timedelta(minutes=1))
        make_meeting(meet_time=timezone.now() + timedelta(days=1))
        assert tasks.fleet_launch_sweep_task.apply().get() == 1
        message = queue.get(timeout=5)
        args, kwargs, _ = message.payload
        message.ack()
        assert message.headers["task"] == "fleet.tasks.meeting_launch_task"
        assert args == [due.pk]
        with pytest.raises(queue.Empty):
            queue.get(timeout=0.2)


@pytest.mark.django_db
def test_beat_entries_exist_with_expiry():
    from django_celery_beat.models import PeriodicTask

    entries = {t.task: t for t in PeriodicTask.objects.filter(task__startswith="fleet.tasks.")}
    assert set(entries) == {
        "fleet.tasks.fleet_launch_sweep_task",
        "fleet.tasks.fleet_watchdog_task",
        "fleet.tasks.fleet_health_sweep_task",
        "fleet.tasks.fleet_termination_sweep_task",
        "fleet.tasks.fleet_reaper_task",
        "fleet.tasks.fleet_plan_sweep_task",
        "fleet.tasks.fleet_pool_sweep_task",
    }
    for entry in entries.values():
        assert entry.enabled
        assert 0 < entry.expire_seconds <= entry.interval.every
        assert entry.interval.period == "seconds"
