"""The one definition of a valid schedule (meetings.schedule) and its callers: page, API, service."""

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.test import Client

from meetings.apikeys import api_key_create
from meetings.forms import ScheduleForm
from meetings.models import Meeting, UsagePlan
from meetings.schedule import SCHEDULE_FIELDS, schedule_clean
from meetings.services import meeting_schedule

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)

VALID = {
    "teacher_name": "Tina Teacher",
    "teacher_email": "",
    "student_name": "Stu Student",
    "student_email": "stu@example.com",
    "meet_time": NOW + timedelta(hours=3),
    "time_zone": "Europe/Berlin",
    "duration_minutes": 60,
    "desktop_profile": "",
}


@pytest.fixture(autouse=True)
def frozen():
    with time_machine.travel(NOW, tick=False):
        yield


class TestDefinition:
    def test_a_valid_schedule_is_cleaned(self):
        cleaned, errors = schedule_clean({**VALID, "student_name": "  Stu Student "})
        assert errors == {}
        assert cleaned["student_name"] == "Stu Student"
        assert cleaned["meet_time"] == VALID["meet_time"]

    def test_iso_text_with_an_offset_is_a_meeting_time(self):
        cleaned, errors = schedule_clean({"meet_time": "2026-11-21T16:30:00+01:00"})
        assert errors == {}
        assert cleaned["meet_time"] == datetime(2026, 11, 21, 15, 30, tzinfo=UTC)

    @pytest.mark.parametrize(
        ("field", "value", "message"),
        [
            ("student_name", "Stu\x07dent", "Control characters are not allowed."),
            ("student_name", "x" * 121, "At most 120 characters."),
            ("student_name", "", "This field is required."),
            ("student_email", "a@" + "b" * 300 + ".com", "At most 254 characters."),
            ("meet_time", NOW.replace(tzinfo=None), "Give the time with its UTC offset or Z"),
            ("meet_time", NOW - timedelta(minutes=31), "That time is more than 30 minutes in the past."),
            ("meet_time", "soon", "Not an ISO 8601 date and time"),
            ("time_zone", "Not/AZone", "Unknown time zone 'Not/AZone'; use an IANA name such as Europe/Berlin."),
            ("time_zone", " UTC", "Unknown time zone ' UTC'"),
            ("duration_minutes", 0, "Duration must be between 1 and 480 minutes."),
            # Issue 12: what used to pass the rules and then fail on insert, on a page or in a calendar.
            ("student_name", "Stu\ud800", "Not valid Unicode text (a lone surrogate)."),
            ("student_name", "\u202eтнеduts", "Invisible formatting characters"),
            ("student_name", "Stu\u200bdent", "Invisible formatting characters"),
            ("teacher_name", "Tina\u2066Teacher", "Invisible formatting characters"),
            ("time_zone", "America", "Unknown time zone 'America'"),
            ("time_zone", "Europe", "Unknown time zone 'Europe'"),
            ("time_zone", "Etc", "Unknown time zone 'Etc'"),
            ("time_zone", "zone.tab", "Unknown time zone 'zone.tab'"),
            ("time_zone", "localtime", "Unknown time zone 'localtime'"),
            ("time_zone", "\ud800", "Unknown time zone"),
            ("meet_time", NOW + timedelta(days=365, seconds=1), "That time is more than 365 days ahead."),
            ("meet_time", "9999-12-31T23:00:00-08:00", "That time is more than 365 days ahead."),
            ("meet_time", datetime(9999, 12, 31, 23, tzinfo=UTC), "That time is more than 365 days ahead."),
            ("meet_time", "0001-01-01T00:00:00+01:00", "That time is more than 30 minutes in the past."),
        ],
    )
    def test_each_rule_gives_one_message(self, field, value, message):
        _, errors = schedule_clean({**VALID, field: value})
        assert list(errors) == [field]
        assert len(errors[field]) == 1 and errors[field][0].startswith(message)

    def test_the_limits_are_read_from_the_settings_when_judging(self, settings):
        settings.ELEPHANT_MAX_DURATION_MINUTES = 90
        settings.ELEPHANT_PAST_TOLERANCE_MINUTES = 5
        _, errors = schedule_clean({**VALID, "duration_minutes": 91, "meet_time": NOW - timedelta(minutes=6)})
        assert errors == {
            "duration_minutes": ["Duration must be between 1 and 90 minutes."],
            "meet_time": ["That time is more than 5 minutes in the past."],
        }

    def test_the_furthest_date_follows_the_setting(self, settings):
        settings.ELEPHANT_MAX_SCHEDULE_AHEAD_DAYS = 7
        assert schedule_clean({"meet_time": NOW + timedelta(days=7)})[1] == {}
        assert schedule_clean({"meet_time": NOW + timedelta(days=7, seconds=1)})[1] == {
            "meet_time": ["That time is more than 7 days ahead."]
        }

    @pytest.mark.parametrize("name", ["Zoë Ångström", "José 🐘", "Мария", "李小龙", "O'Brien-Smith", "עדי כהן"])
    def test_ordinary_names_pass(self, name):
        assert schedule_clean({"student_name": name})[1] == {}

    def test_only_the_fields_given_are_judged(self):
        assert schedule_clean({"time_zone": "Asia/Tokyo"}) == ({"time_zone": "Asia/Tokyo"}, {})
        assert set(SCHEDULE_FIELDS) == set(VALID)
        with pytest.raises(TypeError):
            schedule_clean({"room": "x"})


