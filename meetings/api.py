"""The integrators' JSON API: create, read and cancel meetings with an API key.

Every response is JSON and carries the configured CORS origin. Errors read
``{"error": "<summary>"}``; a 400 adds ``"errors": {"<field>": ["<message>", ...]}``.
Anything a caller can send is answered with a 4xx, never a 500.
"""

import codecs
import json
from datetime import UTC, datetime
from functools import wraps
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.cache import patch_vary_headers
from django.views.decorators.csrf import csrf_exempt

from meetings.apikeys import AUTH_SCHEME, ApiKeyError, api_key_authenticate
from meetings.links import meeting_links
from meetings.models import MEETING_ID_LENGTH, Meeting, MeetingStatus
from meetings.ratelimit import DAILY_QUOTA, rate_limit_hit
from meetings.schedule import MEET_TIME_EXAMPLE, schedule_clean
from meetings.services import meeting_cancel, meeting_schedule

MAX_BODY_BYTES = 16 * 1024
JSON_CONTENT_TYPES = ("application/json",)

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
    charset = request.content_params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        return None, _error(415, f"Send the body in UTF-8 ('charset=utf-8' or none; got {charset!r}).")
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
    # UTF-8 only: json.loads would take bytes in UTF-16 or UTF-32 (or with a BOM) as well.
    if body.startswith((codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in body:
        problem = "a byte order mark or NUL bytes (UTF-16 or UTF-32?)"
        return None, _invalid({"body": [f"Send the body in UTF-8, without {problem}."]}, "The body is not UTF-8.")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as problem:
        message = f"Send the body in UTF-8 (byte {problem.start} is not UTF-8)."
        return None, _invalid({"body": [message]}, "The body is not UTF-8.")
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as problem:
        detail = "nested too deeply" if isinstance(problem, RecursionError) else str(problem)
        return None, _invalid({"body": [f"Malformed JSON: {detail}."]}, "The body is not valid JSON.")
    if not isinstance(data, dict):
        return None, _invalid({"body": ["Send a JSON object."]}, "The body must be a JSON object.")
    return data, None


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


# The body's JSON types; the values themselves are judged by the one definition (meetings.schedule).
_MUST_BE_A_STRING = "Must be a string."
_JSON_TYPES: dict[str, tuple[type, str]] = {
    "teacher_name": (str, _MUST_BE_A_STRING),
    "student_name": (str, _MUST_BE_A_STRING),
    "teacher_email": (str, _MUST_BE_A_STRING),
    "student_email": (str, _MUST_BE_A_STRING),
    "meet_time": (str, f"Must be an ISO 8601 string ({MEET_TIME_EXAMPLE})."),
    "time_zone": (str, "Must be a string naming an IANA time zone, such as Europe/Berlin."),
    "duration_minutes": (int, "Must be a whole number of minutes."),
}
_NAMES = ("teacher_name", "student_name")
# What null or a left-out optional field means.
_DEFAULTS = {"teacher_email": "", "student_email": "", "time_zone": "UTC", "duration_minutes": 60}


def _json_type_problem(name: str, value: Any) -> str | None:
    expected, message = _JSON_TYPES[name]
    if isinstance(value, bool) or not isinstance(value, expected):
        return message
    if name in _NAMES and not value.strip():
        # JSON tells a blank value from a missing one ("This field is required."); a page cannot.
        return "This field may not be blank."
    return None


def parse_meeting_request(data: dict) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Clean a POST body into ``meeting_schedule`` arguments, or per-field errors."""
    errors: dict[str, list[str]] = {}
    for name in sorted(data.keys() - {*REQUIRED_FIELDS, *OPTIONAL_FIELDS}):
        errors[name] = ["Unknown field."]
    typed: dict[str, Any] = {}
    for name in _JSON_TYPES:
        value = data.get(name)
        if value is None and name in _DEFAULTS:
            typed[name] = _DEFAULTS[name]
        elif name in REQUIRED_FIELDS and name not in data:
            errors[name] = ["This field is required."]
        elif problem := _json_type_problem(name, value):
            errors[name] = [problem]
        else:
            typed[name] = value
    cleaned, problems = schedule_clean(typed)
    return cleaned, errors | problems


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
