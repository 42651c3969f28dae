"""GET /join/{meeting_id}/{role}: every answer of ARCHITECTURE.md section 6."""

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit, urlunsplit

import pytest
import time_machine
from django.utils import timezone

from fleet.dcv import dcv_token_redeem
from meetings.models import MeetingEvent, MeetingStatus
from meetings.tokens import participant_token
from tests.factories import make_host, make_meeting, make_ready_meeting

JSON = {"HTTP_ACCEPT": "application/json"}


def join_url(meeting_id: str, role: str, token: str | None = "auto") -> str:
    if token == "auto":
        token = participant_token(meeting_id=meeting_id, role=role)
    return f"/join/{meeting_id}/{role}" + (f"?t={token}" if token is not None else "")


@pytest.mark.django_db
class TestJoinRejects:
    @pytest.mark.parametrize(
        "meeting_id, role",
        [
            ("abcdefghijklmnop", "admin"),
            ("abcdefghijklmnop", "Teacher"),
            ("ABCDEFGHIJKLMNOP", "teacher"),
            ("short", "student"),
            ("abcdefghijklmnopq", "student"),
            ("abcdefgh-jklmnop", "student"),
        ],
    )
    def test_malformed_id_or_role_is_400(self, client, meeting_id, role):
        response = client.get(f"/join/{meeting_id}/{role}?t=x", **JSON)
        assert response.status_code == 400
        assert response.json() == {"message": "Invalid meeting ID or role."}

    def test_unknown_meeting_is_404(self, client):
        response = client.get(join_url("zzzzzzzzzzzzzzzz", "teacher"), **JSON)
        assert response.status_code == 404

    @pytest.mark.parametrize("token", [None, "", "garbage", "x" * 500])
    def test_missing_or_garbage_token_is_403(self, client, token):
        meeting = make_ready_meeting(meet_time=timezone.now())
        response = client.get(join_url(meeting.id, "teacher", token), **JSON)
        assert response.status_code == 403
        assert "dcv_url" not in response.json()

    def test_student_token_never_opens_the_teacher_desktop(self, client):
        meeting = make_ready_meeting(meet_time=timezone.now())
        student_token = participant_token(meeting_id=meeting.id, role="student")
        response = client.get(join_url(meeting.id, "teacher", student_token), **JSON)
        assert response.status_code == 403
        meeting.refresh_from_db()
        assert meeting.status == MeetingStatus.HEALTHY

    def test_token_of_another_meeting_is_403(self, client):
        meeting = make_ready_meeting(meet_time=timezone.now())
        other = make_meeting()
        response = client.get(
            join_url(meeting.id, "student", participant_token(meeting_id=other.id, role="student")), **JSON
        )
        assert response.status_code == 403

    def test_tampered_token_is_403(self, client):
        meeting = make_ready_meeting(meet_time=timezone.now())
        token = participant_token(meeting_id=meeting.id, role="student")
        tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
        assert client.get(join_url(meeting.id, "student", tampered), **JSON).status_code == 403

    def test_not_yet_valid_link_is_403(self, client):
        start = timezone.now() + timedelta(hours=3)
        meeting = make_ready_meeting(meet_time=start)
        with time_machine.travel(start - timedelta(minutes=61), tick=False):
            response = client.get(join_url(meeting.id, "student"), **JSON)
        assert response.status_code == 403
        assert response.json()["code"] == "too_early"
        with time_machine.travel(start - timedelta(minutes=59), tick=False):
            assert client.get(join_url(meeting.id, "student"), **JSON).status_code == 200

    def test_expired_link_is_403(self, client, settings):
        start = timezone.now()
        meeting = make_ready_meeting(meet_time=start, duration_minutes=60)
        end_plus_grace = start + timedelta(minutes=60 + settings.ELEPHANT_OVERRUN_GRACE)
        with time_machine.travel(end_plus_grace + timedelta(seconds=1), tick=False):
            response = client.get(join_url(meeting.id, "teacher"), **JSON)
        assert response.status_code == 403
        assert response.json()["code"] == "expired"


@pytest.mark.django_db
class TestJoinWaits:
    @pytest.mark.parametrize(
        "status",
        [MeetingStatus.SCHEDULED, MeetingStatus.LAUNCHING, MeetingStatus.LAUNCHED, MeetingStatus.DNS_WRITTEN],
    )
    def test_not_ready_is_202_with_status(self, client, status):
        meeting = make_meeting(meet_time=timezone.now(), status=status)
        response = client.get(join_url(meeting.id, "student"), **JSON)
        assert response.status_code == 202
        body = response.json()
        assert body["status"] == status
        assert body["message"]
        assert body["final"] is False

    def test_healthy_without_the_roles_link_is_202(self, client):
        meeting = make_meeting(meet_time=timezone.now(), status=MeetingStatus.HEALTHY)
        make_host(meeting, "teacher")
        make_host(meeting, "student", dcv_link="")
        assert client.get(join_url(meeting.id, "student"), **JSON).status_code == 202
        assert client.get(join_url(meeting.id, "teacher"), **JSON).status_code == 200

    @pytest.mark.parametrize("status", [MeetingStatus.CANCELLED, MeetingStatus.FAILED, MeetingStatus.TERMINATED])
    def test_finished_meetings_say_so_and_stop_polling(self, client, status):
        meeting = make_meeting(meet_time=timezone.now(), status=status)
        make_host(meeting, "student")
        response = client.get(join_url(meeting.id, "student"), **JSON)
        assert response.status_code == 202
        assert response.json()["status"] == status
        assert response.json()["final"] is True


