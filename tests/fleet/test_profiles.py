"""Desktop profiles: the seeded default, what a launch takes from a profile, picking one, the admin's IMDSv1 flag."""

import base64
import json
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from fleet import services
from fleet.models import DesktopProfile, Host
from meetings.apikeys import api_key_create
from meetings.models import Meeting, UsagePlan
from meetings.schedule import desktop_profile_choices, schedule_clean
from tests.factories import make_meeting, make_staff
from tests.fleet.conftest import instances_of


@pytest.mark.django_db
def test_the_seeded_default_keeps_the_agents_working():
    default = DesktopProfile.objects.default()
    assert default.name == "default" and default.allows_imdsv1 and default.os == "windows"
    assert default.ami_id == "" and default.instance_types == ""  # blank: today's ELEPHANT_* settings


@pytest.mark.django_db
def test_the_default_launches_with_the_settings_imdsv1_allowed_and_user_data(ec2, settings):
    meeting = make_meeting(meet_time=timezone.now() + timedelta(minutes=2))
    services.meeting_launch(meeting_id=meeting.pk)
    (instance,) = [
        i for i in instances_of(ec2, meeting.pk) if i["Tags"] and {"Key": "Role", "Value": "teacher"} in i["Tags"]
    ]
    assert instance["ImageId"] == settings.ELEPHANT_AMI_ID and instance["InstanceType"] == "g4dn.xlarge"
    assert instance["MetadataOptions"]["HttpTokens"] == "optional"
    assert instance["MetadataOptions"]["InstanceMetadataTags"] == "enabled"
    user_data = ec2.describe_instance_attribute(InstanceId=instance["InstanceId"], Attribute="userData")
    script = base64.b64decode(user_data["UserData"]["Value"]).decode()
    assert script.startswith("<powershell>") and "/dcv/auth/$InstanceId" in script


@pytest.mark.django_db
def test_a_named_profile_decides_the_launch(ec2):
    ec2.register_image(Name="linux-desktop", RootDeviceName="/dev/xvda")
    image = ec2.describe_images(Filters=[{"Name": "name", "Values": ["linux-desktop"]}])["Images"][0]["ImageId"]
    DesktopProfile.objects.create(
        name="linux-gpu", os="linux", ami_id=image, instance_types="g5.2xlarge,g6.xlarge", volume_size_gb=80
    )
    meeting = make_meeting(meet_time=timezone.now() + timedelta(minutes=2), desktop_profile="linux-gpu")
    services.meeting_launch(meeting_id=meeting.pk)
    instances = instances_of(ec2, meeting.pk)
    assert len(instances) == 2
    for instance in instances:
        assert instance["ImageId"] == image and instance["InstanceType"] == "g5.2xlarge"
        assert instance["MetadataOptions"]["HttpTokens"] == "required"  # this image's agents use IMDSv2
        user_data = ec2.describe_instance_attribute(InstanceId=instance["InstanceId"], Attribute="userData")
        assert base64.b64decode(user_data["UserData"]["Value"]).startswith(b"#!/bin/bash")
    volumes = ec2.describe_volumes()["Volumes"]
    assert {v["Size"] for v in volumes if v["Attachments"]} >= {80}


@pytest.mark.django_db
def test_a_profile_gone_before_the_launch_fails_it_with_a_message(ec2):
    meeting = make_meeting(meet_time=timezone.now() + timedelta(minutes=2), desktop_profile="removed")
    services.meeting_launch(meeting_id=meeting.pk)
    meeting.refresh_from_db()
    assert meeting.status == "FAILED" and "desktop profile 'removed' does not exist" in meeting.last_error
    assert instances_of(ec2, meeting.pk) == []
    assert not Host.objects.filter(meeting=meeting).exclude(instance_id="").exists()


@pytest.mark.django_db
def test_a_profile_mixing_gpu_vendors_is_refused():
    with pytest.raises(ValidationError, match="mix GPU vendors"):
        DesktopProfile(name="mixed", instance_types="g4ad.xlarge,g5.xlarge").full_clean()


@pytest.mark.django_db
class TestPicking:
    def test_the_choices_come_from_the_fleet(self):
        DesktopProfile.objects.create(name="big", label="Big desktop")
        DesktopProfile.objects.create(name="retired", is_active=False)
        assert desktop_profile_choices() == [("default", "Standard desktop"), ("big", "Big desktop")]
        assert schedule_clean({"desktop_profile": "big"}) == ({"desktop_profile": "big"}, {})
        _, errors = schedule_clean({"desktop_profile": "retired"})
        assert "Unknown desktop profile" in errors["desktop_profile"][0]

    def test_the_api_takes_desktop_profile(self, client):
        DesktopProfile.objects.create(name="big")
        plan = UsagePlan.objects.create(name="p")
        _, key = api_key_create(name="acme", plan=plan)
        body = {
            "teacher_name": "Tina",
            "student_name": "Stu",
            "meet_time": (timezone.now() + timedelta(hours=2)).isoformat(),
            "desktop_profile": "big",
        }
        headers = {"HTTP_AUTHORIZATION": f"Api-Key {key}"}
        created = client.post("/api/v1/meetings", json.dumps(body), content_type="application/json", **headers)
        assert created.status_code == 201, created.content
        assert Meeting.objects.get(pk=created.json()["id"]).desktop_profile == "big"
        bad = client.post(
            "/api/v1/meetings",
            json.dumps({**body, "desktop_profile": "nope"}),
            content_type="application/json",
            **headers,
        )
        assert bad.status_code == 400 and "desktop_profile" in bad.json()["errors"]

    def test_the_teacher_picks_one_on_the_schedule_page(self, client):
        from meetings.forms import ScheduleForm

        assert "desktop_profile" not in ScheduleForm().fields  # one profile: nothing to pick
        DesktopProfile.objects.create(name="big", label="Big desktop")
        form = ScheduleForm()
        assert form.fields["desktop_profile"].widget.choices == [
            ("default", "Standard desktop"),
            ("big", "Big desktop"),
        ]


@pytest.mark.django_db
def test_the_admin_flags_every_profile_allowing_imdsv1(client):
    DesktopProfile.objects.create(name="modern", allows_imdsv1=False)
    DesktopProfile.objects.create(name="legacy", allows_imdsv1=True)
    staff = make_staff()
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    page = client.get("/admin/fleet/desktopprofile/")
    html = page.content.decode()
    assert page.status_code == 200
    assert html.count('class="imdsv1-allowed"') == 2  # default and legacy
    assert "allow IMDSv1 (default, legacy)" in html
