"""The OpenAPI 3.1 description of the integrators' API (/api/v1), served at /api/v1/openapi.json.

Written by hand, next to the code it describes, and kept true by tests/meetings/test_openapi.py
(every route under /api/v1 is in it with exactly the methods the route allows; it is a valid
OpenAPI 3.1 document; the answers of the real API validate against it) and by the schemathesis run
in tests/meetings/test_api_fuzz.py. The limits it states are read from the settings when it is
served, so it says what this deployment enforces. Human-readable: docs/api.md.
"""

from datetime import UTC, timedelta
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from meetings.api import MAX_BODY_BYTES
from meetings.models import MEETING_ID_REGEX, Meeting, MeetingStatus, TerminationReason
from meetings.schedule import EMAIL_MAX_LENGTH, MEET_TIME_MAX_LENGTH, NAME_MAX_LENGTH, TIME_ZONE_MAX_LENGTH


def _json(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def _response(description: str, schema: str | None = None, headers: dict | None = None) -> dict:
    answer: dict[str, Any] = {"description": description}
    if schema:
        answer["content"] = _json({"$ref": f"#/components/schemas/{schema}"})
    if headers:
        answer["headers"] = headers
    return answer


_CORS = {
    "Access-Control-Allow-Origin": {
        "description": "ELEPHANT_CORS_ORIGIN (default *).",
        "schema": {"type": "string"},
    }
}
_UNAUTHORIZED = _response(
    "Missing, malformed, unknown or deactivated API key.",
    "Error",
    {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}},
)
_RATE_LIMITED = _response(
    "The key's rate (token bucket) or daily quota is used up.",
    "RateLimited",
    {"Retry-After": {"description": "Whole seconds to wait.", "schema": {"type": "string"}, "required": True}},
)
_INVALID = _response("The body or a field is invalid; every problem at once, per field.", "Invalid")
_NOT_FOUND = _response("No such meeting for this key (another key's meeting and an unknown id look the same).", "Error")
_PREFLIGHT = {
    "summary": "CORS preflight",
    "security": [],
    "responses": {
        "204": {
            "description": "The methods and headers a browser may use here.",
            "headers": {
                "Allow": {"schema": {"type": "string"}, "required": True},
                "Access-Control-Allow-Methods": {"schema": {"type": "string"}, "required": True},
                "Access-Control-Allow-Headers": {"schema": {"type": "string"}, "required": True},
                "Access-Control-Max-Age": {"schema": {"type": "string"}, "required": True},
            },
        }
    },
}
_ID_FROM_BODY = {"meeting_id": "$response.body#/id"}
_MEETING_ID = {
    "name": "meeting_id",
    "in": "path",
    "required": True,
    "description": "The id the meeting was created with (16 lowercase letters and digits).",
    "schema": {"type": "string", "pattern": MEETING_ID_REGEX},
}


