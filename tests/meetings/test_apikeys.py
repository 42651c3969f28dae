"""API keys: hashed storage, verification, the create_api_key command and the admin."""

import hashlib
import io
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client

from meetings.apikeys import ApiKeyError, api_key_authenticate, api_key_create
from meetings.models import ApiKey, UsagePlan
from tests.factories import make_staff

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
BODY = {"teacher_name": "Tina", "student_name": "Stu", "meet_time": "2026-11-21T15:00:00Z"}
KEY_FORMAT = re.compile(r"^elk_[a-z0-9]{12}_[A-Za-z0-9_-]{43}$")


@pytest.fixture(autouse=True)
def frozen():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


def schedule_with(plaintext: str):
    return Client().post(
        "/api/v1/meetings",
        json.dumps(BODY),
        content_type="application/json",
        headers={"Authorization": f"Api-Key {plaintext}"},
    )


def stored_text() -> str:
    """Every column of every ApiKey row, as the database holds it."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {ApiKey._meta.db_table}")
        return repr(cursor.fetchall())


def test_create_stores_only_a_hash():
    key, plaintext = api_key_create(name="acme")

    assert KEY_FORMAT.match(plaintext)
    assert plaintext.split("_")[1] == key.prefix
    assert key.key_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    secret = plaintext.split("_", 2)[2]
    assert secret not in stored_text()
    assert plaintext not in stored_text()
    assert key.plan.name == "default"


def test_keys_are_distinct():
    keys = {api_key_create(name="acme")[1] for _ in range(5)}
    assert len(keys) == 5
    assert ApiKey.objects.values("prefix").distinct().count() == 5


def test_authenticate_finds_the_key_and_its_plan():
    key, plaintext = api_key_create(name="acme")
    found = api_key_authenticate(authorization=f"Api-Key {plaintext}")
    assert found == key
    assert found.plan.name == "default"


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "Authentication required"),
        ("Basic dXNlcjpwYXNz", "Malformed Authorization header"),
        ("Api-Key xyz_abcdefghijkl_secret", "Malformed API key"),
        ("Api-Key elk_abcdefghijkl_", "Malformed API key"),
        ("Api-Key elk_abcdefghijkl_secret", "Unknown API key"),
    ],
)
def test_authenticate_refusals(header, message):
    api_key_create(name="acme")
    with pytest.raises(ApiKeyError, match=message):
        api_key_authenticate(authorization=header)


def test_last_used_is_written_at_most_once_a_minute(django_assert_num_queries):
    key, plaintext = api_key_create(name="acme")
    header = f"Api-Key {plaintext}"
    with time_machine.travel(NOW, tick=False) as clock:
        with django_assert_num_queries(2):  # look-up + last_used_at
            api_key_authenticate(authorization=header)
        clock.shift(30)
        with django_assert_num_queries(1):  # look-up only
            api_key_authenticate(authorization=header)
        key.refresh_from_db()
        assert key.last_used_at == NOW
        clock.shift(31)
        api_key_authenticate(authorization=header)
        key.refresh_from_db()
        assert key.last_used_at == NOW + timedelta(seconds=61)


# --- the management command ---------------------------------------------------------------------
def test_command_prints_a_working_key():
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_key", "acme-lms", stdout=out, stderr=err)

    plaintext = out.getvalue().strip()
    assert KEY_FORMAT.match(plaintext)
    assert "only time" in err.getvalue()
    key = ApiKey.objects.get(name="acme-lms")
    assert key.plan.name == "default"
    assert plaintext not in stored_text()
    assert schedule_with(plaintext).status_code == 201


def test_command_uses_a_named_plan_and_refuses_an_unknown_one():
    UsagePlan.objects.create(name="gold", rate_per_second=50, burst=100, daily_quota=100_000)
    call_command("create_api_key", "acme", "--plan", "gold", stdout=io.StringIO(), stderr=io.StringIO())
    assert ApiKey.objects.get(name="acme").plan.name == "gold"

    with pytest.raises(CommandError, match="No usage plan 'silver'"):
        call_command("create_api_key", "acme", "--plan", "silver", stdout=io.StringIO(), stderr=io.StringIO())


# --- the admin ----------------------------------------------------------------------------------
@pytest.fixture
def staff_client():
    client = Client()
    client.force_login(make_staff())
    return client


def test_admin_creates_a_key_and_shows_it_once(staff_client):
    plan = UsagePlan.objects.create(name="gold")
    response = staff_client.post(
        "/admin/meetings/apikey/add/", {"name": "globex", "plan": plan.pk, "is_active": "on"}, follow=True
    )

    assert response.status_code == 200
    shown = [str(message) for message in response.context["messages"]]
    plaintext = next(KEY_FORMAT.search(word).group(0) for word in " ".join(shown).split() if KEY_FORMAT.search(word))
    key = ApiKey.objects.get(name="globex")
    assert key.key_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    assert plaintext not in stored_text()
    assert schedule_with(plaintext).status_code == 201

    again = staff_client.get(f"/admin/meetings/apikey/{key.pk}/change/")
    listing = staff_client.get("/admin/meetings/apikey/")
    assert plaintext not in again.content.decode() + listing.content.decode()
    assert key.prefix in listing.content.decode()


def test_admin_deactivates_keys(staff_client):
    key, plaintext = api_key_create(name="acme")
    response = staff_client.post(
        "/admin/meetings/apikey/", {"action": "deactivate_api_keys", "_selected_action": [key.pk]}, follow=True
    )
    assert response.status_code == 200
    key.refresh_from_db()
    assert not key.is_active
    assert schedule_with(plaintext).status_code == 401


def test_admin_lists_usage_plans(staff_client):
    UsagePlan.objects.create(name="gold", rate_per_second=2.5, burst=10, daily_quota=500)
    response = staff_client.get("/admin/meetings/usageplan/")
    assert response.status_code == 200
    assert "gold" in response.content.decode()
