"""The staff console: hosts on the meeting page, and launch / terminate / health-check actions."""

from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone

from fleet import services
from fleet.models import Host, HostState
from meetings.models import MeetingStatus, TerminationReason
from tests.factories import make_meeting, make_staff
from tests.fleet.conftest import instances_of

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:meetings_meeting_changelist")


@pytest.fixture
def staff_client(client):
    client.force_login(make_staff())
    return client


def act(client, action, *meetings) -> list[str]:
    response = client.post(CHANGELIST, {"action": action, "_selected_action": [m.pk for m in meetings]})
    assert response.status_code == 302
    return [m.message for m in get_messages(response.wsgi_request)]


def test_launch_now_then_health_check_then_terminate_now(staff_client, ec2):
    meeting = make_meeting(meet_time=timezone.now() + timedelta(hours=3))
    messages = act(staff_client, "launch_now", meeting)
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.LAUNCHED
    assert any("Launched" in m and meeting.pk in m for m in messages)
    assert len(instances_of(ec2, meeting.pk)) == 2
    assert meeting.events.get(to_status=MeetingStatus.LAUNCHING).actor == "staff:sam"

    result = services.fleet_watchdog_sweep()
    for host_id, address, zone in result.running:
        services.host_running(host_id=host_id, address=address, availability_zone=zone)
    messages = act(staff_client, "rerun_health_check", meeting)
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.HEALTHY
    assert any("teacher HEALTHY" in m for m in messages)

    page = staff_client.get(reverse("admin:meetings_meeting_change", args=[meeting.pk]))
    for host in Host.objects.filter(meeting=meeting):
        assert host.instance_id in page.content.decode()

    act(staff_client, "terminate_now", meeting)
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.TERMINATED
    assert meeting.termination_reason == TerminationReason.STAFF
    assert instances_of(ec2, meeting.pk) == []


def test_launch_now_shows_a_configuration_error(staff_client, settings):
    settings.ELEPHANT_AMI_ID = ""
    meeting = make_meeting()
    messages = act(staff_client, "launch_now", meeting)
    assert any("FAILED" in m and "ELEPHANT_AMI_ID is not set" in m for m in messages)
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.FAILED and meeting.last_error == "ELEPHANT_AMI_ID is not set"
    page = staff_client.get(reverse("admin:meetings_meeting_change", args=[meeting.pk])).content.decode()
    assert "ELEPHANT_AMI_ID is not set" in page


def test_terminate_now_on_a_scheduled_meeting_points_to_cancel(staff_client):
    meeting = make_meeting()
    messages = act(staff_client, "terminate_now", meeting)
    assert any("Cancel" in m for m in messages)
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.SCHEDULED


def test_host_admin_lists_hosts_read_only(staff_client):
    meeting = make_meeting(status=MeetingStatus.HEALTHY)
    host = Host.objects.create(meeting=meeting, role="teacher", instance_id="i-0abc", state=HostState.HEALTHY)
    page = staff_client.get(reverse("admin:fleet_host_changelist"))
    assert page.status_code == 200 and "i-0abc" in page.content.decode()
    assert staff_client.get(reverse("admin:fleet_host_change", args=[host.pk])).status_code == 200
    assert staff_client.get(reverse("admin:fleet_host_add")).status_code == 403
