"""The integrators' JSON API: create (once or weekly), read, reschedule and cancel meetings with an API key.

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
from meetings.services import meeting_cancel, meeting_reschedule, meeting_series_cancel, meeting_series_schedule

MAX_BODY_BYTES = 16 * 1024
JSON_CONTENT_TYPES = ("application/json",)

REQUIRED_FIELDS = ("teacher_name", "student_name", "meet_time")
OPTIONAL_FIELDS = ("teacher_email", "student_email", "time_zone", "duration_minutes", "desktop_profile", "repeat")


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
        "series": {"id": meeting.series_id, "week": meeting.series_index} if meeting.series_id else None,
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
    "desktop_profile": (str, "Must be a string naming a desktop profile."),
}
_NAMES = ("teacher_name", "student_name")
# What null or a left-out optional field means.
_DEFAULTS = {
    "teacher_email": "",
    "student_email": "",
    "time_zone": "UTC",
    "duration_minutes": 60,
    "desktop_profile": "",
}


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


REPEAT_FIELD = "repeat"  # read by parse_repeat, not by parse_meeting_request
_REPEAT_SHAPE = 'Must be an object {"weekly": N}: N weekly occurrences, the first at meet_time.'


def parse_repeat(value: Any) -> tuple[int, list[str]]:
    """``"repeat": {"weekly": N}`` -> N weeks (1 when left out or null), or its problems."""
    if value is None:
        return 1, []
    if not isinstance(value, dict) or set(value) != {"weekly"}:
        return 1, [_REPEAT_SHAPE]
    weeks = value["weekly"]
    if isinstance(weeks, bool) or not isinstance(weeks, int):
        return 1, ["weekly must be a whole number of weeks."]
    maximum = settings.ELEPHANT_MAX_SERIES_WEEKS
    if not 1 <= weeks <= maximum:
        return 1, [f"Repeat weekly for 1 to {maximum} weeks."]
    return weeks, []


RESCHEDULE_FIELDS = ("meet_time", "duration_minutes", "time_zone")


def parse_reschedule_request(data: dict) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Clean a PATCH body (any of ``RESCHEDULE_FIELDS``) into ``meeting_reschedule`` arguments, or errors."""
    errors: dict[str, list[str]] = {}
    for name in sorted(data.keys() - set(RESCHEDULE_FIELDS)):
        errors[name] = [f"Cannot be changed; a PATCH changes only {', '.join(RESCHEDULE_FIELDS)}."]
    if not data.keys() & set(RESCHEDULE_FIELDS) and not errors:
        errors["body"] = [f"Send at least one of {', '.join(RESCHEDULE_FIELDS)}."]
    typed = {}
    for name in RESCHEDULE_FIELDS:
        if name not in data:
            continue
        if data[name] is None:
            errors[name] = ["May not be null; leave the field out to keep it."]
        elif problem := _json_type_problem(name, data[name]):
            errors[name] = [problem]
        else:
            typed[name] = data[name]
    cleaned, problems = schedule_clean(typed)
    return cleaned, errors | problems


def _invalid_from(invalid: ValidationError) -> JsonResponse:
    return _invalid({name: list(messages) for name, messages in invalid.message_dict.items()})


# --- endpoints ----------------------------------------------------------------------------------
@api_endpoint("POST")
def meetings_collection(request: HttpRequest, key) -> HttpResponse:
    data, refusal = _read_json_object(request)
    if refusal:
        return refusal
    weeks, repeat_errors = parse_repeat(data.pop(REPEAT_FIELD, None))
    cleaned, errors = parse_meeting_request(data)
    if repeat_errors:
        errors[REPEAT_FIELD] = repeat_errors
    if errors:
        return _invalid(errors)
    try:
        meetings = meeting_series_schedule(**cleaned, weeks=weeks, api_key=key, actor=f"api:{key.name}")
    except ValidationError as invalid:
        # A series reaching too far ahead, or the clock moved between our check and the service's.
        return _invalid_from(invalid)
    body = meeting_json(meetings[0])
    if meetings[0].series_id:
        body["series"]["meetings"] = [meeting_json(meeting) for meeting in meetings]
    response = JsonResponse(body, status=201)
    response["Location"] = f"{settings.ELEPHANT_PUBLIC_URL}/api/v1/meetings/{meetings[0].id}"
    return response


def _not_scheduled(meeting: Meeting, action: str) -> JsonResponse:
    return _error(
        409,
        f"The meeting is {meeting.status} and can no longer be {action}; "
        "only SCHEDULED meetings (before their desktops start launching) can be.",
        status=meeting.status,
    )


def _reschedule(request: HttpRequest, key, meeting: Meeting) -> HttpResponse:
    data, refusal = _read_json_object(request)
    if refusal:
        return refusal
    cleaned, errors = parse_reschedule_request(data)
    if errors:
        return _invalid(errors)
    try:
        moved = meeting_reschedule(meeting=meeting, actor=f"api:{key.name}", **cleaned)
    except ValidationError as invalid:
        return _invalid_from(invalid)
    if not moved:
        meeting.refresh_from_db()
        return _not_scheduled(meeting, "rescheduled")
    return JsonResponse(meeting_json(meeting))


@api_endpoint("GET", "PATCH", "DELETE")
def meeting_detail(request: HttpRequest, key, meeting_id: str) -> HttpResponse:
    # Another key's meeting is answered exactly like a missing one: ids are not probeable.
    meeting = None
    if len(meeting_id) == MEETING_ID_LENGTH:
        meeting = Meeting.objects.filter(pk=meeting_id, api_key=key).first()
    if meeting is None:
        return _error(404, f"No meeting {meeting_id!r} for this API key.")
    if request.method == "PATCH":
        return _reschedule(request, key, meeting)
    scope = request.GET.get("scope")
    if request.method == "DELETE" and scope not in (None, "following"):
        return _invalid({"scope": ["Leave it out (this meeting) or use scope=following (and every later week)."]})
    if request.method == "DELETE" and scope == "following":
        # This occurrence and every later one of its series that is still SCHEDULED.
        meeting_series_cancel(meeting=meeting, actor=f"api:{key.name}")
        meeting.refresh_from_db()
    if request.method == "DELETE" and not meeting_cancel(meeting=meeting, actor=f"api:{key.name}"):
        meeting.refresh_from_db()
        if meeting.status != MeetingStatus.CANCELLED:
            return _not_scheduled(meeting, "cancelled")
    return JsonResponse(meeting_json(meeting))


@csrf_exempt
def not_found(request: HttpRequest, path: str = "") -> HttpResponse:
    return _with_cors(_error(404, "No such API endpoint; see /api/v1/meetings."))
