"""POST /dcv/auth: DCV's external authenticator, and the stand-in that calls it like DCV does."""

import re
import threading
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
import requests
import time_machine
from django.utils import timezone

from fleet import services
from fleet.dcv import dcv_token_issue
from fleet.models import Host, HostState
from meetings.models import MeetingStatus
from tests.factories import make_meeting, make_ready_meeting

pytestmark = pytest.mark.django_db

YES = re.compile(r'^<auth result="yes"><username>([^<]+)</username></auth>$')
NO = re.compile(r'^<auth result="no"><message>([^<]*)</message></auth>$')


@pytest.fixture
def ready():
    meeting = make_ready_meeting()
    host = Host.objects.get(meeting=meeting, role="teacher")
    return meeting, host


def post(client, token, instance_id, *, query=False):
    url = f"/dcv/auth?instance={instance_id}" if query else f"/dcv/auth/{instance_id}"
    return client.post(url, {"sessionId": "console", "authenticationToken": token, "clientAddress": "203.0.113.9"})


def verdict(response):
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/xml")
    body = response.content.decode()
    if match := YES.match(body):
        return "yes", match.group(1)
    match = NO.match(body)
    assert match, body
    return "no", match.group(1)


def test_a_valid_token_is_accepted_once(client, ready):
    meeting, host = ready
    token = dcv_token_issue(meeting_id=meeting.pk, role="teacher", instance_id=host.instance_id)
    assert verdict(post(client, token, host.instance_id)) == ("yes", "teacher")
    result, message = verdict(post(client, token, host.instance_id))
    assert result == "no" and "already used" in message


def test_the_instance_may_be_named_in_the_query(client, ready, settings):
    settings.ELEPHANT_DCV_USERNAME = "dcvuser"
    meeting, host = ready
    token = dcv_token_issue(meeting_id=meeting.pk, role="teacher", instance_id=host.instance_id)
    assert verdict(post(client, token, host.instance_id, query=True)) == ("yes", "dcvuser")


def test_an_expired_token_is_refused(client, ready, settings):
    meeting, host = ready
    token = dcv_token_issue(meeting_id=meeting.pk, role="teacher", instance_id=host.instance_id)
    with time_machine.travel(timezone.now() + timedelta(seconds=settings.ELEPHANT_DCV_TOKEN_TTL_SECONDS + 5)):
        result, message = verdict(post(client, token, host.instance_id))
    assert result == "no" and "expired" in message


def test_a_token_for_another_host_is_refused(client, ready):
    meeting, host = ready
    student = Host.objects.get(meeting=meeting, role="student")
    token = dcv_token_issue(meeting_id=meeting.pk, role="student", instance_id=student.instance_id)
    result, message = verdict(post(client, token, host.instance_id))
    assert result == "no" and "another host" in message
    # ... and it was not spent by the refusal: the right host still accepts it.
    assert verdict(post(client, token, student.instance_id)) == ("yes", "student")


@pytest.mark.parametrize("token", ["", "garbage", "a" * 5000, "eyJtIjoiYSJ9:forged:signature"])
def test_garbage_is_refused(client, ready, token):
    _, host = ready
    assert verdict(post(client, token, host.instance_id))[0] == "no"


def test_no_instance_in_the_url_is_refused(client, ready):
    meeting, host = ready
    token = dcv_token_issue(meeting_id=meeting.pk, role="teacher", instance_id=host.instance_id)
    response = client.post("/dcv/auth", {"authenticationToken": token})
    assert verdict(response)[0] == "no"


def test_a_token_for_a_host_that_no_longer_serves_is_refused(client, ready):
    meeting, host = ready
    token = dcv_token_issue(meeting_id=meeting.pk, role="teacher", instance_id=host.instance_id)
    Host.objects.filter(pk=host.pk).update(state=HostState.TERMINATING)
    assert verdict(post(client, token, host.instance_id))[0] == "no"

    other = make_ready_meeting()
    other_host = Host.objects.get(meeting=other, role="teacher")
    token = dcv_token_issue(meeting_id=other.pk, role="teacher", instance_id=other_host.instance_id)
    other.status = MeetingStatus.TERMINATED
    other.save(update_fields=["status"])
    assert verdict(post(client, token, other_host.instance_id))[0] == "no"


# --- a participant on the desktop starts the session (issue 12, item 15) ----------------------------
def test_the_first_successful_authentication_starts_the_session_once(client, ready):
    meeting, host = ready
    student = Host.objects.get(meeting=meeting, role="student")
    foreign = dcv_token_issue(meeting_id=meeting.pk, role="student", instance_id=student.instance_id)
    assert verdict(post(client, "garbage", host.instance_id))[0] == "no"
    assert verdict(post(client, foreign, host.instance_id))[0] == "no"
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.HEALTHY and not meeting.events.exists()

    token = dcv_token_issue(meeting_id=meeting.pk, role="teacher", instance_id=host.instance_id)
    assert verdict(post(client, token, host.instance_id)) == ("yes", "teacher")
    assert verdict(post(client, foreign, student.instance_id)) == ("yes", "student")
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.IN_PROGRESS and meeting.started_at is not None
    starts = meeting.events.filter(to_status=MeetingStatus.IN_PROGRESS)
    assert [(e.from_status, e.actor) for e in starts] == [(MeetingStatus.HEALTHY, "teacher")]


