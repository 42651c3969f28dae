"""GET /room/{meeting_id}: who may enter the video room, and what the page gives the browser."""

import json
import re
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from meetings.models import MeetingStatus
from meetings.tokens import participant_token
from tests.factories import make_meeting, make_teacher


def room_config(response) -> dict:
    match = re.search(r'<script id="room-config" type="application/json">(.*?)</script>', response.content.decode())
    assert match, "the page carries no room configuration"
    return json.loads(match.group(1))


def room_url(meeting, role=None, token=None) -> str:
    if role is not None:
        token = participant_token(meeting_id=meeting.id, role=role)
    return f"/room/{meeting.id}" + (f"?t={token}" if token is not None else "")


@pytest.fixture
def teacher(db):
    return make_teacher("tina")


@pytest.fixture
def meeting(teacher):
    return make_meeting(teacher=teacher, meet_time=timezone.now() + timedelta(minutes=10))


@pytest.mark.django_db
class TestRoomAccess:
    @pytest.mark.parametrize("role, other", [("teacher", "Stu Student"), ("student", "Tina Teacher")])
    def test_a_participant_enters_with_their_links_token(self, client, meeting, role, other):
        response = client.get(room_url(meeting, role))
        assert response.status_code == 200
        config = room_config(response)
        assert config["roomId"] == meeting.id
        assert config["role"] == role
        assert config["token"] == participant_token(meeting_id=meeting.id, role=role)
        assert config["otherName"] == other
        assert "elephant/room.js" in response.content.decode()

    @pytest.mark.parametrize("token", ["garbage", "", "x" * 500])
    def test_a_bad_token_is_refused_with_a_message(self, client, meeting, token):
        response = client.get(room_url(meeting, token=token))
        if token == "":
            assert response.status_code == 302  # no token at all: a teacher may log in
            return
        assert response.status_code == 403
        assert "not valid" in response.content.decode()
        assert "room-config" not in response.content.decode()

    def test_a_token_of_another_meeting_is_refused(self, client, meeting):
        other = make_meeting()
        response = client.get(room_url(meeting, token=participant_token(meeting_id=other.id, role="student")))
        assert response.status_code == 403

    def test_without_a_token_anonymous_visitors_are_sent_to_log_in(self, client, meeting):
        response = client.get(room_url(meeting))
        assert response.status_code == 302
        assert response["Location"] == f"/accounts/login/?next=/room/{meeting.id}"

    def test_the_owning_teacher_enters_logged_in_without_a_token(self, client, meeting, teacher):
        client.force_login(teacher)
        response = client.get(room_url(meeting))
        assert response.status_code == 200
        config = room_config(response)
        assert (config["role"], config["token"]) == ("teacher", "")

    def test_another_teacher_is_refused(self, client, meeting):
        client.force_login(make_teacher("olga"))
        response = client.get(room_url(meeting))
        assert response.status_code == 403
        assert "room-config" not in response.content.decode()

    def test_unknown_or_malformed_meeting_is_404(self, client):
        for url in ("/room/zzzzzzzzzzzzzzzz?t=x", "/room/NOT-A-MEETING?t=x", "/room/zzzzzzzzzzzzzzzz"):
            response = client.get(url)
            assert response.status_code == 404
            html = response.content.decode()  # the room page saying what to do, not a bare "Not Found"
            assert "newest link from your teacher" in html and "room-config" not in html


