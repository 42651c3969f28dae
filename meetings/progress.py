"""The waiting room's progress steps: how a participant sees the lifecycle of section 3."""

from django.conf import settings
from django.utils.functional import lazy

from meetings.models import MeetingStatus, TerminationReason

STEPS = [
    ("scheduled", "Scheduled"),
    ("launching", "Launching desktops"),
    ("booting", "Booting"),
    ("health", "Checking health"),
    ("ready", "Ready"),
]

# The step each status is at; terminal statuses have none (the page says why instead).
STATUS_STEP = {
    MeetingStatus.SCHEDULED: "scheduled",
    MeetingStatus.LAUNCHING: "launching",
    MeetingStatus.LAUNCHED: "booting",
    MeetingStatus.DNS_WRITTEN: "health",
    MeetingStatus.HEALTHY: "ready",
    MeetingStatus.IN_PROGRESS: "ready",
}


def progress_steps(status: str, *, link_ready: bool = True) -> list[dict]:
    """Each step with its state: ``done``, ``current`` or ``todo`` (``ready`` is ``done`` when reached).

    A healthy meeting whose desktop link for this role is not written yet is still checking health.
    """
    keys = [key for key, _ in STEPS]
    at = STATUS_STEP.get(status)
    if at == "ready" and not link_ready:
        at = "health"
    position = keys.index(at) if at else -1
    steps = []
    for index, (key, label) in enumerate(STEPS):
        if index < position or (index == position and key == "ready"):
            state = "done"
        elif index == position:
            state = "current"
        else:
            state = "todo"
        steps.append({"key": key, "label": label, "state": state})
    return steps


def join_opens_phrase(minutes: int | None = None) -> str:
    """How long before the session the links open, in words: "one hour", "30 minutes", "2 hours".

    ``minutes`` defaults to the join window, ELEPHANT_JOIN_EARLY_MINUTES.
    """
    if minutes is None:
        minutes = settings.ELEPHANT_JOIN_EARLY_MINUTES
    if minutes == 60:
        return "one hour"
    if minutes % 60 == 0:
        return f"{minutes // 60} hours"
    return "one minute" if minutes == 1 else f"{minutes} minutes"


def _scheduled_hint() -> str:
    return f"Both desktops start a few minutes before the session; the links open {join_opens_phrase()} before it."


# What the teacher's meeting page says about each status. Lazy where the text follows a setting,
# so it is read when shown, not when this module is imported.
TEACHER_HINTS = {
    MeetingStatus.SCHEDULED: lazy(_scheduled_hint, str)(),
    MeetingStatus.LAUNCHING: "The desktops are being launched.",
    MeetingStatus.LAUNCHED: "The desktops are booting.",
    MeetingStatus.DNS_WRITTEN: "The desktops are up; checking their health.",
    MeetingStatus.HEALTHY: "Both desktops are ready: open your link whenever you like.",
    MeetingStatus.IN_PROGRESS: "The session is in progress.",
    MeetingStatus.TERMINATED: "The session has ended and its desktops are shut down.",
    MeetingStatus.CANCELLED: "The session was cancelled; its links no longer open a desktop.",
    MeetingStatus.FAILED: "The desktops could not be started. Schedule the session again.",
}


def reason_label(reason: str) -> str:
    return TerminationReason(reason).label if reason in TerminationReason.values else reason


# What a participant's waiting room (and a closed video room) says about each status.
WAITING_MESSAGES = {
    MeetingStatus.SCHEDULED: "Your desktop will start a few minutes before the session.",
    MeetingStatus.LAUNCHING: "Your desktop is being launched.",
    MeetingStatus.LAUNCHED: "Your desktop is booting.",
    MeetingStatus.DNS_WRITTEN: "Your desktop is booting; checking its health.",
    MeetingStatus.HEALTHY: "Instance is warming up. Please wait.",
    MeetingStatus.IN_PROGRESS: "Instance is warming up. Please wait.",
    MeetingStatus.CANCELLED: "This session was cancelled. Ask your teacher for a new link.",
    MeetingStatus.FAILED: "We could not start the desktops for this session. Please contact your teacher.",
    MeetingStatus.TERMINATED: "This session has ended.",
}
