import re

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from meetings.access import ROOM_GUEST
from meetings.forms import RescheduleForm, ScheduleForm
from meetings.ice import ice_servers_for
from meetings.ics import meeting_ics
from meetings.links import meeting_links, participant_link, room_link
from meetings.models import MEETING_ID_REGEX, Meeting, MeetingStatus, Role
from meetings.progress import TEACHER_HINTS, WAITING_MESSAGES, join_opens_phrase, reason_label
from meetings.recordings import meeting_recordings
from meetings.selectors import meetings_for_teacher
from meetings.services import meeting_cancel, meeting_reschedule, meeting_series_cancel, meeting_series_schedule
from meetings.tokens import participant_token_role, room_credential_check, room_credential_seat

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
    meetings = meetings_for_teacher(user=request.user).select_related("series")
    upcoming = list(meetings.upcoming(now))
    past = list(meetings.past(now).order_by("-meet_time")[:50])
    return render(request, "meetings/dashboard.html", {"upcoming": upcoming, "past": past})


@login_required
def meeting_new(request):
    form = ScheduleForm(request.POST or None, initial={"time_zone": request.COOKIES.get("tz", "UTC")})
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        user = request.user
        weeks = data.get("repeat_weeks") or 1
        try:
            meetings = meeting_series_schedule(
                weeks=weeks,
                teacher=user,
                teacher_name=user.get_full_name() or user.get_username(),
                teacher_email=user.email,
                student_name=data["student_name"],
                student_email=data["student_email"],
                meet_time=data["meet_time"],
                time_zone=data["time_zone"],
                duration_minutes=data["duration_minutes"],
                desktop_profile=data.get("desktop_profile", ""),
                actor=_actor(request),
            )
        except ValidationError as invalid:  # a series reaching too far ahead
            for name, problems in invalid.message_dict.items():
                form.add_error("repeat_weeks" if name == "repeat" else None, problems)
        else:
            if weeks > 1:
                messages.success(request, f"{weeks} weekly sessions scheduled; each has its own links.")
            else:
                messages.success(request, "Session scheduled. Send the student their link.")
            return redirect("meetings:detail", meeting_id=meetings[0].id)
    return render(request, "meetings/schedule.html", {"form": form})


def _own_meeting(request, meeting_id: str) -> Meeting:
    meeting = get_object_or_404(Meeting, pk=meeting_id)
    if meeting.teacher_id != request.user.pk and not request.user.is_staff:
        raise Http404("No such meeting")
    return meeting


@login_required
def meeting_detail(request, meeting_id: str, reschedule_form: RescheduleForm | None = None):
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
        # Minted now, for this viewer (the meeting's teacher or staff: _own_meeting checked).
        "recordings": meeting_recordings(meeting),
        "series": list(meeting.series.meetings.order_by("meet_time")) if meeting.series_id else [],
        "reschedule_form": reschedule_form or RescheduleForm.for_meeting(meeting),
    }
    return render(request, "meetings/detail.html", context, status=400 if reschedule_form else 200)


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


def _changeable_meeting(request, meeting_id: str, action: str) -> Meeting:
    meeting = _own_meeting(request, meeting_id)
    if meeting.teacher_id != request.user.pk and not request.user.has_perm("meetings.change_meeting"):
        raise PermissionDenied(f"Only the session's teacher, or staff who may change meetings, can {action} it.")
    return meeting


@login_required
@require_POST
def meeting_reschedule_view(request, meeting_id: str):
    meeting = _changeable_meeting(request, meeting_id, "move")
    form = RescheduleForm.for_meeting(meeting, request.POST)
    if not form.is_valid():
        return meeting_detail(request, meeting_id=meeting.id, reschedule_form=form)
    data = form.cleaned_data
    try:
        moved = meeting_reschedule(
            meeting=meeting,
            actor=_actor(request),
            meet_time=data["meet_time"],
            time_zone=data["time_zone"],
            duration_minutes=data["duration_minutes"],
        )
    except ValidationError as invalid:  # the clock moved between the form's check and the service's
        for problems in invalid.message_dict.values():
            form.add_error("time", problems)
        return meeting_detail(request, meeting_id=meeting.id, reschedule_form=form)
    if moved:
        messages.success(request, "The session is moved; the links stay the same and the participants are told.")
    else:
        messages.error(request, "This session is already starting or over and can no longer be moved.")
    return redirect("meetings:detail", meeting_id=meeting.id)


@login_required
@require_POST
def meeting_cancel_view(request, meeting_id: str):
    meeting = _changeable_meeting(request, meeting_id, "cancel")
    if request.POST.get("scope") == "following" and meeting.series_id:
        cancelled = meeting_series_cancel(meeting=meeting, actor=_actor(request))
        if cancelled:
            messages.success(request, f"{len(cancelled)} session(s) cancelled: this one and the later weeks.")
        else:
            messages.error(request, "None of these sessions could be cancelled any more.")
    elif meeting_cancel(meeting=meeting, actor=_actor(request)):
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
    if role is None and not token and "k" in request.GET:
        # The jitsi_url the agents open on the desktops: a room credential, no login (meetings.tokens).
        credential = request.GET["k"]
        seat = room_credential_check(meeting_id=meeting.id, credential=credential)
        if seat is None:
            denied = "This room link is not valid for this session, or the session has ended."
            return render(request, "meetings/room.html", {"meeting": None, "denied": denied}, status=403)
        token = credential if seat else room_credential_seat(meeting_id=meeting.id, credential=credential)
        role = ROOM_GUEST
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
    if role == ROOM_GUEST:
        other = f"{meeting.teacher_name} and {meeting.student_name}"
    else:
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
        "join_link": "" if role == ROOM_GUEST else participant_link(meeting_id=meeting.id, role=role),
    }
    return render(request, "meetings/room.html", context)