def test_a_refused_authentication_on_a_retired_host_starts_nothing(client, ready):
    meeting, host = ready
    token = dcv_token_issue(meeting_id=meeting.pk, role="teacher", instance_id=host.instance_id)
    Host.objects.filter(pk=host.pk).update(state=HostState.TERMINATING)
    assert verdict(post(client, token, host.instance_id))[0] == "no"
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.HEALTHY


def test_concurrent_first_sign_ins_start_the_meeting_exactly_once(require_postgres, live_server, transactional_db):
    """Teacher and student reach their desktops at the same moment: real concurrent requests on PostgreSQL."""
    meetings = [make_ready_meeting() for _ in range(5)]
    results: list[str] = []
    lock = threading.Lock()

    def sign_in(instance_id: str, token: str, barrier: threading.Barrier):
        session = requests.Session()
        barrier.wait()
        response = session.post(
            f"{live_server.url}/dcv/auth/{instance_id}",
            data={"sessionId": "console", "authenticationToken": token, "clientAddress": "203.0.113.9"},
            timeout=30,
        )
        with lock:
            results.append(response.text[:18])

    for meeting in meetings:
        hosts = {h.role: h.instance_id for h in Host.objects.filter(meeting=meeting)}
        barrier = threading.Barrier(6)
        threads = [
            threading.Thread(
                target=sign_in,
                args=(hosts[role], dcv_token_issue(meeting_id=meeting.pk, role=role, instance_id=hosts[role]), barrier),
            )
            for role in ["teacher", "student"] * 3
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert results == ['<auth result="yes"'] * 30
    for meeting in meetings:
        meeting.refresh_from_db()
        assert meeting.status == MeetingStatus.IN_PROGRESS
        assert meeting.version == 2
        assert meeting.events.filter(to_status=MeetingStatus.IN_PROGRESS).count() == 1


def test_only_post(client):
    assert client.get("/dcv/auth/i-0123").status_code == 405


# --- the stand-in ---------------------------------------------------------------------------------
@pytest.fixture
def standin_on_live_server(standin_port, live_server, settings):
    port, server = standin_port
    # The host's boot script sets the verifier to ELEPHANT_PUBLIC_URL, and the stand-in follows the script.
    settings.ELEPHANT_PUBLIC_URL = live_server.url
    previous = server.RequestHandlerClass.standin.app_url
    server.RequestHandlerClass.standin.app_url = live_server.url
    yield port
    server.RequestHandlerClass.standin.app_url = previous


@pytest.mark.django_db(transaction=True)
def test_the_stand_in_serves_the_desktop_and_asks_the_authenticator(standin_on_live_server):
    meeting = make_meeting(meet_time=timezone.now() + timedelta(minutes=2))
    services.meeting_launch(meeting_id=meeting.pk)
    result = services.fleet_watchdog_sweep()
    for host_id, address, zone in result.running:
        services.host_running(host_id=host_id, address=address, availability_zone=zone)
    host = Host.objects.get(meeting=meeting, role="student")
    assert urlsplit(host.dcv_link).port == standin_on_live_server

    page = requests.get(host.dcv_link, timeout=10)
    assert page.status_code == 200
    assert meeting.pk in page.text and "student" in page.text and host.instance_id in page.text

    token = dcv_token_issue(meeting_id=meeting.pk, role="student", instance_id=host.instance_id)
    page = requests.get(f"{host.dcv_link}?authToken={token}", timeout=10)
    assert page.status_code == 200
    assert "DCV authenticated: signed in as student" in page.text
    page = requests.get(f"{host.dcv_link}?authToken={token}", timeout=10)
    assert page.status_code == 403
    assert "DCV refused the token" in page.text and "already used" in page.text

    unknown = f"http://127.0.0.1:{standin_on_live_server}/i-0000000000000dead/"
    assert requests.get(unknown, timeout=10).status_code == 404


def test_the_stand_in_is_not_ready_during_the_simulated_boot(standin_port, ec2):
    port, server = standin_port
    server.RequestHandlerClass.standin.boot_seconds = 3600
    try:
        instance = ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1)["Instances"][0]
        response = requests.get(f"http://127.0.0.1:{port}/{instance['InstanceId']}/", timeout=10)
        assert response.status_code == 503 and "booting" in response.text
        assert int(response.headers["Retry-After"]) > 3000
    finally:
        server.RequestHandlerClass.standin.boot_seconds = 0


def test_untrusted_values_reach_the_log_as_one_line(client, ready, caplog):
    """A client address or an instance id with a line feed cannot add a forged line to the log."""
    meeting, host = ready
    forged = "203.0.113.9\n2026-12-02 12:00:00,000 INFO fleet.views DCV auth accepted: x teacher on i-0 from 1.2.3.4"
    token = dcv_token_issue(meeting_id=meeting.pk, role="teacher", instance_id=host.instance_id)
    with caplog.at_level("INFO", logger="fleet.views"):
        client.post("/dcv/auth/i-0bad%0D%0Aforged\x1b[2K", {"authenticationToken": token, "clientAddress": forged})
        client.post(f"/dcv/auth/{host.instance_id}", {"authenticationToken": token, "clientAddress": forged})
    lines = [record.getMessage() for record in caplog.records if record.name == "fleet.views"]
    assert len(lines) == 2 and all(line.isprintable() for line in lines)
    assert lines[0].startswith("DCV auth refused for i-0bad\\r\\nforged\\x1b[2K from 203.0.113.9\\n2026-12-02 12:00")
    assert lines[1].startswith("DCV auth accepted: ") and "from 203.0.113.9\\n2026-12-02 12:00" in lines[1]
