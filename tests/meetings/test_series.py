"""Weekly series: scheduled together, each week its own meeting; cancel one or this and later ones."""

import json
from datetime import UTC, datetime

import pytest
import time_machine
from django.test import Client

from meetings.apikeys import api_key_create
from meetings.models import Meeting, MeetingStatus, UsagePlan
from meetings.services import weekly_occurrences

NOW = datetime(2026, 10, 1, 12, 0, tzinfo=UTC)
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
        return getattr(client, method)(
            path, json.dumps(body) if body is not None else "", "application/json", headers=headers
        )

    return call


def test_weekly_keeps_the_wall_clock_time_across_the_end_of_summer_time():
    starts = weekly_occurrences(meet_time=datetime(2026, 10, 19, 14, 0, tzinfo=UTC), time_zone="Europe/Berlin", weeks=3)
    assert [start.hour for start in starts] == [14, 15, 15]  # 16:00 in Berlin every week (CEST, then CET)


def test_repeat_creates_a_series_of_meetings_each_with_its_own_links(api):
    body = {"teacher_name": "T", "student_name": "S", "meet_time": "2026-10-05T15:00:00Z", "repeat": {"weekly": 3}}
    response = api("post", URL, body)
    assert response.status_code == 201, response.content
    created = response.json()
    weeks = created["series"]["meetings"]
    assert [week["meet_time"] for week in weeks] == [
        "2026-10-05T15:00:00Z",
        "2026-10-12T15:00:00Z",
        "2026-10-19T15:00:00Z",
    ]
    assert len({week["student_link"] for week in weeks}) == 3
    assert [week["series"]["week"] for week in weeks] == [1, 2, 3]
    assert api("get", f"{URL}/{weeks[1]['id']}").json()["series"] == {"id": created["series"]["id"], "week": 2}

    # Cancel the second week and every later one; the first stays.
    response = api("delete", f"{URL}/{weeks[1]['id']}?scope=following")
    assert response.status_code == 200 and response.json()["status"] == "CANCELLED"
    statuses = dict(Meeting.objects.values_list("pk", "status"))
    assert [statuses[week["id"]] for week in weeks] == [MeetingStatus.SCHEDULED, "CANCELLED", "CANCELLED"]


@pytest.mark.parametrize(
    "repeat", [{"weekly": 0}, {"weekly": 53}, {"weekly": "3"}, {"weekly": True}, {"daily": 3}, [3], 3]
)
def test_a_bad_repeat_is_400_and_creates_nothing(api, repeat):
    body = {"teacher_name": "T", "student_name": "S", "meet_time": "2026-10-05T15:00:00Z", "repeat": repeat}
    response = api("post", URL, body)
    assert response.status_code == 400 and "repeat" in response.json()["errors"], response.content
    assert not Meeting.objects.exists()


def test_a_series_reaching_too_far_ahead_is_refused_whole(api, settings):
    settings.ELEPHANT_MAX_SCHEDULE_AHEAD_DAYS = 20
    body = {"teacher_name": "T", "student_name": "S", "meet_time": "2026-10-05T15:00:00Z", "repeat": {"weekly": 4}}
    response = api("post", URL, body)
    assert response.status_code == 400 and response.json()["errors"]["repeat"][0].startswith("Week 4:")
    assert not Meeting.objects.exists()
