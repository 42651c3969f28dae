"""Rescheduling (meetings.services.meeting_reschedule) through the API's PATCH and the teacher's page."""

import json
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.test import Client

from meetings.apikeys import api_key_create
from meetings.models import EventReason, Meeting, MeetingStatus, UsagePlan
from meetings.tokens import participant_token, participant_token_valid

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
URL = "/api/v1/meetings"
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _frozen():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def api():
    _, plaintext = api_key_create(name="acme", plan=UsagePlan.objects.create(name="p"))
    client = Client()
    headers = {"Authorization": f"Api-Key {plaintext}"}

    def call(method, path, body=None):
        data = json.dumps(body) if body is not None else ""
        return getattr(client, method)(path, data, "application/json", headers=headers)

    return call


def _create(api, **extra):
    body = {"teacher_name": "T", "student_name": "S", "meet_time": "2026-11-22T15:00:00Z"} | extra
    response = api("post", URL, body)
    assert response.status_code == 201, response.content
    return response.json()


def test_patch_moves_the_meeting_keeps_its_links_and_records_an_event(api):
    created = _create(api)
    response = api(
        "patch", f"{URL}/{created['id']}", {"meet_time": "2026-11-23T16:30:00+01:00", "duration_minutes": 45}
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["meet_time"], body["duration_minutes"]) == ("2026-11-23T15:30:00Z", 45)
    assert body["student_link"] == created["student_link"]  # the link sent stays the link
    meeting = Meeting.objects.get(pk=created["id"])
    assert (meeting.sequence, meeting.version) == (1, 2)
    event = meeting.events.get(reason=EventReason.RESCHEDULED)
    assert event.mirrored_at is None and "meet_time" in event.detail and event.actor == "api:acme"
    token = participant_token(meeting_id=meeting.id, role="student")
    assert participant_token_valid(meeting_id=meeting.id, role="student", token=token)
    assert meeting.join_window_contains(datetime(2026, 11, 23, 15, 0, tzinfo=UTC))  # the window follows
    assert not meeting.join_window_contains(datetime(2026, 11, 22, 15, 0, tzinfo=UTC))


def test_a_time_zone_alone_changes_no_sequence(api):
    created = _create(api)
    assert api("patch", f"{URL}/{created['id']}", {"time_zone": "Europe/Berlin"}).status_code == 200
    assert Meeting.objects.get(pk=created["id"]).sequence == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"meet_time": "2026-11-20T10:00:00Z"}, "meet_time"),  # past: the same rule as scheduling
        ({"meet_time": "2026-11-22T15:00:00"}, "meet_time"),  # naive
        ({"duration_minutes": 0}, "duration_minutes"),
        ({"duration_minutes": "60"}, "duration_minutes"),
        ({"time_zone": "Mars/Base"}, "time_zone"),
        ({"meet_time": None}, "meet_time"),
        ({"student_name": "X"}, "student_name"),
        ({}, "body"),
    ],
)
def test_patch_validates_like_scheduling(api, body, field):
    created = _create(api)
    response = api("patch", f"{URL}/{created['id']}", body)
    assert response.status_code == 400 and field in response.json()["errors"], response.content
    assert Meeting.objects.get(pk=created["id"]).sequence == 0


def test_patch_after_launch_is_409(api):
    created = _create(api)
    Meeting.objects.filter(pk=created["id"]).update(status=MeetingStatus.LAUNCHING)
    response = api("patch", f"{URL}/{created['id']}", {"duration_minutes": 30})
    assert response.status_code == 409 and response.json()["status"] == "LAUNCHING"


def test_the_teacher_moves_a_session_from_its_page(client):
    teacher = get_user_model().objects.create_user("tina", password="pw-tina-123")
    client.force_login(teacher)
    from meetings.services import meeting_schedule

    meeting = meeting_schedule(
        teacher=teacher, teacher_name="Tina", student_name="Stu", meet_time=NOW + timedelta(days=1), actor="t"
    )
    page = client.get(f"/meetings/{meeting.id}")
    assert b"Move this session" in page.content and b"No recording" in page.content
    form = {
        "move-date": "2026-11-24",
        "move-time": "09:00",
        "move-time_zone": "Europe/Berlin",
        "move-duration_minutes": "90",
    }
    response = client.post(f"/meetings/{meeting.id}/reschedule", form)
    assert response.status_code == 302
    meeting.refresh_from_db()
    assert meeting.meet_time == datetime(2026, 11, 24, 8, 0, tzinfo=UTC) and meeting.duration_minutes == 90
    bad = client.post(f"/meetings/{meeting.id}/reschedule", form | {"move-date": "2026-11-01"})
    assert bad.status_code == 400 and b"in the past" in bad.content
    other = get_user_model().objects.create_user("otto", password="pw-otto-123")
    client.force_login(other)
    assert client.post(f"/meetings/{meeting.id}/reschedule", form).status_code == 404
