"""The integrators' JSON API against the real database and Redis, with time frozen."""

import json
import threading
from datetime import UTC, datetime

import pytest
import time_machine
from django.test import Client

from meetings.apikeys import api_key_create
from meetings.models import Meeting, MeetingEvent, MeetingStatus, UsagePlan
from meetings.ratelimit import rate_limit_hit
from meetings.tokens import participant_token
from tests.factories import make_meeting

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
URL = "/api/v1/meetings"
VALID = {"teacher_name": "Tina Teacher", "student_name": "Stu Student", "meet_time": "2026-11-21T15:00:00Z"}

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def frozen():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def plan():
    return UsagePlan.objects.create(name="roomy", rate_per_second=100, burst=100, daily_quota=1000)


@pytest.fixture
def key(plan):
    return api_key_create(name="acme", plan=plan)


@pytest.fixture
def api(key):
    return ApiClient(key[1])


class ApiClient:
    def __init__(self, plaintext: str | None):
        self.client = Client()
        self.headers = {"Authorization": f"Api-Key {plaintext}"} if plaintext else {}

    def post(self, body, *, content_type="application/json", url=URL, **headers):
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return self.client.post(url, data=data, content_type=content_type, headers={**self.headers, **headers})

    def get(self, meeting_id, **headers):
        return self.client.get(f"{URL}/{meeting_id}", headers={**self.headers, **headers})

    def delete(self, meeting_id):
        return self.client.delete(f"{URL}/{meeting_id}", headers=self.headers)


def assert_invalid(response, *fields):
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"]
    assert sorted(body["errors"]) == sorted(fields), body
    for messages in body["errors"].values():
        assert messages and all(isinstance(message, str) and message for message in messages)
    return body["errors"]


# --- creating -------------------------------------------------------------------------------------
def test_create_returns_the_meeting_with_absolute_links(api, key, settings):
    settings.ELEPHANT_PUBLIC_URL = "https://elephant.example.com"
    response = api.post(VALID)

    assert response.status_code == 201, response.content
    body = response.json()
    meeting = Meeting.objects.get(pk=body["id"])
    token = participant_token(meeting_id=meeting.id, role="teacher")
    assert body == {
        "id": meeting.id,
        "status": "SCHEDULED",
        "meet_time": "2026-11-21T15:00:00Z",
        "time_zone": "UTC",
        "duration_minutes": 60,
        "teacher_link": f"https://elephant.example.com/join/{meeting.id}/teacher?t={token}",
        "student_link": body["student_link"],
        "room_url": f"https://elephant.example.com/room/{meeting.id}",
        "termination_reason": None,
        "series": None,
    }
    assert body["student_link"].startswith(f"https://elephant.example.com/join/{meeting.id}/student?t=")
    assert body["student_link"] != body["teacher_link"].replace("teacher", "student")
    assert response["Location"] == f"https://elephant.example.com/api/v1/meetings/{meeting.id}"
    assert meeting.api_key == key[0]
    assert MeetingEvent.objects.get(meeting=meeting).actor == "api:acme"


def test_create_with_every_field_converts_the_time_to_utc(api):
    response = api.post(
        {
            **VALID,
            "meet_time": "2026-11-22T16:30:00+01:00",
            "time_zone": "Europe/Berlin",
            "duration_minutes": 90,
            "teacher_email": "tina@example.com",
            "student_email": None,
        }
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["meet_time"], body["time_zone"], body["duration_minutes"]) == (
        "2026-11-22T15:30:00Z",
        "Europe/Berlin",
        90,
    )
    meeting = Meeting.objects.get(pk=body["id"])
    assert (meeting.teacher_email, meeting.student_email) == ("tina@example.com", "")


def test_trailing_slash_is_accepted(api):
    assert api.post(VALID, url=URL + "/").status_code == 201


def test_a_time_up_to_30_minutes_past_is_accepted(api):
    assert api.post({**VALID, "meet_time": "2026-11-21T11:31:00Z"}).status_code == 201


# --- validation -----------------------------------------------------------------------------------
def test_empty_object_names_every_required_field(api):
    errors = assert_invalid(api.post({}), "teacher_name", "student_name", "meet_time")
    assert errors["meet_time"] == ["This field is required."]


