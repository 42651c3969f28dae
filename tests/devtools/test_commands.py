"""The local set-up commands `make run` runs: demo accounts and the local AWS endpoint."""

import io
import os
import subprocess
from pathlib import Path

import boto3
import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from devtools.stack import BIN, free_port, wait_for_port
from elephant import aws
from tests.mirror.dynamo_support import ddb  # noqa: F401  the fixture

REGION = "us-west-2"


def run(command: str, *args: str) -> str:
    out = io.StringIO()
    call_command(command, *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_ensure_demo_users_creates_the_accounts_once():
    first = run("ensure_demo_users")
    assert "staff / elephant-staff  (created)" in first and "teacher / elephant-teacher  (created)" in first
    assert "(exists)" in run("ensure_demo_users") and "(created)" not in run("ensure_demo_users")
    staff, teacher = (get_user_model().objects.get(username=name) for name in ("staff", "teacher"))
    assert staff.is_staff and staff.is_superuser and staff.check_password("elephant-staff")
    assert not teacher.is_staff and teacher.check_password("elephant-teacher")


def test_fleet_local_setup_refuses_without_a_local_endpoint(settings):
    settings.AWS_ENDPOINT_URL = None
    with pytest.raises(CommandError, match="only prepares a local endpoint"):
        call_command("fleet_local_setup")


@pytest.fixture
def moto(settings, tmp_path):
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_SESSION_TOKEN="testing")
    port = free_port()
    proc = subprocess.Popen(
        [str(Path(BIN) / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port("127.0.0.1", port, 30, "moto_server", proc)
        settings.AWS_ENDPOINT_URL = f"http://127.0.0.1:{port}"
        settings.AWS_REGION = REGION
        settings.ELEPHANT_AMI_ID = ""
        settings.ELEPHANT_DNS_ZONE_ID = ""
        settings.ELEPHANT_DNS_DOMAIN = "desktops.example.test"
        aws.aws_clients_reset()
        yield settings.AWS_ENDPOINT_URL
    finally:
        aws.aws_clients_reset()
        proc.terminate()
        proc.wait(timeout=10)


def test_fleet_local_setup_registers_an_ami_and_a_zone_once(moto):
    made = dict(line.split("=", 1) for line in run("fleet_local_setup").split())
    assert set(made) == {"ELEPHANT_AMI_ID", "ELEPHANT_DNS_ZONE_ID"}
    assert dict(line.split("=", 1) for line in run("fleet_local_setup").split()) == made
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=moto)
    (image,) = ec2.describe_images(ImageIds=[made["ELEPHANT_AMI_ID"]])["Images"]
    assert image["Name"] == "elephant-dcv-local"
    zone = boto3.client("route53", region_name=REGION, endpoint_url=moto).get_hosted_zone(
        Id=made["ELEPHANT_DNS_ZONE_ID"]
    )
    assert zone["HostedZone"]["Name"] == "desktops.example.test."


def test_fleet_local_setup_prints_nothing_the_settings_already_name(moto, settings):
    settings.ELEPHANT_AMI_ID = "ami-12345678"
    settings.ELEPHANT_DNS_ZONE_ID = "Z0000"
    assert run("fleet_local_setup") == ""


@pytest.mark.usefixtures("ddb")
def test_demo_recording_plays_the_agents_and_the_page_offers_the_download(client):
    """`manage.py demo_recording <id>` uploads to the local bucket and writes the address where the
    agents write it; the mirror's pull stores it and the meeting page mints a link that downloads it."""
    import requests

    from devtools.stack import RECORDINGS_BUCKET
    from meetings.models import MeetingStatus
    from mirror.services import mirror_pull
    from tests.factories import make_meeting
    from tests.mirror.dynamo_support import mirrored

    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    aws.aws_clients_reset()
    aws.aws_client("s3").create_bucket(
        Bucket=RECORDINGS_BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    teacher = get_user_model().objects.create_user("tina", password="pw-tina-123")
    meeting = mirrored(make_meeting(teacher=teacher, status=MeetingStatus.IN_PROGRESS))
    with pytest.raises(CommandError, match="no meeting"):
        run("demo_recording", "zzzzzzzzzzzzzzzz")
    assert "student: s3://elephant-recordings/" in run("demo_recording", meeting.id, "--role", "student")
    assert mirror_pull().session_data == 1
    meeting.refresh_from_db()
    assert meeting.student_session_data == f"s3://{RECORDINGS_BUCKET}/{meeting.id}/student.txt"
    client.force_login(teacher)
    page = client.get(f"/meetings/{meeting.id}").content.decode()
    link = page.split("Student&#x27;s desktop", 1)[0].rsplit('href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    assert requests.get(link, timeout=10).content.startswith(b"Elephant demo recording")
    aws.aws_clients_reset()