def dcv_redirect(client, desktop_link: str) -> str:
    """Where the desktop link sends the browser (a DCV URL with a fresh single-use token)."""
    response = client.get(urlsplit(desktop_link).path + "?" + urlsplit(desktop_link).query)
    assert response.status_code == 302
    return response["Location"]


@pytest.mark.django_db
class TestJoinReady:
    def test_ready_gives_the_roles_dcv_link_with_a_fresh_single_use_token(self, client):
        meeting = make_ready_meeting(meet_time=timezone.now())
        teacher_host = meeting.hosts.get(role="teacher")
        student_host = meeting.hosts.get(role="student")

        response = client.get(join_url(meeting.id, "student"), **JSON)

        assert response.status_code == 200
        # The link handed out is the lasting desktop link; each visit redirects with a fresh token.
        desktop = response.json()["dcv_url"]
        assert urlsplit(desktop).path == f"/desktop/{meeting.id}/student"
        assert "authToken" not in desktop
        parts = urlsplit(dcv_redirect(client, desktop))
        assert f"{parts.scheme}://{parts.netloc}" == student_host.dcv_link
        assert teacher_host.instance_id not in response.json()["dcv_url"]
        assert parts.fragment == "console"
        token = parse_qs(parts.query)["authToken"][0]
        grant = dcv_token_redeem(token=token)
        assert (grant.meeting_id, grant.role, grant.instance_id) == (meeting.id, "student", student_host.instance_id)

        again = dcv_redirect(client, desktop)  # a reload of the same link: a fresh, unspent token
        assert again != urlunsplit(parts)
        assert dcv_token_redeem(token=parse_qs(urlsplit(again).query)["authToken"][0]).role == "student"

    @pytest.mark.parametrize("accept", ["application/json", "text/html", "*/*"])
    def test_handing_out_the_link_starts_nothing(self, client, accept):
        """A link-preview bot, a HEAD, the waiting room's own poll: nobody is on a desktop yet (issue 12).
        The session starts on a successful DCV authentication (tests/fleet/test_dcv_auth.py)."""
        meeting = make_ready_meeting(meet_time=timezone.now())
        for role in ("teacher", "student", "teacher"):
            assert client.get(join_url(meeting.id, role), HTTP_ACCEPT=accept).status_code == 200
        client.head(join_url(meeting.id, "student"), HTTP_ACCEPT=accept)
        meeting.refresh_from_db()
        assert (meeting.status, meeting.started_at, meeting.version) == (MeetingStatus.HEALTHY, None, 1)
        assert not MeetingEvent.objects.filter(meeting=meeting).exists()

    def test_the_current_host_is_the_newest_generation(self, client):
        meeting = make_ready_meeting(meet_time=timezone.now())
        replacement = make_host(
            meeting, "student", generation=2, instance_id="i-0replacement0000", dcv_link="https://new:8443"
        )
        url = client.get(join_url(meeting.id, "student"), **JSON).json()["dcv_url"]
        assert dcv_redirect(client, url).startswith("https://new:8443?authToken=")
        assert replacement.instance_id

    def test_responses_carry_the_configured_cors_origin(self, client, settings):
        settings.ELEPHANT_CORS_ORIGIN = "https://school.example"
        meeting = make_ready_meeting(meet_time=timezone.now())
        for url in (
            join_url(meeting.id, "student"),
            join_url(meeting.id, "admin"),
            join_url(meeting.id, "student", "bad"),
        ):
            assert client.get(url, **JSON)["Access-Control-Allow-Origin"] == "https://school.example"

    def test_browsers_get_a_page_that_redirects_when_ready(self, client):
        meeting = make_ready_meeting(meet_time=timezone.now())
        response = client.get(join_url(meeting.id, "student"), HTTP_ACCEPT="text/html")
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/html")
        html = response.content.decode()
        assert "Joining as the student" in html
        assert f"/desktop/{meeting.id}/student?t=" in html

    def test_browsers_get_a_waiting_page_when_not_ready(self, client):
        meeting = make_meeting(meet_time=timezone.now(), status=MeetingStatus.LAUNCHING)
        response = client.get(join_url(meeting.id, "teacher"), HTTP_ACCEPT="text/html")
        assert response.status_code == 202
        assert "being launched" in response.content.decode()


@pytest.mark.django_db
class TestJoinQueryBudget:
    @pytest.mark.parametrize("accept", ["application/json", "text/html"])
    def test_a_ready_join_takes_one_query(self, client, accept, django_assert_num_queries):
        meeting = make_ready_meeting(meet_time=timezone.now())
        for role in ("teacher", "student"):
            with django_assert_num_queries(1):
                assert client.get(join_url(meeting.id, role), HTTP_ACCEPT=accept).status_code == 200

    def test_waiting_join_takes_one_query(self, client, django_assert_num_queries):
        meeting = make_meeting(meet_time=timezone.now(), status=MeetingStatus.LAUNCHED)
        with django_assert_num_queries(1):
            assert client.get(join_url(meeting.id, "teacher"), **JSON).status_code == 202

    def test_query_count_does_not_grow_with_meetings(self, client, django_assert_max_num_queries):
        for _ in range(50):
            make_ready_meeting(meet_time=timezone.now())
        meeting = make_ready_meeting(meet_time=timezone.now())
        with django_assert_max_num_queries(1):
            assert client.get(join_url(meeting.id, "student"), **JSON).status_code == 200
