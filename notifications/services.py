"""Mail to the participants: what a meeting owes them, and sending it once.

What is owed follows from the meeting's state alone (``mail_owed``), so any path can work it out
again: the ``meeting_changed`` receiver right after a commit, and the beat sweep for anything a
crash or a lost task left behind. A mail owed becomes a ``SentMail`` row (the unique constraint
makes it one row whoever asks), which one sender claims, sends and marks SENT. An SMTP failure
puts the row back to PENDING with a backoff; the task retries, and the sweep requeues what no
task holds. A row whose change was overtaken before it went out (an invitation when the meeting
has been moved again) is marked SUPERSEDED instead: the newer mail says it all.

The one window left: a worker that dies after the SMTP server accepted a mail and before the row
is marked SENT. Its row stays SENDING until ``SENDING_LEASE`` has passed and is then sent again
(with the same Message-ID, which mail clients use to drop the copy).
"""

import logging
import smtplib
from datetime import datetime, timedelta
from email.mime.text import MIMEText
from email.utils import parseaddr
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.db.models import Exists, F, OuterRef, Q
from django.template.loader import render_to_string
from django.utils import timezone

from elephant.backoff import backoff_delay
from meetings.ics import meeting_ics
from meetings.links import participant_link, room_link
from meetings.models import EventReason, Meeting, MeetingStatus, Role
from notifications.models import MailKind, MailStatus, SentMail

logger = logging.getLogger(__name__)

# A SENDING row older than this belongs to a worker that died mid-send (Celery's hard limit is 300 s).
SENDING_LEASE = timedelta(minutes=10)
# How far back the sweep looks for a change whose mail was never recorded.
SWEEP_LOOKBACK = timedelta(days=1)
# A PENDING row this old with no retry scheduled was queued by no task that still lives.
ORPHAN_AFTER = timedelta(minutes=1)
RETRY_BASE_SECONDS = 30
RETRY_MAX_SECONDS = 3600
SEND_TASK = "notifications.tasks.mail_send_task"
SMTP_ERRORS = (smtplib.SMTPException, OSError)
CHANGE_KINDS = (MailKind.INVITATION, MailKind.UPDATE, MailKind.CANCELLATION)
# Statuses after which nothing more is mailed (a cancelled meeting gets its cancellation).
_SILENT = (MeetingStatus.TERMINATED, MeetingStatus.FAILED)


def participant_address(meeting: Meeting, role: str) -> str:
    """The teacher's address from the schedule, else their account's; the student's from the schedule."""
    if role == Role.STUDENT:
        return meeting.student_email
    return meeting.teacher_email or (meeting.teacher.email if meeting.teacher_id else "")


def mail_owed(*, meeting: Meeting, now: datetime) -> list[tuple[str, str]]:
    """(participant, kind) of every mail the meeting's state calls for at its current sequence."""
    roles = [role for role in Role.values if participant_address(meeting, role)]
    if meeting.status in _SILENT:
        return []
    if meeting.status == MeetingStatus.CANCELLED:
        # Only who was told of the meeting is told of its cancellation.
        invited = set(
            SentMail.objects.filter(
                meeting=meeting, kind__in=(MailKind.INVITATION, MailKind.UPDATE), participant__in=roles
            ).values_list("participant", flat=True)
        )
        return [(role, MailKind.CANCELLATION) for role in roles if role in invited]
    owed = [(role, MailKind.INVITATION if meeting.sequence == 0 else MailKind.UPDATE) for role in roles]
    if reminder_due(meeting=meeting, now=now):
        owed += [(role, MailKind.REMINDER) for role in roles]
    return owed


def reminder_due(*, meeting: Meeting, now: datetime) -> bool:
    """From ELEPHANT_REMINDER_MINUTES before the start until the start; not for a meeting scheduled that
    late (its invitation has just gone out)."""
    opens = meeting.meet_time - timedelta(minutes=settings.ELEPHANT_REMINDER_MINUTES)
    return meeting.created_at < opens <= now < meeting.meet_time


