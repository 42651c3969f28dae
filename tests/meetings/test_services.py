from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from meetings.models import MEETING_ID_ALPHABET, Meeting, MeetingEvent, MeetingStatus
from meetings.services import meeting_cancel, meeting_schedule, meeting_start_on_join, meeting_transition
from meetings.signals import meeting_changed
from tests.factories import make_meeting


@pytest.fixture
def announced():
    seen = []

    def receiver(sender, **kwargs):
        seen.append((kwargs["meeting_id"], kwargs["from_status"], kwargs["to_status"]))

    meeting_changed.connect(receiver)
    yield seen
    meeting_changed.disconnect(receiver)


@pytest.mark.django_db(transaction=True)
class TestSchedule:
    def test_schedule_stores_utc_with_the_zone_and_logs_an_event(self, announced):
        from zoneinfo import ZoneInfo

        local = (timezone.now() + timedelta(days=2)).astimezone(ZoneInfo("America/New_York")).replace(microsecond=0)
        meeting = meeting_schedule(
            teacher_name="Tina", student_name="Stu", meet_time=local, time_zone="America/New_York", actor="test"
        )
        meeting.refresh_from_db()
        assert len(meeting.id) == 16 and set(meeting.id) <= set(MEETING_ID_ALPHABET)
        assert meeting.meet_time == local and meeting.meet_time.utcoffset() == timedelta(0)
        assert meeting.local_meet_time.tzinfo.key == "America/New_York"
        assert meeting.status == MeetingStatus.SCHEDULED and meeting.duration_minutes == 60
        assert list(meeting.events.values_list("to_status", "actor")) == [("SCHEDULED", "test")]
        assert announced == [(meeting.id, "", "SCHEDULED")]

    def test_ids_are_random(self):
        start = timezone.now() + timedelta(hours=1)
        ids = {meeting_schedule(teacher_name="T", student_name="S", meet_time=start).id for _ in range(20)}
        assert len(ids) == 20

    @pytest.mark.parametrize(
        "kwargs, field",
        [
            ({"meet_time": timezone.now() - timedelta(minutes=31)}, "meet_time"),
            ({"meet_time": timezone.now().replace(tzinfo=None)}, "meet_time"),
            ({"time_zone": "Mars/Olympus"}, "time_zone"),
            ({"duration_minutes": 0}, "duration_minutes"),
            ({"duration_minutes": 10_000}, "duration_minutes"),
        ],
    )
    def test_invalid_schedules_are_refused_with_the_field(self, kwargs, field):
        args = {"teacher_name": "T", "student_name": "S", "meet_time": timezone.now() + timedelta(hours=1)} | kwargs
        with pytest.raises(ValidationError) as error:
            meeting_schedule(**args)
        assert field in error.value.message_dict
        assert Meeting.objects.count() == 0

    def test_a_time_29_minutes_ago_is_still_accepted(self):
        meeting_schedule(teacher_name="T", student_name="S", meet_time=timezone.now() - timedelta(minutes=29))
        assert Meeting.objects.count() == 1


@pytest.mark.django_db(transaction=True)
class TestTransitions:
    def test_transition_is_conditional_versioned_and_logged(self, announced):
        meeting = make_meeting()
        assert meeting_transition(
            meeting=meeting, to_status=MeetingStatus.LAUNCHING, allowed_from={MeetingStatus.SCHEDULED}, reason="DUE"
        )
        stored = Meeting.objects.get(pk=meeting.pk)
        assert (stored.status, stored.version) == (MeetingStatus.LAUNCHING, 2)
        assert stored.launched_at is not None
        # Repeating it is a no-op: no second event, no second announcement.
        assert not meeting_transition(
            meeting=meeting, to_status=MeetingStatus.LAUNCHING, allowed_from={MeetingStatus.SCHEDULED}
        )
        assert MeetingEvent.objects.filter(meeting=meeting).count() == 1
        assert announced == [(meeting.id, "SCHEDULED", "LAUNCHING")]

    def test_a_stale_copy_loses_the_race_without_side_effects(self, announced):
        meeting = make_meeting()
        stale = Meeting.objects.get(pk=meeting.pk)
        assert meeting_cancel(meeting=meeting, actor="teacher:t")
        assert not meeting_transition(
            meeting=stale, to_status=MeetingStatus.LAUNCHING, allowed_from={MeetingStatus.SCHEDULED}
        )
        assert Meeting.objects.get(pk=meeting.pk).status == MeetingStatus.CANCELLED
        assert announced == [(meeting.id, "SCHEDULED", "CANCELLED")]

    def test_with_several_origins_a_stale_copy_retries_from_the_current_status(self):
        meeting = make_meeting(status=MeetingStatus.LAUNCHED)
        stale = Meeting.objects.get(pk=meeting.pk)
        meeting_transition(meeting=meeting, to_status=MeetingStatus.DNS_WRITTEN, allowed_from={MeetingStatus.LAUNCHED})
        assert meeting_transition(
            meeting=stale,
            to_status=MeetingStatus.TERMINATED,
            allowed_from={MeetingStatus.LAUNCHED, MeetingStatus.DNS_WRITTEN},
            reason="STAFF",
        )
        event = MeetingEvent.objects.filter(meeting=meeting).last()
        assert (event.from_status, event.to_status) == ("DNS_WRITTEN", "TERMINATED")

    def test_nothing_is_announced_when_the_transaction_rolls_back(self, announced):
        meeting = make_meeting()
        with pytest.raises(RuntimeError), transaction.atomic():
            meeting_transition(
                meeting=meeting, to_status=MeetingStatus.LAUNCHING, allowed_from={MeetingStatus.SCHEDULED}
            )
            raise RuntimeError("boom")
        assert Meeting.objects.get(pk=meeting.pk).status == MeetingStatus.SCHEDULED
        assert not MeetingEvent.objects.filter(meeting=meeting).exists()
        assert announced == []

    def test_cancel_only_while_scheduled(self):
        launching = make_meeting(status=MeetingStatus.LAUNCHING)
        assert not meeting_cancel(meeting=launching, actor="staff:x")
        scheduled = make_meeting()
        assert meeting_cancel(meeting=scheduled, actor="staff:x")
        assert not meeting_cancel(meeting=scheduled, actor="staff:x")
        scheduled.refresh_from_db()
        assert scheduled.termination_reason == "CANCELLED" and scheduled.ended_at is not None

    def test_start_on_join_only_from_healthy(self):
        meeting = make_meeting(status=MeetingStatus.DNS_WRITTEN)
        assert not meeting_start_on_join(meeting=meeting, role="teacher")
        meeting = make_meeting(status=MeetingStatus.HEALTHY)
        assert meeting_start_on_join(meeting=meeting, role="student")
        assert not meeting_start_on_join(meeting=meeting, role="teacher")