@pytest.mark.django_db
class TestService:
    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("student_name", "Stu\rDTSTART:1999"),
            ("teacher_email", "not-an-email"),
            ("time_zone", "Not/AZone"),
            ("duration_minutes", 481),
        ],
    )
    def test_a_direct_call_is_refused_with_field_errors(self, field, value):
        with pytest.raises(ValidationError) as refused:
            meeting_schedule(**{**VALID, field: value})
        assert list(refused.value.message_dict) == [field]
        assert not Meeting.objects.exists()


# --- the teacher's page and the API say the same --------------------------------------------------
def _page_errors(**overrides) -> dict[str, list[str]]:
    local = (NOW + timedelta(days=1)).astimezone(ZoneInfo("Europe/Berlin"))
    data = {
        "student_name": "Stu Student",
        "student_email": "",
        "date": local.date().isoformat(),
        "time": "09:30",
        "time_zone": "Europe/Berlin",
        "duration_minutes": "60",
    }
    form = ScheduleForm({**data, **overrides})
    assert not form.is_valid()
    return form.errors


def _api_errors(**overrides) -> dict[str, list[str]]:
    _, plaintext = api_key_create(
        name="acme", plan=UsagePlan.objects.create(name="roomy", rate_per_second=100, burst=100, daily_quota=1000)
    )
    body = {"teacher_name": "Tina", "student_name": "Stu Student", "meet_time": "2026-11-22T09:30:00+01:00"}
    response = Client().post(
        "/api/v1/meetings",
        data=json.dumps({**body, **overrides}),
        content_type="application/json",
        headers={"Authorization": f"Api-Key {plaintext}"},
    )
    assert response.status_code == 400, response.content
    return response.json()["errors"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("page", "api", "page_field", "api_field"),
    [
        ({"student_name": "Stu\x07dent"}, {"student_name": "Stu\x07dent"}, "student_name", "student_name"),
        ({"student_name": "x" * 121}, {"student_name": "x" * 121}, "student_name", "student_name"),
        ({"student_email": "not-an-email"}, {"student_email": "not-an-email"}, "student_email", "student_email"),
        ({"time_zone": "Not/AZone"}, {"time_zone": "Not/AZone"}, "time_zone", "time_zone"),
        ({"duration_minutes": "481"}, {"duration_minutes": 481}, "duration_minutes", "duration_minutes"),
        ({"duration_minutes": "0"}, {"duration_minutes": 0}, "duration_minutes", "duration_minutes"),
        (
            {"date": "2026-11-21", "time": "10:00", "time_zone": "UTC"},
            {"meet_time": "2026-11-21T10:00:00Z"},
            "time",
            "meet_time",
        ),
        ({"student_name": "Stu\u202eent"}, {"student_name": "Stu\u202eent"}, "student_name", "student_name"),
        ({"student_name": "Stu\ud800"}, {"student_name": "Stu\ud800"}, "student_name", "student_name"),
        ({"time_zone": "America"}, {"time_zone": "America"}, "time_zone", "time_zone"),
        (
            {"date": "2027-11-22", "time": "10:00", "time_zone": "UTC"},
            {"meet_time": "2027-11-22T10:00:00Z"},
            "time",
            "meet_time",
        ),
    ],
    ids=[
        "control-characters",
        "long-name",
        "email",
        "time-zone",
        "long-duration",
        "no-duration",
        "past",
        "bidi-override",
        "lone-surrogate",
        "zone-directory",
        "too-far-ahead",
    ],
)
def test_the_page_and_the_api_give_the_same_message(page, api, page_field, api_field):
    page_errors, api_errors = _page_errors(**page), _api_errors(**api)
    assert list(page_errors) == [page_field] and list(api_errors) == [api_field]
    assert page_errors[page_field] == api_errors[api_field]


