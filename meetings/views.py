import re

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from meetings.forms import ScheduleForm
from meetings.ice import ice_servers_for
from meetings.ics import meeting_ics
from meetings.links import meeting_links, participant_link, room_link
from meetings.models import MEETING_ID_REGEX, Meeting, MeetingStatus, Role
from meetings.progress import TEACHER_HINTS, WAITING_MESSAGES, join_opens_phrase, reason_label
from meetings.selectors import meetings_for_teacher
from meetings.services import meeting_cancel, meeting_schedule
from meetings.tokens import participant_token_role

_MEETING_ID = re.compile(MEETING_ID_REGEX)


def _actor(request) -> str:
    return f"teacher:{request.user.get_username()}"


def wants_json(request) -> bool:
    """The caller asked for JSON (the pages' scripts poll the same address as the page)."""
    return "application/json" in request.headers.get("Accept", "")


# --- teacher pages ------------------------------------------------------------------------


@login_required
def dashboard(request):
    now = timezone.now()
    meetings = meetings_for_teacher(user=request.user)
    upcoming = list(meetings.upcoming(now))
    past = list(meetings.past(now).order_by("-meet_time")[:50])
    return render(request, "meetings/dashboard.html", {"upcoming": upcoming, "past": past})


@login_required
def meeting_new(request):
    form = ScheduleForm(request.POST or None, initial={"time_zone": request.COOKIES.get("tz", "UTC")})
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        user = request.user
        meeting = meeting_schedule(
            teacher=user,
            teacher_name=user.get_full_name() or user.get_username(),
            teacher_email=user.email,
            student_name=data["student_name"],
            student_email=data["student_email"],
            meet_time=data["meet_time"],
            time_zone=data["time_zone"],
            duration_minutes=data["duration_minutes"],
            actor=_actor(request),
        )
        messages.success(request, "Session scheduled. Send the student their link.")
        return redirect("meetings:detail", meeting_id=meeting.id)
    return render(request, "meetings/schedule.html", {"form": form})


def _own_meeting(request, meeting_id: str) -> Meeting:
    meeting = get_object_or_404(Meeting, pk=meeting_id)
    if meeting.teacher_id != request.user.pk and not request.user.is_staff:
        raise Http404("No such meeting")
    return meeting


@login_required
def meeting_detail(request, meeting_id: str):
    meeting = _own_meeting(request, meeting_id)
    if wants_json(request):  # the page's live status when the signalling socket is unavailable
        # Same address as the page: never cached, so "back" never shows this JSON instead of it.
        response = JsonResponse(
            {
                "status": meeting.status,
                "statusDisplay": meeting.get_status_display(),
                "hint": TEACHER_HINTS.get(meeting.status, ""),
                "reason": meeting.termination_reason,
                "reasonDisplay": reason_label(meeting.termination_reason),
            }
        )
        add_never_cache_headers(response)
        response["Vary"] = "Accept, Cookie"
        return response
    context = {
        "meeting": meeting,
        "links": meeting_links(meeting),
        "teacher_room_link": room_link(meeting_id=meeting.id, role=Role.TEACHER),
        "events": meeting.events.all(),
    }
    return render(request, "meetings/detail.html", context)


@login_required
@require_GET
def meeting_calendar(request, meeting_id: str, role: str):
    """An .ics event for one participant with their join link: the teacher sends the student theirs."""
    if role not in Role.values:
        raise Http404("No such role")
    meeting = _own_meeting(request, meeting_id)
    body = meeting_ics(
        meeting=meeting,
        role=role,
        join_link=participant_link(meeting_id=meeting.id, role=role),
        room_link=room_link(meeting_id=meeting.id, role=role),
    )
    response = HttpResponse(body, content_type="text/calendar; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="elephant-{meeting.id}-{role}.ics"'
    return response


@login_required
@require_POST
def meeting_cancel_view(request, meeting_id: str):
    meeting = _own_meeting(request, meeting_id)
    if meeting.teacher_id != request.user.pk and not request.user.has_perm("meetings.change_meeting"):
        raise PermissionDenied("Only the session's teacher, or staff who may change meetings, can cancel it.")
    if meeting_cancel(meeting=meeting, actor=_actor(request)):
        messages.success(request, "The session is cancelled; its links no longer open a desktop.")
    elif meeting.status == MeetingStatus.CANCELLED:
        messages.info(request, "The session was already cancelled.")
    else:
        messages.error(request, "This session is already starting and can no longer be cancelled.")
    return redirect("meetings:detail", meeting_id=meeting.id)


# --- the video room ------------------------------------------------------------------------


def _room_closed_message(meeting: Meeting, by_token: bool, now) -> str:
    if meeting.is_terminal:
        return WAITING_MESSAGES[meeting.status]
    if by_token and now < meeting.join_opens_at:
        return f"The video room opens {join_opens_phrase()} before the session. Come back then with the same link."
    if by_token and now > meeting.hard_stop_at:
        return "This session has ended; the link has expired."
    return ""


@never_cache
@require_GET
def room(request, meeting_id: str):
    """GET /room/{meeting_id}?t={token}: the participants' video room (or the owning teacher's, logged in)."""
    meeting = Meeting.objects.filter(pk=meeting_id).first() if _MEETING_ID.match(meeting_id) else None
    if meeting is None:
        denied = "This session does not exist (any more). Check that you used the newest link from your teacher."
        return render(request, "meetings/room.html", {"meeting": None, "denied": denied}, status=404)
    token = request.GET.get("t")
    role = participant_token_role(meeting_id=meeting.id, token=token) if token else None
    if role is None:
        if token:
            denied = "This link is not valid for this session. Ask your teacher for the link again."
            return render(request, "meetings/room.html", {"meeting": None, "denied": denied}, status=403)
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if meeting.teacher_id != request.user.pk:
            denied = "Only the teacher of this session and its student can enter its video room."
            return render(request, "meetings/room.html", {"meeting": None, "denied": denied}, status=403)
        role = Role.TEACHER
    closed = _room_closed_message(meeting, bool(token), timezone.now())
    if closed and wants_json(request):  # no fresh TURN credentials for a room that is closed
        return JsonResponse({"message": closed}, status=403)
    ice_servers, expires_at = ice_servers_for(meeting_id=meeting.id, role=role)
    if wants_json(request):  # room.js refreshes expiring TURN credentials here
        return JsonResponse({"iceServers": ice_servers, "expiresAt": expires_at})
    other = meeting.student_name if role == Role.TEACHER else meeting.teacher_name
    context = {
        "meeting": meeting,
        "role": role,
        "token": token or "",
        "other_name": other,
        "closed": closed,
        "room_config": {
            "roomId": meeting.id,
            "role": role,
            "token": token or "",
            "iceServers": ice_servers,
            "iceExpiresAt": expires_at,
            "otherName": other,
        },
        "join_link": participant_link(meeting_id=meeting.id, role=role),
    }
    return render(request, "meetings/room.html", context)
