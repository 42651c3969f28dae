"""The OpenAPI document of /api/v1 (meetings/openapi.py) stays true to the code.

- It is served at /api/v1/openapi.json without a key and is a valid OpenAPI 3.1 document.
- Every route under /api/v1 is in it, with exactly the methods the route allows.
- Each kind of answer of the real API (every documented status) is documented for its operation,
  with its required headers, and its body validates against the documented schema.
The fuzzing against it is tests/meetings/test_api_fuzz.py.
"""

import json
import re
from datetime import UTC, datetime

import jsonschema_rs
import pytest
import schemathesis
import time_machine
from django.test import Client

from meetings import api, api_urls
from meetings.apikeys import api_key_create
from meetings.models import Meeting, MeetingStatus, UsagePlan

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}

pytestmark = pytest.mark.django_db


@pytest.fixture
def document(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    return response.json()


def documented_path(pattern: str) -> str:
    """``^meetings/(?P<meeting_id>[^/]+)/?$`` -> ``/meetings/{meeting_id}``."""
    path = pattern.removeprefix("^").removesuffix("$").removesuffix("/?").replace("\\.", ".")
    return "/" + re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", path)


def api_routes() -> list[str]:
    return [documented_path(str(p.pattern)) for p in api_urls.urlpatterns if p.callback is not api.not_found]


def test_the_document_is_served_without_a_key_and_is_valid_openapi_31(document, settings):
    assert document["openapi"] == "3.1.0"
    schemathesis.openapi.from_dict(document).validate()
    assert document["servers"] == [{"url": f"{settings.ELEPHANT_PUBLIC_URL}/api/v1"}]
    limits = document["components"]["schemas"]["MeetingCreate"]["properties"]["duration_minutes"]
    assert limits["maximum"] == settings.ELEPHANT_MAX_DURATION_MINUTES


def test_every_route_under_api_v1_is_documented_with_the_methods_it_allows(document):
    assert api_routes() and set(api_routes()) == set(document["paths"])
    for path in api_routes():
        concrete = "/api/v1" + path.replace("{meeting_id}", "a" * 16)
        answer = Client().options(concrete)
        allowed = {method.strip().lower() for method in answer["Allow"].split(",")} - {"head"}
        documented = set(document["paths"][path]) & HTTP_METHODS
        assert documented == allowed, path


def test_the_documented_body_is_the_one_the_api_reads(document):
    create = document["components"]["schemas"]["MeetingCreate"]
    assert set(create["properties"]) == {*api.REQUIRED_FIELDS, *api.OPTIONAL_FIELDS}
    assert set(create["required"]) == set(api.REQUIRED_FIELDS)
    assert document["paths"]["/meetings"]["post"]["requestBody"]["description"].endswith(
        f"at most {api.MAX_BODY_BYTES} bytes."
    )


def test_the_example_is_valid_today(client, document):
    example = document["paths"]["/meetings"]["post"]["requestBody"]["content"]["application/json"]["example"]
    _, plaintext = api_key_create(name="docs", plan=UsagePlan.objects.create(name="docs"))
    response = client.post(
        "/api/v1/meetings", json.dumps(example), "application/json", headers={"Authorization": f"Api-Key {plaintext}"}
    )
    assert response.status_code == 201, response.content


# --- every kind of answer is documented and validates ---------------------------------------------
def assert_documented(document: dict, path: str, method: str, response) -> None:
    operation = document["paths"][path][method]
    answer = operation["responses"].get(str(response.status_code))
    assert answer, f"{method.upper()} {path} answered {response.status_code}, which is not documented"
    for header, spec in answer.get("headers", {}).items():
        if spec.get("required"):
            assert response.has_header(header), f"{method.upper()} {path} {response.status_code}: no {header}"
    if "content" not in answer:
        assert not response.content
        return
    assert response["Content-Type"] == "application/json"
    schema = {**document, "$ref": answer["content"]["application/json"]["schema"]["$ref"]}
    jsonschema_rs.validator_for(schema).validate(response.json())


@time_machine.travel(NOW, tick=False)
def test_every_kind_of_answer_is_documented_and_validates(document):
    tight = UsagePlan.objects.create(name="tight", rate_per_second=0.001, burst=20, daily_quota=1000)
    _, plaintext = api_key_create(name="acme", plan=tight)
    client, auth = Client(), {"Authorization": f"Api-Key {plaintext}"}
    body = {"teacher_name": "Tina", "student_name": "Stu", "meet_time": "2026-11-21T15:00:00Z"}

    def post(data, content_type="application/json", headers=auth):
        response = client.post("/api/v1/meetings", data, content_type, headers=headers)
        assert_documented(document, "/meetings", "post", response)
        return response

    def on_meeting(method, meeting_id, headers=auth, query="", **body):
        url = f"/api/v1/meetings/{meeting_id}{query}"
        if body:
            response = client.patch(url, json.dumps(body), "application/json", headers=headers)
        else:
            response = getattr(client, method)(url, headers=headers)
        assert_documented(document, "/meetings/{meeting_id}", method, response)
        return response

    created = post(json.dumps(body))
    assert created.status_code == 201
    meeting_id = created.json()["id"]
    assert on_meeting("get", meeting_id).status_code == 200
    assert on_meeting("patch", meeting_id, duration_minutes=45).status_code == 200
    assert on_meeting("patch", meeting_id, room=1).status_code == 400
    assert on_meeting("delete", meeting_id, query="?scope=all").status_code == 400
    assert on_meeting("delete", meeting_id).status_code == 200
    launching = post(json.dumps(body)).json()["id"]
    Meeting.objects.filter(pk=launching).update(status=MeetingStatus.LAUNCHING)
    assert on_meeting("delete", launching).status_code == 409
    assert on_meeting("patch", launching, duration_minutes=30).status_code == 409
    series = post(json.dumps({**body, "repeat": {"weekly": 3}})).json()
    assert len(series["series"]["meetings"]) == 3
    assert on_meeting("delete", series["id"], query="?scope=following").status_code == 200
    assert post(json.dumps({**body, "time_zone": "America"})).status_code == 400
    assert post(json.dumps(body), "text/plain").status_code == 415
    assert post(json.dumps(body), headers={}).status_code == 401
    assert on_meeting("get", "zzzzzzzzzzzzzzzz").status_code == 404
    assert on_meeting("get", meeting_id, headers={"Authorization": "Api-Key elk_nope"}).status_code == 401
    assert_documented(document, "/meetings", "options", client.options("/api/v1/meetings"))
    assert_documented(document, "/meetings/{meeting_id}", "options", client.options(f"/api/v1/meetings/{meeting_id}"))
    while (response := on_meeting("get", meeting_id)).status_code != 429:
        assert response.status_code == 200