@pytest.mark.django_db
class TestRoomClosed:
    @pytest.mark.parametrize(
        "status, words",
        [
            (MeetingStatus.CANCELLED, "cancelled"),
            (MeetingStatus.FAILED, "could not start"),
            (MeetingStatus.TERMINATED, "has ended"),
        ],
    )
    def test_finished_meetings_show_why_instead_of_a_room(self, client, teacher, status, words):
        meeting = make_meeting(teacher=teacher, meet_time=timezone.now(), status=status)
        response = client.get(room_url(meeting, "student"))
        html = response.content.decode()
        assert response.status_code == 200
        assert words in html and "room-config" not in html and "room.js" not in html

    def test_a_token_opens_the_room_only_around_the_meeting(self, client, teacher):
        start = timezone.now() + timedelta(hours=3)
        meeting = make_meeting(teacher=teacher, meet_time=start, duration_minutes=60)
        with time_machine.travel(start - timedelta(minutes=61), tick=False):
            html = client.get(room_url(meeting, "student")).content.decode()
            assert "opens one hour before" in html and "room-config" not in html
        with time_machine.travel(start - timedelta(minutes=59), tick=False):
            assert "room-config" in client.get(room_url(meeting, "student")).content.decode()
        with time_machine.travel(start + timedelta(minutes=200), tick=False):
            assert "has ended" in client.get(room_url(meeting, "student")).content.decode()
            client.force_login(teacher)  # the owner, logged in, is not bound to the window
            assert "room-config" in client.get(room_url(meeting)).content.decode()


@pytest.mark.django_db
class TestRoomIceServers:
    def test_the_configured_ice_servers_are_in_the_page(self, client, meeting, settings):
        settings.ELEPHANT_ICE_SERVERS = [{"urls": ["stun:stun.lan.example:3478"]}]
        settings.ELEPHANT_TURN_SECRET = ""
        config = room_config(client.get(room_url(meeting, "student")))
        assert config["iceServers"] == [{"urls": ["stun:stun.lan.example:3478"]}]
        assert config["iceExpiresAt"] is None

    def test_turn_credentials_are_issued_per_participant(self, client, meeting, settings):
        settings.ELEPHANT_ICE_SERVERS = []
        settings.ELEPHANT_TURN_SECRET = "north-wind"
        settings.ELEPHANT_TURN_URLS = ["turn:turn.lan.example:3478"]
        settings.ELEPHANT_TURN_TTL_SECONDS = 600
        teacher = room_config(client.get(room_url(meeting, "teacher")))
        student = room_config(client.get(room_url(meeting, "student")))
        assert teacher["iceServers"][0]["username"].endswith(f":{meeting.id}-teacher")
        assert student["iceServers"][0]["username"].endswith(f":{meeting.id}-student")
        expiry = int(student["iceServers"][0]["username"].split(":")[0])
        assert expiry == student["iceExpiresAt"]
        assert 0 < expiry - timezone.now().timestamp() <= 600

    def test_fresh_credentials_as_json_for_a_long_call(self, client, meeting, settings):
        settings.ELEPHANT_TURN_SECRET = "north-wind"
        settings.ELEPHANT_TURN_URLS = ["turn:turn.lan.example:3478"]
        response = client.get(room_url(meeting, "student"), HTTP_ACCEPT="application/json")
        assert response.status_code == 200
        body = response.json()
        assert body["iceServers"][-1]["username"].endswith(f":{meeting.id}-student")
        assert body["expiresAt"] > timezone.now().timestamp()
        assert client.get(room_url(meeting, token="bad"), HTTP_ACCEPT="application/json").status_code == 403

    @pytest.mark.parametrize("status", [MeetingStatus.CANCELLED, MeetingStatus.FAILED, MeetingStatus.TERMINATED])
    def test_no_credentials_for_a_closed_room(self, client, teacher, settings, status):
        settings.ELEPHANT_TURN_SECRET = "north-wind"
        settings.ELEPHANT_TURN_URLS = ["turn:turn.lan.example:3478"]
        meeting = make_meeting(teacher=teacher, meet_time=timezone.now(), status=status)
        client.force_login(teacher)
        for url in (room_url(meeting, "student"), room_url(meeting)):
            response = client.get(url, HTTP_ACCEPT="application/json")
            assert response.status_code == 403 and "iceServers" not in response.json()

    def test_no_credentials_outside_the_links_window(self, client, teacher, settings):
        settings.ELEPHANT_TURN_SECRET = "north-wind"
        settings.ELEPHANT_TURN_URLS = ["turn:turn.lan.example:3478"]
        for start in (timezone.now() + timedelta(days=2), timezone.now() - timedelta(days=2)):
            meeting = make_meeting(teacher=teacher, meet_time=start)
            response = client.get(room_url(meeting, "student"), HTTP_ACCEPT="application/json")
            assert response.status_code == 403 and "iceServers" not in response.json()
