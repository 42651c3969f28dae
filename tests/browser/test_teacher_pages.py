"""A teacher logs in, schedules (after fixing mistakes), copies a link, downloads the .ics, cancels."""

import re
from datetime import date, timedelta
from pathlib import Path

import pytest

from tests.browser.conftest import log_in

pytestmark = pytest.mark.browser


def test_teacher_schedules_copies_a_link_and_downloads_the_calendar_file(live_stack, new_context, screenshot):
    context = new_context(permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()

    page.goto("/")
    page.wait_for_url("**/accounts/login/?next=/")
    screenshot(page, "login.png")
    log_in(page)
    assert page.get_by_role("heading", name="My sessions").is_visible()

    page.get_by_role("link", name="Schedule a session").click()
    # The time zone defaults to the teacher's browser zone.
    assert page.get_by_label("Time zone").input_value() == "Europe/Berlin"

    # Mistakes are reported next to their fields before anything is sent...
    page.get_by_label("Student email (optional)").fill("not-an-email")
    page.get_by_role("button", name="Schedule").click()
    assert page.locator("#id_student_name_error").inner_text() == "This field is required."
    assert page.locator("#id_student_email_error").inner_text() == "Enter a valid email address."
    assert page.get_by_label("Student name").get_attribute("aria-invalid") == "true"
    assert page.evaluate("document.activeElement.id") == "id_student_name"
    screenshot(page, "schedule-errors.png")

    # ...and the server's own checks come back inline too.
    page.get_by_label("Student name").fill("Ada Lovelace")
    page.get_by_label("Student email (optional)").fill("ada@example.com")
    page.get_by_label("Date").fill((date.today() - timedelta(days=2)).isoformat())
    page.get_by_label("Time", exact=True).fill("09:30")
    page.get_by_role("button", name="Schedule").click()
    page.wait_for_load_state()
    assert "more than 30 minutes in the past" in page.locator("#id_time_error").inner_text()

    page.get_by_label("Date").fill((date.today() + timedelta(days=2)).isoformat())
    page.get_by_label("Duration").select_option("45")
    page.get_by_role("button", name="Schedule").click()
    page.wait_for_url(re.compile(r"/meetings/[a-z0-9]{16}$"))
    meeting_id = page.url.rsplit("/", 1)[1]
    assert page.get_by_role("heading", name="Session with Ada Lovelace").is_visible()
    assert page.locator("#meeting-status").inner_text() == "Scheduled"
    assert "09:30" in page.locator(".when").inner_text() and "Europe/Berlin" in page.locator(".when").inner_text()

    # Copy the student's link.
    student_link = page.locator("#student-link").input_value()
    assert f"/join/{meeting_id}/student?t=" in student_link
    page.get_by_role("button", name="Copy student's link").click()
    assert page.evaluate("navigator.clipboard.readText()") == student_link
    assert page.locator("[data-copy=student-link]").inner_text() == "Copied"
    screenshot(page, "meeting-detail.png")

    # The student's calendar invitation carries the student's link.
    with page.expect_download() as download_info:
        page.get_by_role("link", name=re.compile("Calendar invitation for Ada Lovelace")).click()
    download = download_info.value
    assert download.suggested_filename == f"elephant-{meeting_id}-student.ics"
    ics = Path(download.path()).read_bytes().decode().replace("\r\n ", "")
    assert "BEGIN:VEVENT" in ics and "SUMMARY:Tutoring session with Tina Teacher" in ics
    assert f"URL:{student_link}\r\n" in ics
    assert "/teacher?t=" not in ics

    # Cancelling moves the session to the past list with its outcome.
    page.get_by_role("button", name="Cancel session").click()
    assert "cancelled" in page.locator(".messages").inner_text()
    page.get_by_role("link", name="My sessions").click()
    past = page.locator("section", has=page.get_by_role("heading", name="Past"))
    assert "Ada Lovelace" in past.inner_text() and "Cancelled" in past.inner_text()
    live_stack.make_meeting(minutes_from_now=90, student_name="Grace Hopper")
    page.reload()
    assert "Grace Hopper" in page.locator("section", has=page.get_by_role("heading", name="Upcoming")).inner_text()
    screenshot(page, "dashboard.png")
