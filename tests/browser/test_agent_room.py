"""The agents already in the host images keep working (issue 10, item 10 and "Done when").

This plays the existing agent's part exactly (docs/fleet.md "What the host image must do",
/work/shared/seeds/host-agents.md) against `make run`'s local endpoint: on each of a meeting's two hosts,
a tokenless (IMDSv1) GET of ``latest/meta-data/instance-id`` from the host's metadata service (the DCV
stand-in models it per instance, answering tokenless calls only when the host was launched with
``HttpTokens=optional``, as the default desktop profile does), a Scan of ``elephant-meetings`` for
``teacher_ec2_id = <id> OR student_ec2_id = <id>``, the role from the attribute that matched, and the fields
it writes to ``metadata.env`` (``jitsi_url``, ``id``, ``teacher_name``, ``student_name``). Then each desktop's
browser, with no login, opens ``MEETING_URL``: both reach the meeting's video room and meet there.
"""

import time

import boto3
import pytest
import requests

pytestmark = pytest.mark.browser

CONNECTED = (
    "() => window.elephantRoom && window.elephantRoom.pc && window.elephantRoom.pc.connectionState === 'connected'"
)


def eventually(what: str, probe, timeout: float = 90.0):
    """Poll a real process's answer (the stack runs on the wall clock) until ``probe`` returns something."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (found := probe()) is not None:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def client(live_stack, service: str):
    env = live_stack.stack.env
    return boto3.client(
        service,
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_REGION"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def agent_metadata(live_stack, instance_id: str) -> dict[str, str]:
    """What the agent on ``instance_id`` does at boot; returns its metadata.env as a dict."""
    standin = f"http://127.0.0.1:{live_stack.stack.standin_port}"
    # 1. Its own instance id: a plain GET, no session token (IMDSv1).
    answer = requests.get(f"{standin}/imds/{instance_id}/latest/meta-data/instance-id", timeout=10)
    assert answer.status_code == 200, "the agent's tokenless metadata call was refused"
    my_id = answer.text
    assert my_id == instance_id

    # 2. The Scan, as the agent sends it; the first match; the role from the attribute that matched.
    def scan():
        items = client(live_stack, "dynamodb").scan(
            TableName="elephant-meetings",
            FilterExpression="teacher_ec2_id = :id OR student_ec2_id = :id",
            ExpressionAttributeValues={":id": {"S": my_id}},
        )["Items"]
        return items[0] if items and "jitsi_url" in items[0] else None

    item = eventually("the meeting's item in DynamoDB", scan)
    role = "teacher" if item.get("teacher_ec2_id", {}).get("S") == my_id else "student"
    field = lambda name, default: item.get(name, {}).get("S", default)  # noqa: E731  (missing: the agent's defaults)
    return {
        "MEETING_URL": field("jitsi_url", "URL_NOT_FOUND"),
        "USER_ROLE": role,
        "SESSION_ID": field("id", ""),
        "TEACHER_NAME": field("teacher_name", "UnknownTeacher"),
        "STUDENT_NAME": field("student_name", "UnknownStudent"),
    }


def test_the_agents_find_their_meeting_and_open_its_room_without_a_login(live_stack, new_context, tmp_path):
    meeting = live_stack.make_meeting(minutes_from_now=1)  # due now: the launch sweep starts its hosts
    ec2 = client(live_stack, "ec2")

    def hosts():
        found = ec2.describe_instances(Filters=[{"Name": "tag:MeetingID", "Values": [meeting["id"]]}])
        instances = [i for r in found["Reservations"] for i in r["Instances"]]
        roles = {tag["Value"]: i["InstanceId"] for i in instances for tag in i["Tags"] if tag["Key"] == "Role"}
        return roles if len(roles) == 2 else None

    instances = eventually("both hosts launched", hosts)
    desktops = {}
    for launched_role, instance_id in instances.items():
        metadata = agent_metadata(live_stack, instance_id)
        (tmp_path / f"{launched_role}-metadata.env").write_text("".join(f"{k}={v}\n" for k, v in metadata.items()))
        assert metadata["USER_ROLE"] == launched_role and metadata["SESSION_ID"] == meeting["id"]
        assert (metadata["TEACHER_NAME"], metadata["STUDENT_NAME"]) == ("Tina Teacher", "Stu Student")
        assert metadata["MEETING_URL"].startswith(f"{live_stack.url}/room/{meeting['id']}?k=")
        desktops[launched_role] = metadata
    assert desktops["teacher"]["MEETING_URL"] == desktops["student"]["MEETING_URL"]  # one jitsi_url per meeting

    # Each desktop's browser: no cookies, no login, opens MEETING_URL.
    teacher = new_context(permissions=["camera", "microphone"]).new_page()
    response = teacher.goto(desktops["teacher"]["MEETING_URL"])
    assert response.status == 200 and "/accounts/login" not in teacher.url
    teacher.wait_for_selector("#room")
    teacher.wait_for_selector("#conn-state[data-state=waiting]", timeout=30_000)  # joined the room's signalling
    student = new_context(permissions=["camera", "microphone"]).new_page()
    student.goto(desktops["student"]["MEETING_URL"])
    for page in (teacher, student):
        page.wait_for_function(CONNECTED, timeout=30_000)  # two desktops, two seats: they meet

    # The credential is this meeting's only.
    other = live_stack.make_meeting(minutes_from_now=30)
    credential = desktops["teacher"]["MEETING_URL"].split("?k=", 1)[1]
    stranger = new_context().new_page()
    refused = stranger.goto(f"{live_stack.url}/room/{other['id']}?k={credential}")
    assert refused.status == 403