# --- wall-clock times the clocks skip or pass twice (the teacher's page picks a local date and time) -----
@pytest.fixture
def teacher_client(db, client):
    from tests.factories import make_teacher

    client.force_login(make_teacher())
    return client


def _schedule(client, **overrides):
    data = {
        "student_name": "Stu Student",
        "student_email": "",
        "date": "2026-11-22",
        "time": "09:30",
        "time_zone": "Europe/Berlin",
        "duration_minutes": "60",
    }
    return client.post("/meetings/new", {**data, **overrides})


def test_a_time_the_clocks_skip_is_refused_with_a_message(teacher_client):
    # 2027-03-28: Berlin's clocks jump from 02:00 to 03:00; 02:30 is no moment at all.
    response = _schedule(teacher_client, date="2027-03-28", time="02:30")
    assert response.status_code == 200
    assert response.context["form"].errors == {
        "time": [
            "02:30 does not exist on 2027-03-28 in Europe/Berlin: the clocks skip it (they jump to 03:30). "
            "Pick another time."
        ]
    }
    assert not Meeting.objects.exists()


def test_a_time_the_clocks_pass_twice_is_the_first_and_the_page_shows_its_offset(teacher_client):
    # 2027-10-31: Berlin's clocks go back from 03:00 to 02:00; 02:30 happens at +02:00, then at +01:00.
    response = _schedule(teacher_client, date="2027-10-31", time="02:30")
    meeting = Meeting.objects.get()
    assert response.status_code == 302
    assert meeting.meet_time == datetime(2027, 10, 31, 0, 30, tzinfo=UTC)
    page = teacher_client.get(f"/meetings/{meeting.id}").content.decode()
    assert "Sunday 31 October 2027, 02:30" in page and "(Europe/Berlin, UTC+02:00, 60 minutes)" in page


@pytest.mark.parametrize(
    ("date", "time_zone"),
    [("9999-12-31", "America/Los_Angeles"), ("9999-12-31", "UTC"), ("2027-11-22", "UTC"), ("0001-01-01", "Asia/Tokyo")],
)
def test_dates_beyond_the_window_are_refused_on_the_page_never_a_500(teacher_client, date, time_zone):
    response = _schedule(teacher_client, date=date, time="23:30", time_zone=time_zone)
    assert response.status_code == 200
    assert list(response.context["form"].errors) == ["time"]
    assert not Meeting.objects.exists()
