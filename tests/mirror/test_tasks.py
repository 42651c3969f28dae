"""The mirror's Celery tasks: one queued per burst of changes, thin over the services (moto over HTTP)."""

# ruff: noqa: F811  (the fixtures imported from dynamo_support are used as arguments)

import redis
from django.conf import settings

from meetings.models import MeetingStatus
from meetings.services import meeting_record_change
from mirror.services import FLUSH_QUEUED_KEY, mirror_resync
from tests.factories import make_meeting, make_ready_meeting
from tests.mirror.dynamo_support import ddb  # noqa: F401


def test_changes_queue_one_flush_task_at_a_time(ddb, django_capture_on_commit_callbacks):
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete("celery")
    meeting = make_meeting(status=MeetingStatus.SCHEDULED)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            for number in range(5):
                meeting_record_change(meeting=meeting, reason="STAFF_EDIT", fields={"teacher_name": f"T{number}"})
        assert broker.llen("celery") == 1
        assert b"mirror.tasks.mirror_flush_task" in broker.lindex("celery", 0)
    finally:
        broker.delete("celery")
        from django.core.cache import cache

        cache.delete(FLUSH_QUEUED_KEY)


def test_flush_task_runs_the_flush(ddb):
    from mirror.tasks import mirror_flush_task, mirror_pull_task

    meeting = make_ready_meeting()
    mirror_resync(meeting_ids=[meeting.id], actor="test")
    assert mirror_flush_task.apply().get() == {"written": 1, "events": 1, "failed": 0}
    assert mirror_pull_task.apply().get()["meetings"] == 1