def openapi_schema() -> dict[str, Any]:
    """The document, with this deployment's limits and address (and an example that is valid today)."""
    tomorrow = (timezone.now() + timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    example = {
        "teacher_name": "Tina Teacher",
        "student_name": "Stu Student",
        "meet_time": tomorrow.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "time_zone": "Europe/Berlin",
        "duration_minutes": 45,
    }
    name = {"type": "string", "minLength": 1, "maxLength": NAME_MAX_LENGTH}
    email = {"type": ["string", "null"], "maxLength": EMAIL_MAX_LENGTH, "description": "A valid address, or empty."}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Elephant integrator API",
            "version": "1",
            "description": (
                "Schedule (once or weekly), read, reschedule and cancel tutoring sessions with an API key. "
                "Every answer is JSON. "
                'Errors read {"error": ...}; a 400 adds {"errors": {field: [message, ...]}}. '
                "Nothing a caller sends is answered with a 5xx. See docs/api.md."
            ),
        },
        "servers": [{"url": f"{settings.ELEPHANT_PUBLIC_URL}/api/v1"}],
        "security": [{"ApiKey": []}],
        "paths": {
            "/meetings": {
                "post": {
                    "operationId": "createMeeting",
                    "summary": "Schedule a meeting",
                    "requestBody": {
                        "required": True,
                        "description": f"A JSON object in UTF-8, at most {MAX_BODY_BYTES} bytes.",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/MeetingCreate"},
                                "example": example,
                            }
                        },
                    },
                    "responses": {
                        "201": {
                            **_response(
                                "Scheduled.",
                                "Meeting",
                                {"Location": {"schema": {"type": "string"}, "required": True}, **_CORS},
                            ),
                            "links": {
                                "GetMeeting": {"operationId": "getMeeting", "parameters": _ID_FROM_BODY},
                                "RescheduleMeeting": {"operationId": "rescheduleMeeting", "parameters": _ID_FROM_BODY},
                                "CancelMeeting": {"operationId": "cancelMeeting", "parameters": _ID_FROM_BODY},
                            },
                        },
                        "400": _INVALID,
                        "401": _UNAUTHORIZED,
                        "415": _response("Not 'Content-Type: application/json' (charset utf-8 or none).", "Error"),
                        "429": _RATE_LIMITED,
                    },
                },
                "options": {**_PREFLIGHT, "operationId": "preflightMeetings"},
            },
            "/meetings/{meeting_id}": {
                "parameters": [_MEETING_ID],
                "get": {
                    "operationId": "getMeeting",
                    "summary": "Read a meeting",
                    "responses": {
                        "200": _response("The meeting.", "Meeting", _CORS),
                        "401": _UNAUTHORIZED,
                        "404": _NOT_FOUND,
                        "429": _RATE_LIMITED,
                    },
                },
                "patch": {
                    "operationId": "rescheduleMeeting",
                    "summary": "Move a meeting that is still SCHEDULED (any of meet_time, duration_minutes, time_zone)",
                    "requestBody": {
                        "required": True,
                        "description": f"A JSON object in UTF-8, at most {MAX_BODY_BYTES} bytes.",
                        "content": _json({"$ref": "#/components/schemas/MeetingReschedule"}),
                    },
                    "responses": {
                        "200": _response("Rescheduled.", "Meeting", _CORS),
                        "400": _INVALID,
                        "401": _UNAUTHORIZED,
                        "404": _NOT_FOUND,
                        "409": _response("Launching has started or the meeting has ended.", "Conflict"),
                        "415": _response("Not 'Content-Type: application/json' (charset utf-8 or none).", "Error"),
                        "429": _RATE_LIMITED,
                    },
                },
                "delete": {
                    "operationId": "cancelMeeting",
                    "summary": "Cancel a meeting that is still SCHEDULED (idempotent)",
                    "parameters": [
                        {
                            "name": "scope",
                            "in": "query",
                            "required": False,
                            "description": "following: also every later week of its series that is still SCHEDULED.",
                            "schema": {"type": "string", "enum": ["following"]},
                        }
                    ],
                    "responses": {
                        "200": {
                            **_response("Cancelled (now or before).", "Meeting", _CORS),
                            "links": {"GetMeeting": {"operationId": "getMeeting", "parameters": _ID_FROM_BODY}},
                        },
                        "401": _UNAUTHORIZED,
                        "400": _INVALID,
                        "404": _NOT_FOUND,
                        "409": _response("Launching has started or the meeting has ended.", "Conflict"),
                        "429": _RATE_LIMITED,
                    },
                },
                "options": {**_PREFLIGHT, "operationId": "preflightMeeting"},
            },
            "/openapi.json": {
                "get": {
                    "operationId": "getOpenApi",
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": {"description": "OpenAPI 3.1.", "content": _json({"type": "object"})}},
                }
            },
        },
        "components": {
            "securitySchemes": {
                "ApiKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "'Authorization: Api-Key <key>' (the scheme name is case-insensitive).",
                }
            },
            "schemas": {
                "MeetingCreate": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["teacher_name", "student_name", "meet_time"],
                    "properties": {
                        "teacher_name": {
                            **name,
                            "description": (
                                f"1 to {NAME_MAX_LENGTH} characters after trimming; no control characters, "
                                "no invisible formatting characters (Unicode Cf), no lone surrogates."
                            ),
                        },
                        "student_name": {**name, "description": "The same rules as teacher_name."},
                        "meet_time": {
                            "type": "string",
                            "format": "date-time",
                            "maxLength": MEET_TIME_MAX_LENGTH,
                            "description": (
                                "ISO 8601 with a UTC offset or Z; from "
                                f"{settings.ELEPHANT_PAST_TOLERANCE_MINUTES} minutes in the past to "
                                f"{settings.ELEPHANT_MAX_SCHEDULE_AHEAD_DAYS} days ahead."
                            ),
                        },
                        "time_zone": {
                            "type": ["string", "null"],
                            "maxLength": TIME_ZONE_MAX_LENGTH,
                            "default": "UTC",
                            "description": "An IANA zone name such as Europe/Berlin (not a region such as America).",
                        },
                        "duration_minutes": {
                            "type": ["integer", "null"],
                            "minimum": 1,
                            "maximum": settings.ELEPHANT_MAX_DURATION_MINUTES,
                            "default": 60,
                        },
                        "teacher_email": email,
                        "student_email": email,
                        "desktop_profile": {
                            "type": ["string", "null"],
                            "maxLength": Meeting._meta.get_field("desktop_profile").max_length,
                            "description": "The name of a desktop profile this deployment offers; empty: the default.",
                        },
                        "repeat": {
                            "type": ["object", "null"],
                            "description": "Weekly occurrences, the first at meet_time; left out or null: once.",
                            "additionalProperties": False,
                            "required": ["weekly"],
                            "properties": {
                                "weekly": {
                                    "type": "integer",
                                    "minimum": 1,
                                    "maximum": settings.ELEPHANT_MAX_SERIES_WEEKS,
                                }
                            },
                        },
                    },
                },
                "MeetingReschedule": {
                    "type": "object",
                    "additionalProperties": False,
                    "minProperties": 1,
                    "properties": {
                        "meet_time": {
                            "type": "string",
                            "format": "date-time",
                            "maxLength": MEET_TIME_MAX_LENGTH,
                            "description": "The same rules as when scheduling.",
                        },
                        "time_zone": {"type": "string", "maxLength": TIME_ZONE_MAX_LENGTH},
                        "duration_minutes": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": settings.ELEPHANT_MAX_DURATION_MINUTES,
                        },
                    },
                },
                "Meeting": {
                    "type": "object",
                    "required": [
                        "id",
                        "status",
                        "meet_time",
                        "time_zone",
                        "duration_minutes",
                        "teacher_link",
                        "student_link",
                        "room_url",
                        "termination_reason",
                        "series",
                    ],
                    "properties": {
                        "id": {"type": "string", "pattern": MEETING_ID_REGEX},
                        "status": {"type": "string", "enum": list(MeetingStatus.values)},
                        "meet_time": {"type": "string", "format": "date-time", "description": "UTC, with a Z."},
                        "time_zone": {"type": "string"},
                        "duration_minutes": {"type": "integer", "minimum": 1},
                        "teacher_link": {"type": "string", "description": "The teacher's join link."},
                        "student_link": {"type": "string", "description": "The student's join link."},
                        "room_url": {"type": "string", "description": "The video room (a token is added per role)."},
                        "termination_reason": {"enum": [*TerminationReason.values, None]},
                        "series": {
                            "description": "The weekly series the meeting belongs to (week 1 is the first), or null.",
                            "oneOf": [
                                {"type": "null"},
                                {
                                    "type": "object",
                                    "required": ["id", "week"],
                                    "properties": {
                                        "id": {"type": "integer"},
                                        "week": {"type": "integer", "minimum": 1},
                                        "meetings": {
                                            "description": "On creation only: every occurrence, in order.",
                                            "type": "array",
                                            "items": {"$ref": "#/components/schemas/Meeting"},
                                        },
                                    },
                                },
                            ],
                        },
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string", "minLength": 1}},
                },
                "Invalid": {
                    "type": "object",
                    "required": ["error", "errors"],
                    "properties": {
                        "error": {"type": "string", "minLength": 1},
                        "errors": {
                            "type": "object",
                            "minProperties": 1,
                            "description": "Field name (or 'body') -> its problems.",
                            "additionalProperties": {
                                "type": "array",
                                "minItems": 1,
                                "items": {"type": "string", "minLength": 1},
                            },
                        },
                    },
                },
                "Conflict": {
                    "type": "object",
                    "required": ["error", "status"],
                    "properties": {
                        "error": {"type": "string", "minLength": 1},
                        "status": {"type": "string", "enum": list(MeetingStatus.values)},
                    },
                },
                "RateLimited": {
                    "type": "object",
                    "required": ["error", "limit", "retry_after"],
                    "properties": {
                        "error": {"type": "string", "minLength": 1},
                        "limit": {"type": "string"},
                        "retry_after": {"type": "integer", "minimum": 1},
                    },
                },
            },
        },
    }


@csrf_exempt
def openapi_json(request: HttpRequest) -> JsonResponse:
    """GET /api/v1/openapi.json: public (no key), like the docs."""
    if request.method in ("GET", "HEAD"):
        response = JsonResponse(openapi_schema(), json_dumps_params={"indent": 1})
    else:
        response = JsonResponse({"error": f"Method {request.method} is not allowed here; use GET."}, status=405)
        response["Allow"] = "GET, HEAD"
    response["Access-Control-Allow-Origin"] = settings.ELEPHANT_CORS_ORIGIN
    return response
