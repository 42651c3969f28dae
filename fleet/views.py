"""The desktop's doors: the join endpoint that hands a participant their DCV link, and DCV
external authentication.

Join: ``GET /join/<meeting_id>/<role>?t=<token>`` (ARCHITECTURE.md section 6, docs/api.md). It
lives in the fleet because it hands out the fleet's desktop; what it says is meetings' data.

DCV external authentication: ``POST /dcv/auth/<instance_id>`` (ARCHITECTURE.md section 6). A
successful one is a participant reaching the desktop, so it is what starts the session
(``meeting_start_on_join``); the join endpoint only hands out links and never starts one.

Each host's DCV server is configured (by the boot script Elephant renders, fleet.userdata) with
``auth-token-verifier="<ELEPHANT_PUBLIC_URL>/dcv/auth/<its instance id>"``, so the verifier
URL names the host asking. A token is accepted only when it was issued for that very
instance (and so for that meeting and role), that instance is still the role's live host,
and the token has not been spent or expired. ``POST /dcv/auth?instance=<id>`` is the same;
a request that names no instance cannot be bound to a host and is refused.

The desktop link: ``GET /desktop/<meeting_id>/<role>?t=<token>`` is what the join endpoint hands out; every
visit mints a fresh single-use DCV token and redirects, so opening it again (a reload) still authenticates.

Host attestation: ``POST /fleet/attest`` (``fleet.attest``), the end of each host's boot script.
"""

import json
import logging
import re
from urllib.parse import urlencode
from xml.sax.saxutils import escape

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from elephant.logs import log_safe
from fleet.attest import MAX_DOCUMENT_BYTES, AttestationRefused, host_attest
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
from meetings.tokens import participant_token
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


def _participant(request, meeting_id: str, role: str):
    """The checks a participant link passes (join page and desktop link): (meeting, access, None),
    or (None, None, the refusal to answer)."""
    if role not in Role.values or not _MEETING_ID.match(meeting_id):
        return None, None, _join_response(request, 400, {"message": "Invalid meeting ID or role."})
    meeting = meeting_get_for_join(meeting_id=meeting_id, role=role)
    if meeting is None:
        return None, None, _join_response(request, 404, {"message": "Meeting not found."})
    credentials = participant_credentials(meeting_id=meeting_id, role=role, token=request.GET.get("t"))
    if credentials is None:
        refusal = {"message": refusal_message(BAD_TOKEN), "code": BAD_TOKEN}
        return None, None, _join_response(request, 403, refusal)
    return meeting, participant_access(meeting=meeting, credentials=credentials), None


@never_cache
@require_GET
def join(request, meeting_id: str, role: str):
    """GET /join/{meeting_id}/{role}?t={token} — ARCHITECTURE.md section 6."""
    meeting, access, refusal = _participant(request, meeting_id, role)
    if refusal is not None:
        return refusal
    context = {
        "meeting": meeting,
        "role": role,
        "token": request.GET.get("t"),
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
    # too. The session starts when a participant signs in to the desktop (dcv_auth below). The link is
    # the desktop link (desktop below), not a single-use DCV URL: opening it again mints a fresh token.
    dcv_url = desktop_link(meeting_id=meeting.id, role=role)
    return _join_response(request, 200, {"dcv_url": dcv_url, "status": meeting.status}, context)


# --- the desktop link -----------------------------------------------------------------------


def desktop_link(*, meeting_id: str, role: str) -> str:
    """The participant's lasting desktop link: every visit of it mints a fresh single-use DCV token."""
    token = participant_token(meeting_id=meeting_id, role=role)
    return f"{settings.ELEPHANT_PUBLIC_URL}/desktop/{meeting_id}/{role}?t={token}"


@never_cache
@require_GET
def desktop(request, meeting_id: str, role: str):
    """GET /desktop/{meeting_id}/{role}?t={token}: a redirect to the DCV desktop with a fresh single-use token.

    What the participant reloads or opens again: the join link's checks (token, window), then, once the
    desktop is ready, 302 to ``{dcv link}?authToken=<new token>#<session>``; before that, back to the join
    page, which waits for it.
    """
    meeting, access, refusal = _participant(request, meeting_id, role)
    if refusal is not None:
        return refusal
    link = meeting.role_dcv_link
    if access.window is not None or meeting.status not in READY_STATUSES or not link:
        return redirect(
            f"{settings.ELEPHANT_PUBLIC_URL}/join/{meeting.id}/{role}?{urlencode({'t': request.GET.get('t')})}"
        )
    auth_token = dcv_token_issue(meeting_id=meeting.id, role=role, instance_id=meeting.role_instance_id or "")
    return redirect(f"{link}?authToken={auth_token}#{settings.ELEPHANT_DCV_SESSION_ID}")


# --- host attestation -----------------------------------------------------------------------


@csrf_exempt
@require_POST
def attest(request):
    """POST /fleet/attest: the host's boot script reports DCV configured (fleet.attest)."""
    if len(request.body) > 4 * MAX_DOCUMENT_BYTES:
        return JsonResponse({"error": "The report is too large."}, status=413)
    try:
        report = json.loads(request.body)
    except ValueError:
        report = None
    if not isinstance(report, dict):
        return JsonResponse({"error": "The body must be a JSON object."}, status=400)
    try:
        host = host_attest(
            document=report.get("document"),
            signature=report.get("signature"),
            verifier=report.get("verifier"),
            session_id=report.get("session_id"),
        )
    except AttestationRefused as refused:
        logger.info("attestation refused: %s", log_safe(str(refused)))
        return JsonResponse({"error": str(refused)}, status=refused.status)
    return JsonResponse({"attested": host.instance_id, "attested_at": host.attested_at.isoformat()})


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
