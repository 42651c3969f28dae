"""Teacher pages: log in, schedule, see the links, cancel — only one's own meetings."""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.utils import timezone

from meetings.models import Meeting, MeetingStatus
from meetings.tokens import participant_token
from tests.factories import make_meeting, make_teacher

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=ZoneInfo("UTC"))


@pytest.fixture
def teacher(db):
    return make_teacher("tina")


@pytest.fixture
def teacher_client(client, teacher):
    client.force_login(teacher)
    return client


def schedule_form(**overrides):
    data = {
        "student_name": "Stu Student",
        "student_email": "stu@example.com",
        "date": "2026-11-22",
        "time": "09:30",
        "time_zone": "Asia/Tokyo",
        "duration_minutes": "45",
    }
    return data | overrides


@pytest.mark.django_db
class TestScheduling:
    def test_pages_need_a_login(self, client):
        for url in ("/", "/meetings/new"):
            response = client.get(url)
            assert response.status_code == 302
            assert response["Location"].startswith("/accounts/login/")

    def test_login_page_logs_a_teacher_in(self, client, teacher):
        response = client.post("/accounts/login/", {"username": "tina", "password": "correct-horse-battery"})
        assert response.status_code == 302 and response["Location"] == "/"
        assert "My sessions" in client.get("/").content.decode()

    @time_machine.travel(NOW, tick=False)
    def test_schedule_shows_both_links_and_the_local_time(self, teacher_client, teacher):
        response = teacher_client.post("/meetings/new", schedule_form())
        meeting = Meeting.objects.get()
        assert response.status_code == 302 and response["Location"] == f"/meetings/{meeting.id}"
        assert meeting.meet_time == datetime(2026, 11, 22, 0, 30, tzinfo=ZoneInfo("UTC"))
        assert (meeting.time_zone, meeting.duration_minutes, meeting.teacher) == ("Asia/Tokyo", 45, teacher)
        assert meeting.teacher_name == "Tina Teacher"

        page = teacher_client.get(response["Location"]).content.decode()
        for role in ("teacher", "student"):
            token = participant_token(meeting_id=meeting.id, role=role)
            assert f"/join/{meeting.id}/{role}?t={token}" in page
        assert "Sunday 22 November 2026, 09:30" in page
        assert "Asia/Tokyo" in page
        assert "Scheduled" in page
        assert "data-copy" in page

    @time_machine.travel(NOW, tick=False)
    def test_times_more_than_30_minutes_past_are_rejected_with_a_message(self, teacher_client):
        response = teacher_client.post("/meetings/new", schedule_form(date="2026-11-21", time="11:29", time_zone="UTC"))
        assert response.status_code == 200
        assert "more than 30 minutes in the past" in response.content.decode()
        assert not Meeting.objects.exists()
        ok = teacher_client.post("/meetings/new", schedule_form(date="2026-11-21", time="11:31", time_zone="UTC"))
        assert ok.status_code == 302

    def test_missing_fields_are_reported_inline(self, teacher_client):
        response = teacher_client.post("/meetings/new", schedule_form(student_name="", date="not a date"))
        html = response.content.decode()
        assert response.status_code == 200
        assert "This field is required." in html and "Enter a valid date." in html

    def test_dashboard_lists_only_my_meetings(self, teacher_client, teacher):
        mine = make_meeting(teacher=teacher, student_name="Mine Student")
        other = make_meeting(teacher=make_teacher("olga"), student_name="Other Student")
        page = teacher_client.get("/").content.decode()
        assert "Mine Student" in page and "Other Student" not in page
        assert teacher_client.get(f"/meetings/{other.id}").status_code == 404
        assert teacher_client.get(f"/meetings/{mine.id}").status_code == 200

    def test_dashboard_shows_past_outcomes(self, teacher_client, teacher):
        make_meeting(
            teacher=teacher,
            meet_time=timezone.now() - timedelta(days=2),
            status=MeetingStatus.TERMINATED,
            termination_reason="SUCCESS",
            student_name="Past Student",
        )
        page = teacher_client.get("/").content.decode()
        assert "Past Student" in page and "SUCCESS" in page


