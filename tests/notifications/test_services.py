"""Mail to the participants against the real database and a real SMTP server (aiosmtpd)."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core import mail

from elephant.email_url import EmailUrlError, email_settings
from meetings.services import meeting_cancel, meeting_reschedule, meeting_schedule
from notifications import services
from notifications.models import MailKind, MailStatus, SentMail
from tests.notifications.smtp import SmtpSink, calendar_part

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _frozen():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def queued(monkeypatch):
    ids = []
    monkeypatch.setattr(services, "mail_queue", lambda *, mail_id, countdown=None: ids.append(mail_id))
    return ids


@pytest.fixture
def locmem(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


def _meeting(**extra):
    values = dict(
        teacher_name="Tina",
        student_name="Stu",
        student_email="stu@example.com",
        meet_time=NOW + timedelta(days=1),
        actor="test",
    )
    return meeting_schedule(**(values | extra))


def test_email_url_forms():
    assert email_settings("console:")["EMAIL_BACKEND"].endswith("console.EmailBackend")
    tls = email_settings("smtp+tls://us%40r:p%3Ass@mail.example.com?timeout=3")
    assert (tls["EMAIL_HOST"], tls["EMAIL_PORT"], tls["EMAIL_USE_TLS"], tls["EMAIL_USE_SSL"]) == (
        "mail.example.com",
        587,
        True,
        False,
    )
    assert (tls["EMAIL_HOST_USER"], tls["EMAIL_HOST_PASSWORD"], tls["EMAIL_TIMEOUT"]) == ("us@r", "p:ss", 3.0)
    plain = email_settings("smtp://127.0.0.1:2525")
    assert (plain["EMAIL_PORT"], plain["EMAIL_USE_TLS"], plain["EMAIL_HOST_USER"]) == (2525, False, "")
    assert email_settings("smtps://h")["EMAIL_PORT"] == 465
    for bad in ("mailto:x", "smtp://", "nothing", "smtp://h:port"):
        with pytest.raises(EmailUrlError):
            email_settings(bad)


def test_an_invitation_is_recorded_once_and_sent_once(queued, locmem):
    meeting = _meeting()
    services.meeting_mail_sync(meeting_id=meeting.id)
    services.meeting_mail_sync(meeting_id=meeting.id)  # the sweep asking again changes nothing
    (row,) = SentMail.objects.all()
    assert (row.participant, row.kind, row.sequence, row.to) == ("student", MailKind.INVITATION, 0, "stu@example.com")
    assert services.mail_send(mail_id=row.pk) is None
    assert services.mail_send(mail_id=row.pk) is None  # a second task for the same row sends nothing
    assert len(mail.outbox) == 1
    sent = mail.outbox[0]
    ics = sent.attachments[0].get_payload(decode=True).decode()
    assert "METHOD:REQUEST" in ics and f"UID:{meeting.id}-student@elephant" in ics and "SEQUENCE:0" in ics
    assert f"/join/{meeting.id}/student?t=" in sent.body and "/teacher?t=" not in sent.body + ics
    assert sent.alternatives[0].mimetype == "text/html"
    row.refresh_from_db()
    assert row.status == MailStatus.SENT and row.attempts == 1


def test_smtp_failure_is_retried_with_backoff_then_sent(queued, settings, _frozen):
    sink = SmtpSink().start()
    try:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", sink.port
        meeting = _meeting()
        services.meeting_mail_sync(meeting_id=meeting.id)
        row = SentMail.objects.get()
        sink.refuse = True
        delay = services.mail_send(mail_id=row.pk)
        assert delay is not None and 15 <= delay <= 30
        row.refresh_from_db()
        assert row.status == MailStatus.PENDING and "451" in row.last_error
        assert services.mail_send(mail_id=row.pk) is None and not sink.messages  # not due yet: nobody sends
        sink.refuse = False
        _frozen.shift(timedelta(seconds=31))
        assert services.mail_sweep()["queued"] == 1  # the sweep requeues it even if the retry was lost
        assert services.mail_send(mail_id=row.pk) is None
        (message,) = sink.to("stu@example.com")
        calendar = calendar_part(message)
        assert str(calendar["METHOD"]) == "REQUEST"
        row.refresh_from_db()
        assert (row.status, row.attempts) == (MailStatus.SENT, 2)
    finally:
        sink.stop()


def test_reschedule_supersedes_an_unsent_invitation_and_cancel_follows(queued, locmem):
    meeting = _meeting()
    services.meeting_mail_sync(meeting_id=meeting.id)
    invitation = SentMail.objects.get()
    assert meeting_reschedule(meeting=meeting, actor="test", meet_time=NOW + timedelta(days=2))
    assert meeting.sequence == 1
    services.meeting_mail_sync(meeting_id=meeting.id)
    services.mail_send(mail_id=invitation.pk)
    invitation.refresh_from_db()
    assert invitation.status == MailStatus.SUPERSEDED and not mail.outbox
    update = SentMail.objects.get(kind=MailKind.UPDATE)
    services.mail_send(mail_id=update.pk)
    assert "SEQUENCE:1" in mail.outbox[0].attachments[0].get_payload(decode=True).decode()
    assert meeting_cancel(meeting=meeting, actor="test") and meeting.sequence == 2
    services.meeting_mail_sync(meeting_id=meeting.id)
    cancel = SentMail.objects.get(kind=MailKind.CANCELLATION)
    services.mail_send(mail_id=cancel.pk)
    ics = mail.outbox[1].attachments[0].get_payload(decode=True).decode()
    assert "METHOD:CANCEL" in ics and f"UID:{meeting.id}-student@elephant" in ics and "SEQUENCE:2" in ics


def test_no_cancellation_for_who_was_never_invited(queued):
    meeting = _meeting(student_email="")
    meeting_cancel(meeting=meeting, actor="test")
    services.meeting_mail_sync(meeting_id=meeting.id)
    assert not SentMail.objects.exists()


def test_the_sweep_sends_the_reminder_once(queued, locmem, settings, _frozen):
    settings.ELEPHANT_REMINDER_MINUTES = 15
    meeting = _meeting(meet_time=NOW + timedelta(hours=2))
    services.mail_sweep()  # the invitation the receiver would have recorded (a lost receiver)
    assert list(SentMail.objects.values_list("kind", flat=True)) == [MailKind.INVITATION]
    _frozen.shift(timedelta(hours=1, minutes=46))
    services.mail_sweep()
    services.mail_sweep()
    reminder = SentMail.objects.get(kind=MailKind.REMINDER)
    services.mail_send(mail_id=reminder.pk)
    assert mail.outbox[-1].subject.startswith("In 15 minutes:") and not mail.outbox[-1].attachments
    assert f"/join/{meeting.id}/student?t=" in mail.outbox[-1].body