def test_unknown_fields_are_named(api):
    errors = assert_invalid(api.post({**VALID, "teacher": "x", "room": 1}), "teacher", "room")
    assert errors["room"] == ["Unknown field."]
    assert not Meeting.objects.exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("teacher_name", 5),
        ("teacher_name", None),
        ("student_name", ["Stu"]),
        ("teacher_email", 5),
        ("student_email", {"a": 1}),
        ("meet_time", 1795273200),
        ("meet_time", None),
        ("time_zone", 1),
        ("duration_minutes", "60"),
        ("duration_minutes", 60.5),
        ("duration_minutes", 60.0),
        ("duration_minutes", True),
    ],
)
def test_wrong_types(api, field, value):
    assert_invalid(api.post({**VALID, field: value}), field)


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("teacher_name", "   ", "blank"),
        ("student_name", "x" * 121, "120"),
        ("student_name", "Stu\x00dent", "Control"),
        ("teacher_email", "not-an-email", "valid email"),
        ("student_email", "a@" + "b" * 300 + ".com", "254"),
        ("meet_time", "2026-11-21T15:00:00", "offset"),
        ("meet_time", "2026-11-21", "offset"),
        ("meet_time", "tomorrow at three", "ISO 8601"),
        ("meet_time", "2026-11-21T15:00:00Z" + " " * 100, "Too long"),
        ("meet_time", "2026-11-21T10:00:00Z", "30 minutes in the past"),
        ("meet_time", "9999-12-31T23:00:00-05:00", "days ahead"),
        ("meet_time", "0001-01-01T00:00:00+05:00", "in the past"),
        ("time_zone", "Mars/Olympus_Mons", "Unknown time zone"),
        ("time_zone", "../../../etc/passwd", "Unknown time zone"),
        ("time_zone", "Europe/Berlin\x00", "Unknown time zone"),
        ("time_zone", "", "Unknown time zone"),
        ("duration_minutes", 0, "between 1 and 480"),
        ("duration_minutes", 481, "between 1 and 480"),
        ("duration_minutes", 10**400, "between 1 and 480"),
    ],
)
def test_bad_values(api, field, value, fragment):
    errors = assert_invalid(api.post({**VALID, field: value}), field)
    assert fragment in errors[field][0]


def test_several_problems_are_reported_together(api):
    body = {"teacher_name": "", "student_name": "S", "meet_time": "2026-11-21T15:00", "duration_minutes": -1}
    assert_invalid(api.post(body), "teacher_name", "meet_time", "duration_minutes")


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b'{"teacher_name": "T",}',
        b"\xff\xfe{}",
        b'{"teacher_name": NaN}',
        b"[" * 5000 + b"]" * 5000,
    ],
    ids=["truncated", "trailing-comma", "not-utf8", "nan", "deep-nesting"],
)
def test_malformed_json(api, raw):
    assert_invalid(api.post(raw), "body")


def test_empty_body(api):
    response = api.client.generic("POST", URL, b"", headers=api.headers, CONTENT_TYPE="application/json")
    assert_invalid(response, "body")


@pytest.mark.parametrize("value", [[VALID], "meeting", 42, None, True])
def test_body_must_be_an_object(api, value):
    errors = assert_invalid(api.post(json.dumps(value)), "body")
    assert errors["body"] == ["Send a JSON object."]


def test_oversized_body_is_refused(api):
    body = {**VALID, "teacher_name": "x" * 17000}
    errors = assert_invalid(api.post(body), "body")
    assert "16384 bytes" in errors["body"][0]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_wrong_content_type_is_415(api, content_type):
    response = api.post(json.dumps(VALID), content_type=content_type)
    assert response.status_code == 415
    assert "application/json" in response.json()["error"]


def test_json_content_type_with_charset_is_fine(api):
    assert api.post(VALID, content_type="application/json; charset=utf-8").status_code == 201


# --- UTF-8 only, and values that used to answer 500 (issue 12) ---------------------------------------
@pytest.mark.parametrize(
    "raw",
    [
        json.dumps(VALID).encode("utf-16"),  # with its BOM
        json.dumps(VALID).encode("utf-16-le"),
        json.dumps(VALID).encode("utf-16-be"),
        json.dumps(VALID).encode("utf-32"),
        json.dumps(VALID).encode("utf-8-sig"),
    ],
    ids=["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-8-bom"],
)
def test_a_body_not_in_utf8_is_refused(api, raw):
    errors = assert_invalid(api.post(raw), "body")
    assert errors["body"][0].startswith("Send the body in UTF-8")
    assert not Meeting.objects.exists()


def test_invalid_utf8_names_the_byte(api):
    errors = assert_invalid(api.post(b'{"teacher_name": "T\xe9"}'), "body")
    assert errors["body"] == ["Send the body in UTF-8 (byte 19 is not UTF-8)."]


def test_a_charset_other_than_utf8_is_415(api):
    response = api.client.generic(
        "POST", URL, json.dumps(VALID).encode("utf-16"), "application/json; charset=utf-16", headers=api.headers
    )
    assert response.status_code == 415
    assert "UTF-8" in response.json()["error"]


