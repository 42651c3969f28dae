"""The desktop's doors: the join endpoint that hands a participant their DCV link, and DCV
external authentication.

Join: ``GET /join/<meeting_id>/<role>?t=<token>`` (ARCHITECTURE.md section 6, docs/api.md). It
lives in the fleet because it hands out the fleet's desktop; what it says is meetings' data.

DCV external authentication: ``POST /dcv/auth/<instance_id>`` (ARCHITECTURE.md section 6). A
successful one is a participant reaching the desktop, so it is what starts the session
(``meeting_start_on_join``); the join endpoint only hands out links and never starts one.

Each host's DCV server is configured (by its agent, at boot) with
``auth-token-verifier="<ELEPHANT_PUBLIC_URL>/dcv/auth/<its instance id>"``, so the verifier
URL names the host asking. A token is accepted only when it was issued for that very
instance (and so for that meeting and role), that instance is still the role's live host,
and the token has not been spent or expired. ``POST /dcv/auth?instance=<id>`` is the same;
a request that names no instance cannot be bound to a host and is refused.
"""

import logging
import re
from xml.sax.saxutils import escape

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from elephant.logs import log_safe
from fleet.dcv import DcvTokenRejected, dcv_token_issue, dcv_token_redeem
from fleet.models import LIVE_HOST_STATES, Host
from fleet.selectors import meeting_get_for_join
from meetings.access import (
    BAD_TOKEN,
    EXPIRED,
    TOO_EARLY,
    participant_access,
    participant_credentials,
    refusal_message,
)
from meetings.links import room_link
from meetings.models import MEETING_ID_REGEX, READY_STATUSES, TERMINAL_STATUSES, MeetingStatus, Role
from meetings.progress import WAITING_MESSAGES, progress_steps
from meetings.services import meeting_start_on_join
from meetings.views import wants_json

logger = logging.getLogger(__name__)

MAX_TOKEN_LENGTH = 2048
_MEETING_ID = re.compile(MEETING_ID_REGEX)


# --- the join endpoint ---------------------------------------------------------------------


def _join_response(request, status: int, payload: dict, context: dict | None = None) -> HttpResponse:
    if wants_json(request):
        response = JsonResponse(payload, status=status)
    else:
        page = {"status_code": status, "payload": payload, **(context or {})}
        response = render(request, "meetings/join.html", page, status=status)
    response["Access-Control-Allow-Origin"] = settings.ELEPHANT_CORS_ORIGIN
    response["Vary"] = "Accept"
    return response


@never_cache
@require_GET
def join(request, meeting_id: str, role: str):
    """GET /join/{meeting_id}/{role}?t={token} — ARCHITECTURE.md section 6."""
    if role not in Role.values or not _MEETING_ID.match(meeting_id):
        return _join_response(request, 400, {"message": "Invalid meeting ID or role."})
    meeting = meeting_get_for_join(meeting_id=meeting_id, role=role)
    if meeting is None:
        return _join_response(request, 404, {"message": "Meeting not found."})
    token = request.GET.get("t")
    credentials = participant_credentials(meeting_id=meeting_id, role=role, token=token)
    if credentials is None:
        return _join_response(request, 403, {"message": refusal_message(BAD_TOKEN), "code": BAD_TOKEN})
    access = participant_access(meeting=meeting, credentials=credentials)
    context = {
        "meeting": meeting,
        "role": role,
        "token": token,
        "auto_redirect": settings.ELEPHANT_AUTO_REDIRECT,
        "room_link": room_link(meeting_id=meeting.id, role=role),
        "steps": progress_steps(meeting.status, link_ready=bool(meeting.role_dcv_link)),
    }
    if access.window == TOO_EARLY:
        payload = {
            "message": refusal_message(TOO_EARLY),
            "code": TOO_EARLY,
            "opens_at": meeting.join_opens_at.isoformat(),
            "status": meeting.status,
        }
        return _join_response(request, 403, payload, context)
    if access.window == EXPIRED:
        payload = {"message": refusal_message(EXPIRED), "code": EXPIRED, "status": meeting.status}
        return _join_response(request, 403, payload, context)

    link = meeting.role_dcv_link
    if meeting.status not in READY_STATUSES or not link:
        payload = {
            "message": WAITING_MESSAGES.get(meeting.status, WAITING_MESSAGES[MeetingStatus.HEALTHY]),
            "status": meeting.status,
            "final": meeting.is_terminal,
        }
        return _join_response(request, 202, payload, context)

    # Handing out the link starts nothing: a link-preview bot or the waiting room's own poll gets it
    # too. The session starts when a participant signs in to the desktop (dcv_auth below).
    auth_token = dcv_token_issue(meeting_id=meeting.id, role=role, instance_id=meeting.role_instance_id or "")
    dcv_url = f"{link}?authToken={auth_token}#{settings.ELEPHANT_DCV_SESSION_ID}"
    return _join_response(request, 200, {"dcv_url": dcv_url, "status": meeting.status}, context)


# --- DCV external authentication ------------------------------------------------------------


def _auth_answer(*, username: str = "", refusal: str = "") -> HttpResponse:
    if username:
        body = f'<auth result="yes"><username>{escape(username)}</username></auth>'
    else:
        body = f'<auth result="no"><message>{escape(refusal)}</message></auth>'
    return HttpResponse(body, content_type="text/xml; charset=utf-8")


@csrf_exempt
@require_POST
def dcv_auth(request, instance_id: str = ""):
    instance_id = instance_id or request.GET.get("instance", "")
    token = request.POST.get("authenticationToken", "")
    client = request.POST.get("clientAddress", "") or "?"
    if not instance_id:
        return _auth_answer(refusal="The verifier URL names no instance.")
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return _auth_answer(refusal="No valid authentication token.")
    try:
        grant = dcv_token_redeem(token=token, instance_id=instance_id)
    except DcvTokenRejected as exc:
        logger.info("DCV auth refused for %s from %s: %s", log_safe(instance_id), log_safe(client), exc)
        return _auth_answer(refusal=f"Authentication refused: {exc}.")
    current_host = (
        Host.objects.filter(
            meeting_id=grant.meeting_id, role=grant.role, instance_id=instance_id, state__in=LIVE_HOST_STATES
        )
        .exclude(meeting__status__in=TERMINAL_STATUSES)
        .select_related("meeting")
        .first()
    )
    if current_host is None:
        logger.info(
            "DCV auth refused for %s: not a live host of %s/%s", log_safe(instance_id), grant.meeting_id, grant.role
        )
        return _auth_answer(refusal="Authentication refused: this host no longer serves the meeting.")
    logger.info(
        "DCV auth accepted: %s %s on %s from %s", grant.meeting_id, grant.role, log_safe(instance_id), log_safe(client)
    )
    # A participant has reached the desktop: the first one starts the session (HEALTHY -> IN_PROGRESS, once).
    meeting_start_on_join(meeting=current_host.meeting, role=grant.role)
    return _auth_answer(username=settings.ELEPHANT_DCV_USERNAME or grant.role)
