"""DCV external authentication: ``POST /dcv/auth/<instance_id>`` (ARCHITECTURE.md section 6).

Each host's DCV server is configured (by its agent, at boot) with
``auth-token-verifier="<ELEPHANT_PUBLIC_URL>/dcv/auth/<its instance id>"``, so the verifier
URL names the host asking. A token is accepted only when it was issued for that very
instance (and so for that meeting and role), that instance is still the role's live host,
and the token has not been spent or expired. ``POST /dcv/auth?instance=<id>`` is the same;
a request that names no instance cannot be bound to a host and is refused.
"""

import logging
from xml.sax.saxutils import escape

from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from fleet.dcv import DcvTokenRejected, dcv_token_redeem
from fleet.models import LIVE_HOST_STATES, Host
from meetings.models import TERMINAL_STATUSES

logger = logging.getLogger(__name__)

MAX_TOKEN_LENGTH = 2048


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
        logger.info("DCV auth refused for %s from %s: %s", instance_id, client, exc)
        return _auth_answer(refusal=f"Authentication refused: {exc}.")
    host_is_current = (
        Host.objects.filter(
            meeting_id=grant.meeting_id, role=grant.role, instance_id=instance_id, state__in=LIVE_HOST_STATES
        )
        .exclude(meeting__status__in=TERMINAL_STATUSES)
        .exists()
    )
    if not host_is_current:
        logger.info("DCV auth refused for %s: not a live host of %s/%s", instance_id, grant.meeting_id, grant.role)
        return _auth_answer(refusal="Authentication refused: this host no longer serves the meeting.")
    logger.info("DCV auth accepted: %s %s on %s from %s", grant.meeting_id, grant.role, instance_id, client)
    return _auth_answer(username=settings.ELEPHANT_DCV_USERNAME or grant.role)
