"""Meeting status push: every committed change of a meeting goes to its subscribed sockets."""

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from meetings.models import READY_STATUSES, TERMINAL_STATUSES, Meeting
from signalling.hub import status_group

logger = logging.getLogger(__name__)


def push_meeting_status(sender, *, meeting_id: str, from_status: str, to_status: str, reason: str, **kwargs) -> None:
    """``meeting_changed`` receiver. Never raises: the change is committed already."""
    try:
        layer = get_channel_layer()
        if layer is None:
            return
        status = to_status
        if not status:  # a change that is not a transition: say what the meeting is now
            status = Meeting.objects.filter(pk=meeting_id).values_list("status", flat=True).first()
            if status is None:
                return
        message = {
            "type": "status.push",
            "meetingId": meeting_id,
            "status": status,
            "previousStatus": from_status or "",
            "reason": reason or "",
            "ready": status in READY_STATUSES,
            "terminal": status in TERMINAL_STATUSES,
        }
        async_to_sync(layer.group_send)(status_group(meeting_id), message)
    except Exception:
        logger.exception("status push for meeting %s failed", meeting_id)