@pytest.mark.django_db
class TestCancel:
    def test_teacher_cancels_own_scheduled_meeting(self, teacher_client, teacher):
        meeting = make_meeting(teacher=teacher)
        response = teacher_client.post(f"/meetings/{meeting.id}/cancel", follow=True)
        assert "cancelled" in response.content.decode()
        meeting.refresh_from_db()
        assert meeting.status == MeetingStatus.CANCELLED
        assert meeting.events.get().actor == "teacher:tina"

    def test_cannot_cancel_someone_elses_meeting(self, teacher_client):
        meeting = make_meeting(teacher=make_teacher("olga"))
        assert teacher_client.post(f"/meetings/{meeting.id}/cancel").status_code == 404
        meeting.refresh_from_db()
        assert meeting.status == MeetingStatus.SCHEDULED

    def test_cannot_cancel_once_launching(self, teacher_client, teacher):
        meeting = make_meeting(teacher=teacher, status=MeetingStatus.LAUNCHING)
        response = teacher_client.post(f"/meetings/{meeting.id}/cancel", follow=True)
        assert "can no longer be cancelled" in response.content.decode()
        meeting.refresh_from_db()
        assert meeting.status == MeetingStatus.LAUNCHING

    def test_cancel_needs_post(self, teacher_client, teacher):
        meeting = make_meeting(teacher=teacher)
        assert teacher_client.get(f"/meetings/{meeting.id}/cancel").status_code == 405

    def test_staff_cancel_only_with_the_change_permission(self, client, teacher):
        from django.contrib.auth.models import Permission

        meeting = make_meeting(teacher=teacher)
        viewer = make_teacher("vera", is_staff=True)
        viewer.user_permissions.add(Permission.objects.get(codename="view_meeting"))
        client.force_login(viewer)
        assert 'id="cancel-form"' not in client.get(f"/meetings/{meeting.id}").content.decode()
        assert client.post(f"/meetings/{meeting.id}/cancel").status_code == 403
        meeting.refresh_from_db()
        assert meeting.status == MeetingStatus.SCHEDULED and not meeting.events.exists()

        operator = make_teacher("otto", is_staff=True)
        operator.user_permissions.add(Permission.objects.get(codename="change_meeting"))
        client.force_login(operator)
        assert 'id="cancel-form"' in client.get(f"/meetings/{meeting.id}").content.decode()
        client.post(f"/meetings/{meeting.id}/cancel")
        meeting.refresh_from_db()
        assert meeting.status == MeetingStatus.CANCELLED
        assert meeting.events.get().actor == "teacher:otto"


AWS_ERROR = (
    "An error occurred (UnauthorizedOperation) when calling the RunInstances operation: You are not authorized "
    "to perform this operation. subnet-0a1b2c3d, ami-0123456789abcdef0"
)


@pytest.mark.django_db
def test_teachers_get_words_for_a_failure_and_staff_the_raw_error(teacher_client, teacher, client):
    from meetings.services import meeting_fail

    meeting = make_meeting(teacher=teacher)
    meeting_fail(meeting=meeting, reason="LAUNCH_FAILED", error=AWS_ERROR)
    page = teacher_client.get(f"/meetings/{meeting.id}").content.decode()
    assert "a problem on our side" in page
    for raw in ("UnauthorizedOperation", "subnet-0a1b2c3d", "ami-0123456789abcdef0", "RunInstances"):
        assert raw not in page

    client.force_login(make_teacher("sam", is_staff=True, is_superuser=True))
    page = client.get(f"/meetings/{meeting.id}").content.decode()
    assert "UnauthorizedOperation" in page and f"/admin/meetings/meeting/{meeting.id}/change/" in page


@pytest.mark.django_db
def test_control_characters_in_the_student_name_are_refused(teacher_client):
    response = teacher_client.post("/meetings/new", schedule_form(student_name="Stu\rDTSTART:1999"))
    assert response.status_code == 200
    # The API's words too: one definition of a valid schedule (meetings.schedule).
    assert "Control characters are not allowed." in response.content.decode()
    assert not Meeting.objects.exists()


@pytest.mark.django_db
def test_unknown_pages_get_elephants_not_found_page(client, settings):
    settings.DEBUG = False
    response = client.get("/meetings/zzzzzzzzzzzzzzzz")
    assert response.status_code in (302, 404)
    response = client.get("/no/such/page")
    assert response.status_code == 404
    assert "We can't find that page" in response.content.decode()


# --- texts follow the join window (ELEPHANT_JOIN_EARLY_MINUTES) ------------------------------------------
@pytest.mark.parametrize(
    ("minutes", "words"),
    [(60, "one hour"), (30, "30 minutes"), (120, "2 hours"), (90, "90 minutes"), (1, "one minute")],
)
def test_join_opens_phrase(minutes, words):
    from meetings.progress import join_opens_phrase

    assert join_opens_phrase(minutes) == words


@pytest.mark.django_db
@pytest.mark.parametrize(("minutes", "words"), [(60, "open one hour before"), (30, "open 30 minutes before")])
def test_the_meeting_page_says_when_the_links_open(teacher_client, teacher, settings, minutes, words):
    settings.ELEPHANT_JOIN_EARLY_MINUTES = minutes
    meeting = make_meeting(teacher=teacher)
    assert words in teacher_client.get(f"/meetings/{meeting.id}").content.decode()
    live = teacher_client.get(f"/meetings/{meeting.id}", headers={"Accept": "application/json"}).json()
    assert words in live["hint"]


@pytest.mark.django_db
def test_the_closed_video_room_says_when_it_opens(client, settings):
    settings.ELEPHANT_JOIN_EARLY_MINUTES = 30
    meeting = make_meeting(meet_time=timezone.now() + timedelta(minutes=45))
    token = participant_token(meeting_id=meeting.id, role="student")
    html = client.get(f"/room/{meeting.id}?t={token}").content.decode()
    assert "The video room opens 30 minutes before the session." in html and "room-config" not in html