def meeting_mail_sync(*, meeting_id: str, now: datetime | None = None) -> list[int]:
    """Record the mail the meeting owes (once each, whoever asks) and queue what is due; the ids queued."""
    now = now or timezone.now()
    meeting = Meeting.objects.select_related("teacher").filter(pk=meeting_id).first()
    if meeting is None:
        return []
    rows = [
        SentMail(
            meeting=meeting,
            participant=role,
            kind=kind,
            sequence=meeting.sequence,
            to=participant_address(meeting, role),
        )
        for role, kind in mail_owed(meeting=meeting, now=now)
    ]
    SentMail.objects.bulk_create(rows, ignore_conflicts=True)
    due = list(SentMail.objects.due(now).filter(meeting=meeting).values_list("pk", flat=True))
    for mail_id in due:
        mail_queue(mail_id=mail_id)
    return due


def mail_queue(*, mail_id: int, countdown: float | None = None) -> None:
    from celery import current_app

    try:
        current_app.send_task(SEND_TASK, args=[mail_id], countdown=countdown)
    except Exception:  # the broker is down: the beat sweep queues the row later
        logger.warning("could not queue mail %s; the sweep will", mail_id, exc_info=True)


def mail_sync_on_change(sender, *, meeting_id: str, to_status: str = "", reason: str = "", **kwargs) -> None:
    """Receiver of ``meetings.signals.meeting_changed``. Never raises: the change is committed already.

    Only a schedule, a reschedule or a cancel can owe mail at once (reminders are the sweep's): the
    fleet's transitions and the mirror's changes cost no query here."""
    if to_status not in (MeetingStatus.SCHEDULED, MeetingStatus.CANCELLED) and reason != EventReason.RESCHEDULED:
        return
    try:
        meeting_mail_sync(meeting_id=meeting_id)
    except Exception:
        logger.warning("mail for meeting %s not recorded now; the sweep will", meeting_id, exc_info=True)


# --- sending ---------------------------------------------------------------------------------------
def _superseded(mail: SentMail, meeting: Meeting, now: datetime) -> bool:
    if mail.sequence != meeting.sequence:
        return True  # a newer invitation, update or cancellation carries the meeting as it is now
    if mail.kind == MailKind.REMINDER:
        return meeting.is_terminal or now >= meeting.meet_time
    return False


def mail_send(*, mail_id: int, now: datetime | None = None) -> float | None:
    """Send one recorded mail if this call claims it. Returns the seconds until a retry after an SMTP
    failure, None when there is nothing more to do (sent, superseded, or claimed by someone else)."""
    now = now or timezone.now()
    claimed = (
        SentMail.objects.due(now)
        .filter(pk=mail_id)
        .update(status=MailStatus.SENDING, claimed_at=now, attempts=F("attempts") + 1)
    )
    if not claimed:
        return None
    mail = SentMail.objects.select_related("meeting", "meeting__teacher").get(pk=mail_id)
    if _superseded(mail, mail.meeting, now):
        SentMail.objects.filter(pk=mail_id).update(status=MailStatus.SUPERSEDED, claimed_at=None)
        return None
    message = mail_message(mail)
    try:
        message.send()
    except SMTP_ERRORS as problem:
        delay = backoff_delay(mail.attempts - 1, base=RETRY_BASE_SECONDS, cap=RETRY_MAX_SECONDS, jitter=0.5)
        SentMail.objects.filter(pk=mail_id, status=MailStatus.SENDING).update(
            status=MailStatus.PENDING,
            claimed_at=None,
            next_attempt_at=now + timedelta(seconds=delay),
            last_error=f"{type(problem).__name__}: {problem}"[:2000],
        )
        logger.warning("mail %s to %s failed (attempt %s): %s", mail_id, mail.to, mail.attempts, problem)
        return delay
    SentMail.objects.filter(pk=mail_id).update(
        status=MailStatus.SENT,
        sent_at=timezone.now(),
        claimed_at=None,
        subject=message.subject[:255],
        message_id=message.extra_headers["Message-ID"],
        last_error="",
    )
    logger.info(
        "mail %s (%s #%s) sent to the %s of %s", mail_id, mail.kind, mail.sequence, mail.participant, mail.meeting_id
    )
    return None


def _domain() -> str:
    return urlsplit(settings.ELEPHANT_PUBLIC_URL).hostname or "localhost"


