"""The mirror in the staff console: backlog, resync action, state on the meeting page (moto over HTTP)."""

# ruff: noqa: F811  (the fixtures imported from dynamo_support are used as arguments)

from django.utils import timezone

from meetings.models import MeetingEvent
from mirror.models import MirrorState
from mirror.services import mirror_flush
from tests.factories import make_ready_meeting, make_staff
from tests.mirror.dynamo_support import ddb  # noqa: F401


def test_admin_shows_the_backlog_and_resyncs(ddb, client):
    client.force_login(make_staff())
    meeting = make_ready_meeting()
    response = client.post(
        "/admin/meetings/meeting/", {"action": "resync_to_dynamodb", "_selected_action": [meeting.id]}, follow=True
    )
    assert "Queued 1 meeting(s) for DynamoDB" in response.content.decode()
    MirrorState.objects.create(
        meeting=meeting, last_error="DynamoUnavailable: throttled", error_at=timezone.now(), attempts=3
    )

    page = client.get("/admin/mirror/mirrorbacklog/").content.decode()

    assert "Backlog: 1 change(s) of 1 meeting(s), oldest" in page
    assert f"Last error ({meeting.id}," in page and "DynamoUnavailable: throttled" in page
    assert "DDB_RESYNC" in page

    event = MeetingEvent.objects.get(meeting=meeting, mirrored_at__isnull=True)
    client.post("/admin/mirror/mirrorbacklog/", {"action": "retry_now", "_selected_action": [event.pk]})
    state = MirrorState.objects.get(pk=meeting.pk)
    assert state.attempts == 0 and state.next_attempt_at is None
    mirror_flush()
    assert "Backlog: empty" in client.get("/admin/mirror/mirrorbacklog/").content.decode()


def test_the_meeting_page_shows_the_mirror_state(ddb, client):
    client.force_login(make_staff())
    meeting = make_ready_meeting()
    page = client.get(f"/admin/meetings/meeting/{meeting.id}/change/").content.decode()
    assert "DynamoDB mirror" in page and "Resync selected meetings to DynamoDB" not in page

    MirrorState.objects.create(meeting=meeting, mirrored_version=4, last_error="DynamoUnavailable: throttled")
    page = client.get(f"/admin/meetings/meeting/{meeting.id}/change/").content.decode()
    assert "DynamoUnavailable: throttled" in page and "Mirrored version" in page
    listing = client.get("/admin/meetings/meeting/").content.decode()
    assert "Resync selected meetings to DynamoDB" in listing


def test_the_meeting_form_saves_without_the_mirror_state_in_it(ddb, client):
    from tests.meetings.test_admin import change_form

    client.force_login(make_staff())
    meeting = make_ready_meeting()
    MirrorState.objects.create(meeting=meeting, mirrored_version=1, attempts=2)
    meeting.status = "SCHEDULED"
    meeting.save(update_fields=["status"])
    response = client.post(f"/admin/meetings/meeting/{meeting.id}/change/", change_form(meeting, student_name="Sue"))
    assert response.status_code == 302
    assert MirrorState.objects.get(pk=meeting.pk).attempts == 2  # read-only: untouched
