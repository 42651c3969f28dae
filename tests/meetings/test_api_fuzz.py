"""Property-based fuzzing of /api/v1 against its own OpenAPI document (schemathesis, in-process WSGI).

Every operation of /api/v1/openapi.json is run with schemathesis' examples, coverage and fuzzing
phases, in valid (positive) and invalid (negative) inputs, then as a state machine that follows the
document's links (create -> read / cancel -> read). Each answer must be no 5xx and conform to the
document: a documented status code, content type, headers and body. The real database and Redis
serve every request (Django's WSGI application, the same code daphne runs), inside one test
transaction per test as with Django's test client.

``meet_time`` values are drawn around the scheduling window (and anywhere from year 1 to 9999) rather
than uniformly, so most valid bodies are accepted and the state machine reaches real meetings.
"""

import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from meetings.apikeys import api_key_create
from meetings.models import Meeting, UsagePlan

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Examples per operation in the fuzzing phase, and state-machine runs (each up to STEPS calls).
FUZZ_EXAMPLES = 300
STATEFUL_RUNS = 100
STEPS = 8
FUZZ_SETTINGS = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)

_NOW = datetime.now(UTC).replace(tzinfo=None)
_OFFSETS = ["Z", "+00:00", "+01:00", "+02:00", "-08:00", "+05:45", "+14:00", "-12:00", "-00:30"]
meet_times = st.builds(
    lambda moment, offset: moment.isoformat() + offset,
    st.one_of(
        st.datetimes(min_value=_NOW - timedelta(hours=1), max_value=_NOW + timedelta(days=367)),
        st.datetimes(),
    ),
    st.sampled_from(_OFFSETS),
)
schemathesis.openapi.format("date-time", meet_times)

schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", get_wsgi_application())
schema.config.generation.update(
    modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE],
    with_security_parameters=False,  # the key is sent with every call; tests/meetings/test_api.py covers 401
)


# (operation, status) -> answers, to show that the runs reach what they claim to.
ANSWERS: Counter = Counter()


@schema.hook
def after_call(context, case, response):
    ANSWERS[case.operation.label, response.status_code] += 1


@pytest.fixture
def authorization(db):
    """A key whose plan never limits, on a WSGI app that keeps the test's connection (as the test client)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    plan = UsagePlan.objects.create(name="fuzz", rate_per_second=1e6, burst=10**6, daily_quota=10**9)
    yield {"Authorization": f"Api-Key {api_key_create(name='fuzz', plan=plan)[1]}"}
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@schema.parametrize()
@FUZZ_SETTINGS
def test_every_operation_answers_as_documented(case, authorization):
    case.call_and_validate(headers=authorization, checks=CHECKS)


class ApiStateMachine(schema.as_state_machine()):
    headers: dict[str, str] = {}

    def get_call_kwargs(self, case):
        return {"headers": self.headers}

    def validate_response(self, response, case, additional_checks=None, **kwargs):
        case.validate_response(response, checks=CHECKS)


def test_create_read_cancel_sequences_answer_as_documented(authorization):
    ANSWERS.clear()
    ApiStateMachine.headers = authorization
    ApiStateMachine.run(
        settings=settings(
            FUZZ_SETTINGS,
            max_examples=STATEFUL_RUNS,
            stateful_step_count=STEPS,
            suppress_health_check=list(HealthCheck),
        )
    )
    # The machine reached real meetings through the links: created, read and cancelled them.
    reached = {key for key, count in ANSWERS.items() if count}
    assert {
        ("POST /meetings", 201),
        ("GET /meetings/{meeting_id}", 200),
        ("DELETE /meetings/{meeting_id}", 200),
    } <= reached
    assert Meeting.objects.filter(api_key__name="fuzz", status="CANCELLED").exists()


# --- what the document cannot make schemathesis send: any JSON, lone surrogates, raw bytes -----------
# Every code point, lone surrogates included, with the troublesome ones drawn often.
_SPECIAL = ["\ud800", "\udfff", "\u202e", "\u200b", "\ufeff", "\x00", "\n", "\x1b", "a", "é", "🐘"]
any_text = st.text(st.sampled_from(_SPECIAL) | st.characters(codec=None), max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | any_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=8,
)
field_values = {
    "teacher_name": any_text,
    "student_name": any_text,
    "meet_time": meet_times | any_text,
    "time_zone": st.sampled_from(["America", "Etc", "Europe/Berlin", "zone.tab", "\ud800", "UTC"]) | any_text,
    "duration_minutes": st.integers() | json_values,
    "teacher_email": any_text,
    "student_email": any_text,
}
# Mostly bodies that pass the JSON checks, so the values reach the rules and the database.
_names = st.text(st.sampled_from(["a", "b", "é", "🐘", "\ud800", "\u202e"]), min_size=1, max_size=12) | any_text
plausible = st.fixed_dictionaries(
    {"teacher_name": _names, "student_name": _names, "meet_time": meet_times},
    optional={name: field_values[name] for name in ("time_zone", "duration_minutes", "student_email")},
)
bodies = st.one_of(
    plausible.map(json.dumps),
    st.fixed_dictionaries({}, optional={**field_values, "extra": json_values}).map(json.dumps),
    json_values.map(json.dumps),
    st.binary(max_size=200),
)


@given(body=bodies)
@settings(FUZZ_SETTINGS, max_examples=400)
def test_any_body_is_answered_without_a_5xx(authorization, body):
    response = Client().post("/api/v1/meetings", body, "application/json", headers=authorization)
    # An empty body: Django's test client then sends no Content-Type, so 415.
    assert response.status_code in ((201, 400) if body else (415,)), (response.status_code, body)
    assert response.json()["id" if response.status_code == 201 else "error"]
