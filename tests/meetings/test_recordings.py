"""Recording links: the S3 address forms understood, presigned per page view, only for who may see the meeting."""

from urllib.parse import urlsplit

import pytest
from django.contrib.auth import get_user_model

from meetings.models import MeetingStatus
from meetings.recordings import S3Object, meeting_recordings, s3_object
from tests.factories import make_meeting


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("s3://rec/m1/student.webm", S3Object("rec", "m1/student.webm")),
        ("https://rec.s3.us-west-2.amazonaws.com/m1/t.webm", S3Object("rec", "m1/t.webm")),
        ("https://rec.s3.amazonaws.com/a%20b.webm", S3Object("rec", "a b.webm")),
        ("https://s3.eu-central-1.amazonaws.com/rec/m1/t.webm", S3Object("rec", "m1/t.webm")),
        ("https://evil.example.com/rec/m1/t.webm", None),
        ("http://rec.s3.amazonaws.com/m1/t.webm", None),  # plain http to AWS is not ours to sign
        ("s3://rec", None),
        ("ftp://rec/x", None),
        ("", None),
    ],
)
def test_address_forms(address, expected, settings):
    settings.AWS_ENDPOINT_URL = None
    assert s3_object(address) == expected


def test_the_local_endpoint_form(settings):
    settings.AWS_ENDPOINT_URL = "http://127.0.0.1:5000"
    assert s3_object("http://127.0.0.1:5000/rec/m1/s.webm") == S3Object("rec", "m1/s.webm")
    assert s3_object("http://127.0.0.1:5001/rec/m1/s.webm") is None


@pytest.mark.django_db
def test_the_page_mints_a_link_for_the_teacher_only(client, settings, monkeypatch):
    from elephant import aws

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    settings.AWS_ENDPOINT_URL = None
    aws.aws_clients_reset()
    teacher = get_user_model().objects.create_user("tina", password="pw-tina-123")
    meeting = make_meeting(teacher=teacher, status=MeetingStatus.TERMINATED)
    client.force_login(teacher)
    assert b"No recording" in client.get(f"/meetings/{meeting.id}").content
    meeting.student_session_data = "s3://rec/m1/student.webm"
    meeting.teacher_session_data = "https://elsewhere.example.com/x.webm"
    meeting.save()
    (teacher_side, student_side) = meeting_recordings(meeting)
    assert teacher_side.url == "" and "cannot sign" in teacher_side.problem
    link = urlsplit(student_side.url)
    assert link.path == "/rec/m1/student.webm" or link.netloc.startswith("rec.")
    assert "X-Amz-Signature" in link.query  # SigV4
    page = client.get(f"/meetings/{meeting.id}").content.decode()
    assert "Download the recording: Student&#x27;s desktop" in page and "cannot sign" in page
    other = get_user_model().objects.create_user("otto", password="pw-otto-123")
    client.force_login(other)
    assert client.get(f"/meetings/{meeting.id}").status_code == 404
    aws.aws_clients_reset()


@pytest.mark.django_db
def test_the_admin_page_mints_a_link_when_staff_open_it(client, settings, monkeypatch):
    from elephant import aws

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    settings.AWS_ENDPOINT_URL = None
    aws.aws_clients_reset()
    staff = get_user_model().objects.create_superuser("sam", password="pw-sam-12345")
    meeting = make_meeting(status=MeetingStatus.TERMINATED)
    client.force_login(staff)
    url = f"/admin/meetings/meeting/{meeting.id}/change/"
    assert "No recording" in client.get(url).content.decode()
    meeting.student_session_data = "s3://rec/m1/student.webm"
    meeting.save()
    first = client.get(url).content.decode()
    assert "Student&#x27;s desktop: <a href=" in first and "X-Amz-Signature" in first
    aws.aws_clients_reset()
