"""The waiting room (the join link opened in a browser) and the meeting page's live status, as HTML and JSON."""

import re
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from meetings.models import MeetingStatus
from meetings.tokens import participant_token
from tests.factories import make_host, make_meeting, make_ready_meeting, make_teacher

HTML = {"HTTP_ACCEPT": "text/html"}


def join_page(client, meeting, role="student"):
    token = participant_token(meeting_id=meeting.id, role=role)
    return client.get(f"/join/{meeting.id}/{role}?t={token}", **HTML)


def steps(html: str) -> dict[str, str]:
    return dict(re.findall(r'data-step="(\w+)" data-state="(\w+)"', html))


@pytest.mark.django_db
class TestWaitingRoom:
    @pytest.mark.parametrize(
        "status, expected",
        [
            (MeetingStatus.SCHEDULED, ["current", "todo", "todo", "todo", "todo"]),
            (MeetingStatus.LAUNCHING, ["done", "current", "todo", "todo", "todo"]),
            (MeetingStatus.LAUNCHED, ["done", "done", "current", "todo", "todo"]),
            (MeetingStatus.DNS_WRITTEN, ["done", "done", "done", "current", "todo"]),
        ],
    )
    def test_steps_show_where_the_desktop_is(self, client, status, expected):
        meeting = make_meeting(meet_time=timezone.now(), status=status)
        html = join_page(client, meeting).content.decode()
        assert list(steps(html)) == ["scheduled", "launching", "booting", "health", "ready"]
        assert list(steps(html).values()) == expected
        assert f'data-meeting-id="{meeting.id}"' in html
        assert "elephant/join.js" in html

    def test_healthy_without_this_roles_link_is_still_checking_health(self, client):
        meeting = make_meeting(meet_time=timezone.now(), status=MeetingStatus.HEALTHY)
        make_host(meeting, "student", dcv_link="")
        assert steps(join_page(client, meeting).content.decode())["health"] == "current"

    def test_it_names_the_participants_and_gives_the_time_for_the_browser_to_localise(self, client):
        meeting = make_meeting(meet_time=timezone.now(), status=MeetingStatus.LAUNCHING, time_zone="Asia/Tokyo")
        html = join_page(client, meeting).content.decode()
        assert "Joining as the student" in html
        assert "Stu Student" in html and "Tina Teacher" in html
        assert f'datetime="{meeting.meet_time.isoformat()}"' in html
        assert 'class="local-time"' in html and "Asia/Tokyo" in html
        assert 'id="devices"' in html  # the camera and microphone check
        assert f"/room/{meeting.id}?t=" in html  # the video room

    @pytest.mark.parametrize("setting, expected", [(True, "true"), (False, "false")])
    def test_ready_page_opens_the_desktop_unless_automatic_redirect_is_off(self, client, settings, setting, expected):
        settings.ELEPHANT_AUTO_REDIRECT = setting
        html = join_page(client, make_ready_meeting(meet_time=timezone.now())).content.decode()
        assert f'data-auto-redirect="{expected}"' in html
        assert 'id="open-desktop"' in html and "/desktop/" in html  # the lasting desktop link
        assert ('http-equiv="refresh"' in html) is setting  # without JavaScript

    @pytest.mark.parametrize(
        "status, words",
        [
            (MeetingStatus.CANCELLED, "ask your teacher for a new link"),
            (MeetingStatus.FAILED, "schedule the session again"),
            (MeetingStatus.TERMINATED, "Ask your teacher if you need another session"),
        ],
    )
    def test_finished_meetings_say_what_to_do_and_stop(self, client, status, words):
        meeting = make_meeting(meet_time=timezone.now(), status=status)
        response = join_page(client, meeting)
        html = response.content.decode()
        assert response.status_code == 202
        assert words in html
        assert 'data-final="true"' in html
        assert "data-step=" not in html and 'id="devices"' not in html

    def test_too_early_says_when_to_come_back(self, client):
        start = timezone.now() + timedelta(hours=3)
        meeting = make_meeting(meet_time=start, time_zone="Europe/Berlin")
        response = join_page(client, meeting)
        html = response.content.decode()
        assert response.status_code == 403
        assert "opens one hour before" in html and "Come back at" in html
        assert 'data-reason="too_early"' in html
        assert f'data-opens-at="{meeting.join_opens_at.isoformat()}"' in html
        assert f"/room/{meeting.id}" not in html  # the video room is closed until then too

    def test_expired_link_says_what_to_do(self, client):
        start = timezone.now()
        meeting = make_meeting(meet_time=start, duration_minutes=30)
        with time_machine.travel(start + timedelta(hours=3), tick=False):
            html = join_page(client, meeting).content.decode()
        assert "link has expired" in html and "schedule a new one" in html
        assert f"/room/{meeting.id}" not in html

    def test_broken_links_get_a_page_not_a_stack_trace(self, client):
        meeting = make_meeting(meet_time=timezone.now())
        bad = client.get(f"/join/{meeting.id}/student?t=nope", **HTML)
        assert bad.status_code == 403 and "This link doesn't work" in bad.content.decode()
        unknown = client.get("/join/zzzzzzzzzzzzzzzz/student?t=nope", **HTML)
        assert unknown.status_code == 404 and "does not exist" in unknown.content.decode()
        malformed = client.get("/join/nope/student", **HTML)
        assert malformed.status_code == 400 and "This link doesn't work" in malformed.content.decode()


@pytest.mark.django_db
def test_the_meeting_page_answers_its_live_status_as_json(client):
    teacher = make_teacher("tina")
    meeting = make_meeting(
        teacher=teacher, status=MeetingStatus.TERMINATED, termination_reason="NO_SHOW_TIMEOUT", meet_time=timezone.now()
    )
    client.force_login(teacher)
    body = client.get(f"/meetings/{meeting.id}", HTTP_ACCEPT="application/json").json()
    assert body == {
        "status": "TERMINATED",
        "statusDisplay": "Ended",
        "hint": "The session has ended and its desktops are shut down.",
        "reason": "NO_SHOW_TIMEOUT",
        "reasonDisplay": "Nobody joined (15-minute safety net)",
    }
    client.force_login(make_teacher("olga"))
    assert client.get(f"/meetings/{meeting.id}", HTTP_ACCEPT="application/json").status_code == 404
