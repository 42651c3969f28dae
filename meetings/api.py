"""The integrators' JSON API: create, read and cancel meetings with an API key.

Every response is JSON and carries the configured CORS origin. Errors read
``{"error": "<summary>"}``; a 400 adds ``"errors": {"<field>": ["<message>", ...]}``.
Anything a caller can send is answered with a 4xx, never a 500.
"""

import json
import unicodedata
from datetime import UTC, datetime
from functools import wraps
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.views.decorators.csrf import csrf_exempt

from meetings.apikeys import AUTH_SCHEME, ApiKeyError, api_key_authenticate
from meetings.links import meeting_links
from meetings.models import MEETING_ID_LENGTH, Meeting, MeetingStatus
from meetings.ratelimit import DAILY_QUOTA, rate_limit_hit
from meetings.services import meeting_cancel, meeting_schedule, meeting_schedule_validate

MAX_BODY_BYTES = 16 * 1024
JSON_CONTENT_TYPES = ("application/json",)
NAME_MAX_LENGTH = Meeting._meta.get_field("teacher_name").max_length
EMAIL_MAX_LENGTH = Meeting._meta.get_field("teacher_email").max_length
TIME_ZONE_MAX_LENGTH = Meeting._meta.get_field("time_zone").max_length
MEET_TIME_MAX_LENGTH = 64

REQUIRED_FIELDS = ("teacher_name", "student_name", "meet_time")
OPTIONAL_FIELDS = ("teacher_email", "student_email", "time_zone", "duration_minutes")


# --- responses ----------------------------------------------------------------------------------
def _error(http_status: int, message: str, /, **extra: Any) -> JsonResponse:
    return JsonResponse({"error": message, **extra}, status=http_status)


def _invalid(errors: dict[str, list[str]], message: str = "The request body is invalid.") -> JsonResponse:
    return _error(400, message, errors=errors)


def _with_cors(response: HttpResponse) -> HttpResponse:
    origin = settings.ELEPHANT_CORS_ORIGIN
    response["Access-Control-Allow-Origin"] = origin
    response["Access-Control-Expose-Headers"] = "Retry-After, WWW-Authenticate, Location"
    if origin != "*":
        patch_vary_headers(response, ["Origin"])
    return response


def _iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def meeting_json(meeting: Meeting) -> dict[str, Any]:
    return {
        "id": meeting.id,
        "status": meeting.status,
        "meet_time": _iso_utc(meeting.meet_time),
        "time_zone": meeting.time_zone,
        "duration_minutes": meeting.duration_minutes,
        **meeting_links(meeting),
        "termination_reason": meeting.termination_reason or None,
    }


