"""Issue 13's "done when": a teacher schedules a weekly lesson three times with a student's address; three
invitations reach a real SMTP server (aiosmtpd), each with an .ics a real iCalendar parser (icalendar) reads,
carrying the student's own link; moving one lesson sends an update with the same UID and SEQUENCE 1;
cancelling sends METHOD:CANCEL; a finished lesson's page offers its recording from the local S3."""

import re
from datetime import date, timedelta

import pytest

from tests.browser.conftest import log_in
from tests.notifications.smtp import calendar_part

pytestmark = pytest.mark.browser

STUDENT = "ada.weekly@example.com"


def _event(message):
    calendar = calendar_part(message)
    assert calendar is not None, message
    (event,) = calendar.walk("VEVENT")
    return calendar, event


def test_weekly_lesson_invitations_update_cancel_and_recording(live_stack, new_context):
    page = new_context().new_page()
    log_in(page)
    page.get_by_role("link", name="Schedule a session").click()
    page.get_by_label("Student name").fill("Ada Weekly")
    page.get_by_label("Student email (optional)").fill(STUDENT)
    page.get_by_label("Date").fill((date.today() + timedelta(days=2)).isoformat())
    page.get_by_label("Time", exact=True).fill("09:30")
    page.get_by_label(re.compile("^Weeks")).fill("3")
    page.get_by_role("button", name="Schedule").click()
    page.wait_for_url(re.compile(r"/meetings/[a-z0-9]{16}$"))
    assert "3 weekly sessions scheduled" in page.locator(".messages").inner_text()
    series = page.locator("#series")
    assert "week 1 of 3" in series.inner_text()
    week_paths = [link.get_attribute("href") for link in series.get_by_role("link").all()]
    assert len(week_paths) == 3

    # Three invitations, each with the student's own link of its own week, never the teacher's.
    invitations = live_stack.smtp.wait_for(STUDENT, 3)
    student_links = {}
    for path in week_paths:
        page.goto(path)
        student_links[path.rsplit("/", 1)[1]] = page.locator("#student-link").input_value()
    uids = {}
    for message in invitations:
        assert message.get_body(("plain",)) is not None and message.get_body(("html",)) is not None
        calendar, event = _event(message)
        assert str(calendar["METHOD"]) == "REQUEST" and int(event["SEQUENCE"]) == 0
        meeting_id = str(event["UID"]).split("-")[0]
        assert str(event["URL"]) == student_links[meeting_id]
        assert student_links[meeting_id] in message.get_body(("plain",)).get_content()
        assert "/teacher?t=" not in message.as_string()
        uids[meeting_id] = str(event["UID"])
    assert set(uids) == set(student_links)

    # The teacher moves the second lesson: the student gets an update with the same UID and SEQUENCE 1.
    second = week_paths[1].rsplit("/", 1)[1]
    page.goto(week_paths[1])
    page.locator("#reschedule summary").click()
    page.get_by_label("New time").fill("11:15")
    page.get_by_role("button", name="Move session").click()
    assert "moved" in page.locator(".messages").inner_text()
    assert "11:15" in page.locator(".when").inner_text()
    assert page.locator("#student-link").input_value() == student_links[second]  # the link sent stays valid
    update = live_stack.smtp.wait_for(STUDENT, 4)[3]
    calendar, event = _event(update)
    assert str(calendar["METHOD"]) == "REQUEST"
    assert str(event["UID"]) == uids[second] and int(event["SEQUENCE"]) == 1
    assert event.decoded("DTSTART").strftime("%M") == "15"
    assert update["Subject"].startswith("Moved:")

    # Cancelling it sends METHOD:CANCEL for the same event.
    page.get_by_role("button", name="Cancel session", exact=True).click()
    assert "cancelled" in page.locator(".messages").inner_text()
    cancel = live_stack.smtp.wait_for(STUDENT, 5)[4]
    calendar, event = _event(cancel)
    assert str(calendar["METHOD"]) == "CANCEL" and str(event["UID"]) == uids[second]
    assert int(event["SEQUENCE"]) == 2 and str(event["STATUS"]) == "CANCELLED"

    # The third lesson has ended and its student desktop uploaded a recording to the local S3.
    third = week_paths[2].rsplit("/", 1)[1]
    page.goto(week_paths[2])
    assert page.locator("#no-recording").is_visible()
    live_stack.shell(
        f"""
        import json
        from elephant.aws import aws_client
        from meetings.models import Meeting
        aws_client("s3").put_object(Bucket="elephant-recordings", Key="{third}/student.webm", Body=b"recorded lesson")
        Meeting.objects.filter(pk="{third}").update(
            status="TERMINATED", termination_reason="SUCCESS",
            student_session_data="s3://elephant-recordings/{third}/student.webm",
        )
        print(json.dumps(True))
        """
    )
    page.reload()
    link = page.get_by_role("link", name="Download the recording: Student's desktop")
    href = link.get_attribute("href")
    assert "X-Amz-Signature=" in href and "X-Amz-Expires=" in href  # SigV4
    download = page.request.get(href)
    assert download.status == 200 and download.body() == b"recorded lesson"