@pytest.mark.parametrize(
    ("raw_field", "field"),
    [
        ('"student_name": "Stu\\ud800"', "student_name"),
        ('"teacher_name": "\\udfff"', "teacher_name"),
        ('"student_name": "\\u202eStu"', "student_name"),
        ('"time_zone": "America"', "time_zone"),
        ('"time_zone": "Etc"', "time_zone"),
        ('"time_zone": "Europe"', "time_zone"),
        ('"time_zone": "\\ud800"', "time_zone"),
        ('"meet_time": "9999-12-31T23:59:59-08:00"', "meet_time"),
        ('"meet_time": "2027-11-21T12:00:01Z"', "meet_time"),
    ],
)
def test_values_that_used_to_answer_500_get_a_field_message(api, raw_field, field):
    body = json.dumps(VALID)[:-1] + ", " + raw_field + "}"
    body = body.replace('"meet_time": "2026-11-21T15:00:00Z", ', "") if field == "meet_time" else body
    errors = assert_invalid(api.post(body), field)
    assert errors[field][0]
    assert not Meeting.objects.exists()


# --- keys -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer elk_abcdefghijkl_secret",
        "Api-Key",
        "Api-Key not-a-key",
        "Api-Key elk_short_secret",
        "Api-Key elk_abcdefghijkl_" + "s" * 200,
    ],
)
def test_missing_or_malformed_credentials_are_401(key, authorization):
    client = ApiClient(None)
    headers = {} if authorization is None else {"Authorization": authorization}
    response = client.post(VALID, **headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Api-Key realm="elephant"'
    assert response["Access-Control-Allow-Origin"] == "*"
    assert response.json()["error"]
    assert not Meeting.objects.exists()


def test_unknown_key_and_wrong_secret_are_401(key):
    issued = key[1]
    wrong_secret = issued[:-4] + ("AAAA" if not issued.endswith("AAAA") else "BBBB")
    for plaintext in ["elk_zzzzzzzzzzzz_" + issued.split("_", 2)[2], wrong_secret]:
        response = ApiClient(plaintext).post(VALID)
        assert response.status_code == 401
        assert response.json() == {"error": "Unknown API key."}


def test_scheme_is_case_insensitive(key):
    assert ApiClient(None).post(VALID, Authorization=f"api-key {key[1]}").status_code == 201


def test_deactivated_key_is_401(api, key):
    key[0].is_active = False
    key[0].save()
    response = api.post(VALID)
    assert response.status_code == 401
    assert "deactivated" in response.json()["error"]


# --- reading and cancelling -----------------------------------------------------------------------
def test_get_returns_the_meeting(api):
    created = api.post(VALID).json()
    response = api.get(created["id"])
    assert response.status_code == 200
    assert response.json() == created


def test_another_keys_meeting_is_404(api, plan):
    created = api.post(VALID).json()
    other = ApiClient(api_key_create(name="globex", plan=plan)[1])
    assert other.get(created["id"]).status_code == 404
    assert other.delete(created["id"]).status_code == 404
    assert Meeting.objects.get(pk=created["id"]).status == MeetingStatus.SCHEDULED


def test_unknown_and_non_api_meetings_are_404(api):
    page_meeting = make_meeting()
    for meeting_id in [page_meeting.id, "a" * 16, "short", "x" * 300]:
        response = api.get(meeting_id)
        assert response.status_code == 404, meeting_id
        assert response.json()["error"]


def test_delete_cancels_and_is_idempotent(api):
    created = api.post(VALID).json()

    first = api.delete(created["id"])
    second = api.delete(created["id"])

    assert first.status_code == second.status_code == 200
    assert first.json()["status"] == second.json()["status"] == "CANCELLED"
    assert first.json()["termination_reason"] == "CANCELLED"
    assert MeetingEvent.objects.filter(meeting_id=created["id"], to_status="CANCELLED").get().actor == "api:acme"
    assert api.get(created["id"]).json()["status"] == "CANCELLED"


@pytest.mark.parametrize("status", [MeetingStatus.LAUNCHING, MeetingStatus.IN_PROGRESS, MeetingStatus.TERMINATED])
def test_delete_after_launch_is_409(api, key, status):
    meeting = make_meeting(api_key=key[0], status=status)
    response = api.delete(meeting.id)
    assert response.status_code == 409
    assert response.json()["status"] == status
    assert "can no longer be cancelled" in response.json()["error"]
    meeting.refresh_from_db()
    assert meeting.status == status


# --- protocol -------------------------------------------------------------------------------------
def test_other_methods_are_405_json(api):
    collection = api.client.get(URL, headers=api.headers)
    detail = api.client.put(f"{URL}/{'a' * 16}", data="{}", headers=api.headers)
    assert (collection.status_code, collection["Allow"]) == (405, "POST, OPTIONS")
    assert (detail.status_code, detail["Allow"]) == (405, "GET, PATCH, DELETE, OPTIONS")
    assert detail.json()["error"]


def test_preflight_and_cors(api, settings):
    settings.ELEPHANT_CORS_ORIGIN = "https://lms.example.org"
    preflight = api.client.options(URL, headers={"Origin": "https://lms.example.org"})
    assert preflight.status_code == 204
    assert preflight["Access-Control-Allow-Origin"] == "https://lms.example.org"
    assert "POST" in preflight["Access-Control-Allow-Methods"]
    assert "Authorization" in preflight["Access-Control-Allow-Headers"]
    created = api.post(VALID)
    assert created["Access-Control-Allow-Origin"] == "https://lms.example.org"
    assert "Origin" in created["Vary"]


def test_unknown_api_path_is_json_404(api):
    response = api.client.get("/api/v1/nothing/here", headers=api.headers)
    assert response.status_code == 404
    assert response.json()["error"]


def test_no_csrf_token_needed(key):
    client = Client(enforce_csrf_checks=True)
    response = client.post(
        URL, json.dumps(VALID), content_type="application/json", headers={"Authorization": f"Api-Key {key[1]}"}
    )
    assert response.status_code == 201


# --- limits ---------------------------------------------------------------------------------------
def limited_client(**plan):
    usage_plan = UsagePlan.objects.create(name="tight", **plan)
    return ApiClient(api_key_create(name="tight", plan=usage_plan)[1])


def test_burst_then_429_then_refill(frozen):
    api = limited_client(rate_per_second=0.5, burst=3, daily_quota=1000)
    assert [api.get("a" * 16).status_code for _ in range(3)] == [404, 404, 404]

    refused = api.post(VALID)
    assert refused.status_code == 429
    assert refused["Retry-After"] == "2"
    assert refused.json()["limit"] == "rate"
    assert "Rate limit" in refused.json()["error"]
    assert refused["Access-Control-Allow-Origin"] == "*"
    assert not Meeting.objects.exists()

    frozen.shift(1)
    assert api.post(VALID).status_code == 429
    frozen.shift(1)
    assert api.post(VALID).status_code == 201
    assert api.post(VALID).status_code == 429


def test_retry_after_rounds_up_to_a_whole_second():
    api = limited_client(rate_per_second=50, burst=1, daily_quota=1000)
    assert api.get("a" * 16).status_code == 404
    assert api.get("a" * 16)["Retry-After"] == "1"


def test_daily_quota_then_reset_at_utc_midnight(frozen):
    frozen.move_to(datetime(2026, 11, 21, 23, 59, 30, tzinfo=UTC))
    api = limited_client(rate_per_second=100, burst=100, daily_quota=2)
    assert api.post({**VALID, "meet_time": "2026-11-22T10:00:00Z"}).status_code == 201
    assert api.get("a" * 16).status_code == 404

    refused = api.post({**VALID, "meet_time": "2026-11-22T10:00:00Z"})
    assert refused.status_code == 429
    assert refused.json()["limit"] == "daily_quota"
    assert refused["Retry-After"] == "30"
    assert "00:00 UTC" in refused.json()["error"]

    frozen.move_to(datetime(2026, 11, 22, 0, 0, 1, tzinfo=UTC))
    assert api.post({**VALID, "meet_time": "2026-11-22T10:00:00Z"}).status_code == 201


def test_refused_requests_do_not_spend_quota(frozen):
    api = limited_client(rate_per_second=1, burst=1, daily_quota=2)
    assert api.get("a" * 16).status_code == 404
    assert [api.get("a" * 16).status_code for _ in range(5)] == [429] * 5
    frozen.shift(1)
    assert api.get("a" * 16).status_code == 404
    frozen.shift(1)
    assert api.get("a" * 16).json()["limit"] == "daily_quota"


def test_keys_have_separate_buckets():
    first = limited_client(rate_per_second=0.01, burst=1, daily_quota=10)
    second = ApiClient(api_key_create(name="other", plan=UsagePlan.objects.get(name="tight"))[1])
    assert first.get("a" * 16).status_code == 404
    assert first.get("a" * 16).status_code == 429
    assert second.get("a" * 16).status_code == 404


def test_bucket_holds_under_concurrency():
    """Many threads at one instant: exactly `burst` get through, the quota counts exactly those."""
    tight = UsagePlan.objects.create(name="concurrent", rate_per_second=0.001, burst=7, daily_quota=1000)
    key, _ = api_key_create(name="busy", plan=tight)
    key = type(key).objects.select_related("plan").get(pk=key.pk)
    decisions, start = [], threading.Barrier(40)

    def hit():
        start.wait()
        decisions.append(rate_limit_hit(key=key, now=NOW))

    threads = [threading.Thread(target=hit) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    allowed = [decision for decision in decisions if decision.allowed]
    assert len(allowed) == 7
    assert sorted(decision.quota_remaining for decision in allowed) == list(range(993, 1000))


def test_unreachable_redis_lets_requests_through(api, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    assert api.get("a" * 16).status_code == 404