# --- the request pipeline shared by every endpoint ----------------------------------------------
def api_endpoint(*methods: str):
    """Preflight, method check, API key, rate limit; then ``handler(request, key, ...)``."""
    allow = ", ".join((*methods, "OPTIONS"))

    def decorator(handler):
        @csrf_exempt
        @wraps(handler)
        def view(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if request.method == "OPTIONS":
                response = HttpResponse(status=204)
                del response["Content-Type"]
                response["Allow"] = allow
                response["Access-Control-Allow-Methods"] = allow
                response["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
                response["Access-Control-Max-Age"] = "86400"
            elif request.method not in methods:
                response = _error(405, f"Method {request.method} is not allowed here; use {allow}.")
                response["Allow"] = allow
            else:
                response = _authorized(handler, request, *args, **kwargs)
            return _with_cors(response)

        return view

    return decorator


def _authorized(handler, request: HttpRequest, *args, **kwargs) -> HttpResponse:
    try:
        key = api_key_authenticate(authorization=request.headers.get("Authorization"))
    except ApiKeyError as refusal:
        response = _error(401, str(refusal))
        response["WWW-Authenticate"] = f'{AUTH_SCHEME} realm="elephant"'
        return response
    decision = rate_limit_hit(key=key)
    if not decision.allowed:
        if decision.limit == DAILY_QUOTA:
            message = f"Daily quota of {key.plan.daily_quota} requests used up; it resets at 00:00 UTC."
        else:
            message = (
                f"Rate limit exceeded: {key.plan.rate_per_second:g} requests per second "
                f"with bursts of {key.plan.burst}."
            )
        response = _error(429, message, limit=decision.limit, retry_after=decision.retry_after)
        response["Retry-After"] = str(decision.retry_after)
        return response
    return handler(request, key, *args, **kwargs)


# --- request body -------------------------------------------------------------------------------
def _read_json_object(request: HttpRequest) -> tuple[dict | None, JsonResponse | None]:
    content_type = request.content_type.lower() if request.content_type else ""
    if content_type not in JSON_CONTENT_TYPES:
        return None, _error(
            415, f"Send the body as JSON with 'Content-Type: application/json' (got {content_type or 'none'!r})."
        )
    too_big = f"The body is larger than {MAX_BODY_BYTES} bytes."
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > MAX_BODY_BYTES:
        return None, _invalid({"body": [too_big]}, too_big)
    body = request.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        return None, _invalid({"body": [too_big]}, too_big)
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as problem:
        detail = str(problem) if isinstance(problem, json.JSONDecodeError) else "not valid UTF-8 JSON"
        return None, _invalid({"body": [f"Malformed JSON: {detail}."]}, "The body is not valid JSON.")
    if not isinstance(data, dict):
        return None, _invalid({"body": ["Send a JSON object."]}, "The body must be a JSON object.")
    return data, None


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _clean_name(value: Any) -> tuple[str, str | None]:
    if not isinstance(value, str):
        return "", "Must be a string."
    value = value.strip()
    if not value:
        return "", "This field may not be blank."
    if len(value) > NAME_MAX_LENGTH:
        return "", f"At most {NAME_MAX_LENGTH} characters."
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        return "", "Control characters are not allowed."
    return value, None


def _clean_email(value: Any) -> tuple[str, str | None]:
    if value is None:
        return "", None
    if not isinstance(value, str):
        return "", "Must be a string."
    value = value.strip()
    if not value:
        return "", None
    if len(value) > EMAIL_MAX_LENGTH:
        return "", f"At most {EMAIL_MAX_LENGTH} characters."
    try:
        validate_email(value)
    except ValidationError:
        return "", "Enter a valid email address."
    return value, None


def _clean_meet_time(value: Any) -> tuple[datetime | None, str | None]:
    example = "for example 2026-11-21T15:00:00Z or 2026-11-21T16:00:00+01:00"
    if not isinstance(value, str):
        return None, f"Must be an ISO 8601 string ({example})."
    if len(value) > MEET_TIME_MAX_LENGTH:
        return None, "Too long for a date and time."
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None, f"Not an ISO 8601 date and time ({example})."
    if moment.tzinfo is None or moment.utcoffset() is None:
        return None, f"Give the time with its UTC offset or Z ({example})."
    try:
        utc = moment.astimezone(UTC)
    except OverflowError:
        return None, "Out of range."
    if utc.year >= 9999:
        return None, "Out of range."
    return moment, None


def _clean_time_zone(value: Any) -> tuple[str, str | None]:
    if value is None:
        return "UTC", None
    if not isinstance(value, str):
        return "", "Must be a string naming an IANA time zone, such as Europe/Berlin."
    if not value or len(value) > TIME_ZONE_MAX_LENGTH or "\x00" in value:
        return "", "Unknown time zone; use an IANA name such as Europe/Berlin."
    return value, None


def _clean_duration(value: Any) -> tuple[int, str | None]:
    if value is None:
        return 60, None
    if isinstance(value, bool) or not isinstance(value, int):
        return 0, "Must be a whole number of minutes."
    return value, None


def parse_meeting_request(data: dict) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Clean a POST body into ``meeting_schedule`` arguments, or per-field errors."""
    errors: dict[str, list[str]] = {}
    for name in sorted(data.keys() - {*REQUIRED_FIELDS, *OPTIONAL_FIELDS}):
        errors[name] = ["Unknown field."]
    for name in REQUIRED_FIELDS:
        if name not in data:
            errors[name] = ["This field is required."]
    cleaners = {
        "teacher_name": _clean_name,
        "student_name": _clean_name,
        "teacher_email": _clean_email,
        "student_email": _clean_email,
        "meet_time": _clean_meet_time,
        "time_zone": _clean_time_zone,
        "duration_minutes": _clean_duration,
    }
    cleaned: dict[str, Any] = {}
    for name, clean in cleaners.items():
        if name in errors:
            continue
        cleaned[name], problem = clean(data.get(name))
        if problem:
            errors[name] = [problem]
    # The service's own rules (past times, zone, duration range) for whatever is well-formed so far.
    fallbacks = {"meet_time": timezone.now(), "time_zone": "UTC", "duration_minutes": 60}
    rules = meeting_schedule_validate(
        **{name: fallback if name in errors else cleaned[name] for name, fallback in fallbacks.items()}
    )
    for name, problem in rules.items():
        if name not in errors:
            errors[name] = [problem]
    return cleaned, errors


# --- endpoints ----------------------------------------------------------------------------------
@api_endpoint("POST")
def meetings_collection(request: HttpRequest, key) -> HttpResponse:
    data, refusal = _read_json_object(request)
    if refusal:
        return refusal
    cleaned, errors = parse_meeting_request(data)
    if errors:
        return _invalid(errors)
    try:
        meeting = meeting_schedule(**cleaned, api_key=key, actor=f"api:{key.name}")
    except ValidationError as invalid:
        # The clock moved between our check and the service's.
        return _invalid({name: list(messages) for name, messages in invalid.message_dict.items()})
    response = JsonResponse(meeting_json(meeting), status=201)
    response["Location"] = f"{settings.ELEPHANT_PUBLIC_URL}/api/v1/meetings/{meeting.id}"
    return response


@api_endpoint("GET", "DELETE")
def meeting_detail(request: HttpRequest, key, meeting_id: str) -> HttpResponse:
    # Another key's meeting is answered exactly like a missing one: ids are not probeable.
    meeting = None
    if len(meeting_id) == MEETING_ID_LENGTH:
        meeting = Meeting.objects.filter(pk=meeting_id, api_key=key).first()
    if meeting is None:
        return _error(404, f"No meeting {meeting_id!r} for this API key.")
    if request.method == "DELETE" and not meeting_cancel(meeting=meeting, actor=f"api:{key.name}"):
        meeting.refresh_from_db()
        if meeting.status != MeetingStatus.CANCELLED:
            return _error(
                409,
                f"The meeting is {meeting.status} and can no longer be cancelled; "
                "only SCHEDULED meetings (before their desktops start launching) can be.",
                status=meeting.status,
            )
    return JsonResponse(meeting_json(meeting))


@csrf_exempt
def not_found(request: HttpRequest, path: str = "") -> HttpResponse:
    return _with_cors(_error(404, "No such API endpoint; see /api/v1/meetings."))
