"""The lasting desktop link (/desktop/<id>/<role>?t=) and the room link the agents open (jitsi_url, ?k=)."""

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import time_machine
from django.utils import timezone

from fleet.dcv import DcvTokenRejected, dcv_token_redeem
from fleet.views import desktop_link
from meetings.links import desktop_room_link
from meetings.tokens import participant_token, room_credential
from mirror.dynamo import meeting_item
from tests.factories import make_meeting, make_ready_meeting


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


@pytest.mark.django_db
class TestDesktopLink:
    def test_every_visit_mints_a_fresh_single_use_token(self, client):
        meeting = make_ready_meeting(meet_time=timezone.now())
        link = path_of(desktop_link(meeting_id=meeting.id, role="student"))
        host = meeting.hosts.get(role="student")
        tokens = []
        for _ in range(3):  # the first visit and two reloads
            response = client.get(link)
            assert response.status_code == 302 and response["Cache-Control"].startswith("max-age=0")
            location = urlsplit(response["Location"])
            assert f"{location.scheme}://{location.netloc}" == host.dcv_link and location.fragment == "console"
            tokens.append(parse_qs(location.query)["authToken"][0])
        assert len(set(tokens)) == 3
        for token in tokens:  # each one still unspent, each for this host only
            grant = dcv_token_redeem(token=token, instance_id=host.instance_id)
            assert (grant.meeting_id, grant.role) == (meeting.id, "student")
        with pytest.raises(DcvTokenRejected):
            dcv_token_redeem(token=tokens[0])

    def test_a_wrong_token_or_role_opens_nothing(self, client):
        meeting = make_ready_meeting(meet_time=timezone.now())
        teacher_token = participant_token(meeting_id=meeting.id, role="teacher")
        assert client.get(f"/desktop/{meeting.id}/student?t={teacher_token}").status_code == 403
        assert client.get(f"/desktop/{meeting.id}/student").status_code == 403
        assert client.get(f"/desktop/{meeting.id}/admin?t={teacher_token}").status_code == 400
        other = make_ready_meeting(meet_time=timezone.now())
        assert client.get(f"/desktop/{other.id}/teacher?t={teacher_token}").status_code == 403

    def test_before_the_desktop_is_ready_or_outside_the_window_it_sends_to_the_join_page(self, client):
        meeting = make_meeting(meet_time=timezone.now() + timedelta(minutes=5))
        response = client.get(path_of(desktop_link(meeting_id=meeting.id, role="teacher")))
        assert response.status_code == 302 and f"/join/{meeting.id}/teacher?t=" in response["Location"]
        ready = make_ready_meeting(meet_time=timezone.now())
        with time_machine.travel(ready.hard_stop_at + timedelta(minutes=1)):
            response = client.get(path_of(desktop_link(meeting_id=ready.id, role="teacher")))
        assert response.status_code == 302 and "/join/" in response["Location"]


@pytest.mark.django_db
class TestRoomLink:
    def test_jitsi_url_is_the_room_link_with_its_own_credential(self):
        meeting = make_meeting(meet_time=timezone.now())
        url = meeting_item(meeting=meeting, hosts={})["jitsi_url"]
        assert url == desktop_room_link(meeting) and f"/room/{meeting.id}?k=" in url
        assert desktop_room_link(meeting) == url  # stable: the item does not change on every flush

    def test_it_opens_the_room_without_a_login(self, client):
        meeting = make_meeting(meet_time=timezone.now())
        response = client.get(path_of(desktop_room_link(meeting)))
        assert response.status_code == 200
        html = response.content.decode()
        assert 'id="room"' in html and meeting.teacher_name in html
        config = response.context["room_config"]
        assert config["roomId"] == meeting.id and config["token"]  # a seated credential for the socket

    def test_never_valid_for_another_meeting(self, client):
        meeting, other = make_meeting(meet_time=timezone.now()), make_meeting(meet_time=timezone.now())
        credential = parse_qs(urlsplit(desktop_room_link(meeting)).query)["k"][0]
        response = client.get(f"/room/{other.id}?k={credential}")
        assert response.status_code == 403
        assert client.get(f"/room/{meeting.id}?k={credential}x").status_code == 403

    def test_it_expires_with_the_meeting(self, client):
        meeting = make_meeting(meet_time=timezone.now())
        link = path_of(desktop_room_link(meeting))
        with time_machine.travel(meeting.hard_stop_at + timedelta(seconds=5)):
            assert client.get(link).status_code == 403
        expired = room_credential(meeting_id=meeting.id, expires_at=timezone.now() - timedelta(seconds=1))
        assert client.get(f"/room/{meeting.id}?k={expired}").status_code == 403

    def test_it_admits_the_video_room_only(self, client):
        meeting = make_ready_meeting(meet_time=timezone.now())
        credential = parse_qs(urlsplit(desktop_room_link(meeting)).query)["k"][0]
        assert client.get(f"/join/{meeting.id}/teacher?t={credential}").status_code == 403
        assert client.get(f"/desktop/{meeting.id}/teacher?t={credential}").status_code == 403


@pytest.mark.django_db
def test_the_signalling_access_check_takes_a_seated_room_credential():
    from meetings.tokens import room_credential_seat
    from signalling.selectors import meeting_access

    meeting = make_meeting(meet_time=timezone.now())
    credential = parse_qs(urlsplit(desktop_room_link(meeting)).query)["k"][0]
    assert meeting_access(meeting_id=meeting.id, token=credential, user=None) is None  # no seat: not a participant
    first = meeting_access(
        meeting_id=meeting.id, token=room_credential_seat(meeting_id=meeting.id, credential=credential), user=None
    )
    second = meeting_access(
        meeting_id=meeting.id, token=room_credential_seat(meeting_id=meeting.id, credential=credential), user=None
    )
    assert first.identity.startswith("desktop:") and first.identity != second.identity  # two desktops, two seats
    assert first.by_token and first.in_join_window
