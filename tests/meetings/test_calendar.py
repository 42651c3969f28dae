"""The .ics file a teacher downloads for each participant: an event carrying that participant's join link."""

from datetime import UTC, datetime

import pytest

from meetings.ics import meeting_ics
from meetings.links import participant_link, room_link
from tests.factories import make_meeting, make_staff, make_teacher


def unfold(body: str) -> str:
    return body.replace("\r\n ", "")


@pytest.fixture
def teacher(db):
    return make_teacher("tina")


@pytest.mark.django_db
class TestCalendarDownload:
    def test_each_participant_gets_their_own_join_link(self, client, teacher):
        meeting = make_meeting(
            teacher=teacher, meet_time=datetime(2026, 11, 21, 15, 0, tzinfo=UTC), duration_minutes=45
        )
        client.force_login(teacher)
        for role, other in (("teacher", "Stu Student"), ("student", "Tina Teacher")):
            response = client.get(f"/meetings/{meeting.id}/calendar/{role}.ics")
            assert response.status_code == 200
            assert response["Content-Type"] == "text/calendar; charset=utf-8"
            assert response["Content-Disposition"] == f'attachment; filename="elephant-{meeting.id}-{role}.ics"'
            body = unfold(response.content.decode())
            assert body.startswith("BEGIN:VCALENDAR\r\nVERSION:2.0\r\n") and body.endswith("END:VCALENDAR\r\n")
            assert "DTSTART:20261121T150000Z\r\n" in body and "DTEND:20261121T154500Z\r\n" in body
            assert f"UID:{meeting.id}-{role}@elephant\r\n" in body
            assert f"SUMMARY:Tutoring session with {other}\r\n" in body
            assert f"URL:{participant_link(meeting_id=meeting.id, role=role)}\r\n" in body
            assert participant_link(meeting_id=meeting.id, role=role) in body.split("DESCRIPTION:")[1]
            other_role = "student" if role == "teacher" else "teacher"
            assert participant_link(meeting_id=meeting.id, role=other_role) not in body

    def test_only_the_owning_teacher(self, client, teacher):
        meeting = make_meeting(teacher=teacher)
        url = f"/meetings/{meeting.id}/calendar/student.ics"
        assert client.get(url).status_code == 302  # to the login page
        client.force_login(make_teacher("olga"))
        assert client.get(url).status_code == 404
        client.force_login(make_staff())
        assert client.get(url).status_code == 200  # staff see every meeting page, as in the console

    def test_unknown_role_or_meeting_is_404(self, client, teacher):
        meeting = make_meeting(teacher=teacher)
        client.force_login(teacher)
        assert client.get(f"/meetings/{meeting.id}/calendar/admin.ics").status_code == 404
        assert client.get("/meetings/zzzzzzzzzzzzzzzz/calendar/student.ics").status_code == 404

    def test_the_meeting_page_links_both_files(self, client, teacher):
        meeting = make_meeting(teacher=teacher)
        client.force_login(teacher)
        page = client.get(f"/meetings/{meeting.id}").content.decode()
        assert f"/meetings/{meeting.id}/calendar/teacher.ics" in page
        assert f"/meetings/{meeting.id}/calendar/student.ics" in page


@pytest.mark.django_db
def test_lines_are_folded_escaped_and_cancelled_sessions_say_so():
    meeting = make_meeting(student_name="Zoë; O'Brien, Jr", status="CANCELLED")
    join = participant_link(meeting_id=meeting.id, role="teacher") + "&" + "x" * 120
    body = meeting_ics(
        meeting=meeting, role="teacher", join_link=join, room_link=room_link(meeting_id=meeting.id, role="teacher")
    )
    for line in body.split("\r\n"):
        assert len(line.encode()) <= 75
    assert "SUMMARY:Tutoring session with Zoë\\; O'Brien\\, Jr\r\n" in unfold(body)
    assert f"URL:{join}\r\n" in unfold(body)
    assert "STATUS:CANCELLED" in body


@pytest.mark.django_db
def test_line_breaks_in_a_name_never_start_a_property():
    meeting = make_meeting(student_name="Stu\rATTENDEE:mailto:eve@example.com\nX\r\nY")
    body = meeting_ics(
        meeting=meeting, role="teacher", join_link="https://e.example/j", room_link="https://e.example/r"
    )
    assert "\r" not in body.replace("\r\n", "")
    assert "\nATTENDEE" not in body
    assert "SUMMARY:Tutoring session with Stu\\nATTENDEE:mailto:eve@example.com\\nX\\nY\r\n" in unfold(body)


@pytest.mark.django_db
@pytest.mark.parametrize(("minutes", "words"), [(60, "one hour"), (30, "30 minutes")])
def test_the_invitation_says_when_the_link_opens(settings, minutes, words):
    settings.ELEPHANT_JOIN_EARLY_MINUTES = minutes
    meeting = make_meeting()
    body = meeting_ics(
        meeting=meeting, role="student", join_link="https://e.example/j", room_link="https://e.example/r"
    )
    assert f"The link opens {words} before the session" in unfold(body)