def mail_message(mail: SentMail) -> EmailMultiAlternatives:
    """The mail itself: plain text and HTML, the participant's own link only, the .ics for a change."""
    meeting, role = mail.meeting, mail.participant
    join = participant_link(meeting_id=meeting.id, role=role)
    room = room_link(meeting_id=meeting.id, role=role)
    local = meeting.local_meet_time
    context = {
        "meeting": meeting,
        "kind": mail.kind,
        "role": role,
        "name": meeting.teacher_name if role == Role.TEACHER else meeting.student_name,
        "other": meeting.student_name if role == Role.TEACHER else meeting.teacher_name,
        "join_link": join,
        "room_link": room,
        # Formatted here: the template's date filter would show the server's zone, not the meeting's.
        "when": f"{local:%A} {local.day} {local:%B %Y, %H:%M}",
        "when_short": f"{local:%a} {local.day} {local:%b %Y, %H:%M}",
        "clock": f"{local:%H:%M}",
        "reminder_minutes": settings.ELEPHANT_REMINDER_MINUTES,
    }
    subject = render_to_string("notifications/subject.txt", context).strip()
    message = EmailMultiAlternatives(
        subject=" ".join(subject.split()),
        body=render_to_string("notifications/mail.txt", context),
        to=[mail.to],
        connection=get_connection(),
        headers={
            "Message-ID": f"<{meeting.id}.{role}.{mail.kind.lower()}.{mail.sequence}@{_domain()}>",
            "Auto-Submitted": "auto-generated",
        },
    )
    message.attach_alternative(render_to_string("notifications/mail.html", context), "text/html")
    if mail.kind in CHANGE_KINDS:
        method = "CANCEL" if mail.kind == MailKind.CANCELLATION else "REQUEST"
        ics = meeting_ics(
            meeting=meeting,
            role=role,
            join_link=join,
            room_link=room,
            method=method,
            organizer_email=parseaddr(settings.DEFAULT_FROM_EMAIL)[1],
        )
        part = MIMEText(ics, "calendar", "utf-8")
        part.set_param("method", method)
        part.add_header("Content-Disposition", "attachment", filename="invite.ics")
        message.attach(part)
    return message


# --- the sweep -------------------------------------------------------------------------------------
def mail_sweep(*, now: datetime | None = None) -> dict[str, int]:
    """Beat: what a crash, a lost task or the clock left to do. Each part is one query."""
    now = now or timezone.now()
    stale = SentMail.objects.filter(status=MailStatus.SENDING, claimed_at__lt=now - SENDING_LEASE).update(
        status=MailStatus.PENDING, claimed_at=None
    )
    with_address = ~Q(teacher_email="", student_email="") | Q(teacher__email__gt="")
    recorded = SentMail.objects.filter(meeting=OuterRef("pk"), sequence=OuterRef("sequence"), kind__in=CHANGE_KINDS)
    invited = SentMail.objects.filter(meeting=OuterRef("pk"), kind__in=(MailKind.INVITATION, MailKind.UPDATE))
    unrecorded = (
        Meeting.objects.filter(with_address, updated_at__gte=now - SWEEP_LOOKBACK)
        .exclude(status__in=_SILENT)
        .filter(~Exists(recorded))
        .filter(~Q(status=MeetingStatus.CANCELLED) | Exists(invited))
    )
    reminded = SentMail.objects.filter(meeting=OuterRef("pk"), sequence=OuterRef("sequence"), kind=MailKind.REMINDER)
    reminders = (
        Meeting.objects.filter(with_address, meet_time__gt=now)
        .filter(meet_time__lte=now + timedelta(minutes=settings.ELEPHANT_REMINDER_MINUTES))
        .exclude(status__in=(*_SILENT, MeetingStatus.CANCELLED))
        .filter(~Exists(reminded))
    )
    meeting_ids = set(unrecorded.values_list("pk", flat=True)) | set(reminders.values_list("pk", flat=True))
    queued = 0
    for meeting_id in sorted(meeting_ids):
        queued += len(meeting_mail_sync(meeting_id=meeting_id, now=now))
    # Rows no task holds any more (the broker lost it, or it was never queued).
    orphans = (
        SentMail.objects.due(now)
        .exclude(meeting_id__in=meeting_ids)
        .filter(Q(next_attempt_at__isnull=False) | Q(created_at__lt=now - ORPHAN_AFTER))
    )
    for mail_id in orphans.values_list("pk", flat=True):
        mail_queue(mail_id=mail_id)
        queued += 1
    return {"reclaimed": stale, "meetings": len(meeting_ids), "queued": queued}
