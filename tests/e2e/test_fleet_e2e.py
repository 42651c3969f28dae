"""End to end: the real processes of `make run` take a meeting from the API to its termination.

daphne, a Celery worker, Celery beat, the moto server behind the strict EC2 proxy and the DCV
stand-in are started through ``devtools.stack.Stack`` (what `make run` runs) on free ports, with a
private Redis server and a file SQLite database of their own, short sweeps and a short simulated
boot. The strict proxy keeps its `make run` rules (fresh instances invisible for a few seconds,
status checks "initializing" for a minute, DNS changes PENDING for a few seconds) and is told the
first instance type has no capacity: the hosts launch on the fallback type, in two zones.
"""

import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
import requests

from devtools.stack import BASE_DIR, Stack, free_port
from tests.support import RedisServer

pytestmark = pytest.mark.e2e

PYTHON = sys.executable


def clean_env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ELEPHANT_", "DJANGO_", "CELERY_"))}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    env.update(
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-aws-credentials"),
        AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"),
        DATABASE_URL=f"sqlite:///{tmp_path / 'e2e.sqlite3'}",
        ELEPHANT_SIM_BOOT_SECONDS="2",
        ELEPHANT_SWEEP_SECONDS="1",
        ELEPHANT_REAPER_SECONDS="5",
        ELEPHANT_LAUNCH_LEAD="5",
        ELEPHANT_OVERRUN_GRACE="0",
        ELEPHANT_HEALTH_TIMEOUT="5",
        ELEPHANT_AVAILABILITY_ZONES="us-west-2a,us-west-2b",
        ELEPHANT_DEPLOYMENT="e2e",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def redis_url():
    server = RedisServer().start()
    yield server.url
    server.stop()


@pytest.fixture
def stack(tmp_path, redis_url):
    env = clean_env(tmp_path)
    env["REDIS_URL"] = redis_url
    running = Stack(web_port=free_port(), env=env, workdir=tmp_path / "var", quiet=True)
    try:
        running.start()
        yield running
    except BaseException:
        for log in sorted((tmp_path / "var").glob("*.log")):
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}")
        raise
    finally:
        running.stop()


def wait_until(what: str, check, timeout: float, stack: Stack):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        if problem := stack.failed():
            raise AssertionError(f"{problem} while waiting for {what}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def test_a_meeting_scheduled_now_runs_its_whole_life_on_the_local_stack(stack, tmp_path):
    env = stack.env
    # Commands from another terminal (python -m devtools.stack --manage ...) find this stack's settings.
    saved = json.loads((tmp_path / "var" / "stack.env").read_text(encoding="utf-8"))
    assert saved["AWS_ENDPOINT_URL"] == env["AWS_ENDPOINT_URL"] and saved["REDIS_URL"] == env["REDIS_URL"]
    key = subprocess.run(
        [PYTHON, "manage.py", "create_api_key", "e2e"],
        cwd=BASE_DIR,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    api = requests.Session()
    api.headers["Authorization"] = f"Api-Key {key}"
    # EC2 has no g4dn.xlarge anywhere: the launch must move on to g5.xlarge at once (HTTP 500, no retries).
    no_g4dn = json.dumps({"instance_type": "g4dn.xlarge", "available": False}).encode()
    urllib.request.urlopen(
        urllib.request.Request(f"{env['AWS_ENDPOINT_URL']}/strict-api/capacity", data=no_g4dn, method="POST"),
        timeout=10,
    ).read()
    # 30 s in the past, one minute long, no grace: the hard stop comes 30 s from now.
    meet_time = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    created = api.post(
        f"{stack.url}/api/v1/meetings",
        json={
            "teacher_name": "Tina Teacher",
            "student_name": "Stu Student",
            "meet_time": meet_time.isoformat().replace("+00:00", "Z"),
            "duration_minutes": 1,
        },
        timeout=10,
    )
    assert created.status_code == 201, created.text
    meeting = created.json()
    meeting_id = meeting["id"]
    hard_stop = time.monotonic() + 30

    def status():
        return api.get(f"{stack.url}/api/v1/meetings/{meeting_id}", timeout=10).json()["status"]

    ec2 = boto3.client(
        "ec2",
        region_name=env["AWS_REGION"],
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )

    def instances(states=("pending", "running")):
        found = ec2.describe_instances(
            Filters=[
                {"Name": "tag:Project", "Values": ["Elephant"]},
                {"Name": "instance-state-name", "Values": list(states)},
            ]
        )
        return [i for r in found["Reservations"] for i in r["Instances"]]

    # Fresh instances are invisible for a few seconds: wait until EC2 lists both.
    launched = wait_until("two instances", lambda: len(instances()) == 2 and instances(), 20, stack)
    tags = sorted(({t["Key"]: t["Value"] for t in i["Tags"]} for i in launched), key=lambda t: t["Role"])
    assert [(t["MeetingID"], t["Role"], t["Name"], t["Project"], t["ElephantDeployment"]) for t in tags] == [
        (meeting_id, "student", f"{meeting_id}_student", "Elephant", "e2e"),
        (meeting_id, "teacher", f"{meeting_id}_teacher", "Elephant", "e2e"),
    ]
    assert {i["ImageId"] for i in launched} == {env["ELEPHANT_AMI_ID"]}
    assert {i["InstanceType"] for i in launched} == {"g5.xlarge"}
    assert sorted(i["Placement"]["AvailabilityZone"] for i in launched) == ["us-west-2a", "us-west-2b"]

    # The hosts attest (the stand-in plays their boot script): EC2's status checks, "initializing" for
    # a minute under the strict proxy's `make run` rules, are no gate.
    wait_until("HEALTHY", lambda: status() == "HEALTHY", 30, stack)

    # Both boots went into the history the learned launch lead is fitted from (on make run's SQLite too).
    def boots():
        with sqlite3.connect(tmp_path / "e2e.sqlite3") as db:
            rows = db.execute("SELECT boot_seconds FROM fleet_host WHERE meeting_id = ?", [meeting_id]).fetchall()
        return len(rows) == 2 and all(seconds is not None and seconds >= 0 for (seconds,) in rows)

    wait_until("both boots recorded", boots, 15, stack)

    join = requests.get(meeting["teacher_link"], headers={"Accept": "application/json"}, timeout=10)
    assert join.status_code == 200, join.text
    # The link the browser keeps goes through Elephant, which mints a fresh single-use DCV token on
    # every visit and redirects to the host's DCV URL.
    desktop_link = join.json()["dcv_url"]
    visit = requests.get(desktop_link, timeout=10, allow_redirects=False)
    assert visit.is_redirect, visit.text
    dcv_url = visit.headers["Location"]
    assert dcv_url.startswith(f"http://127.0.0.1:{stack.standin_port}/i-")
    assert "?authToken=" in dcv_url and dcv_url.endswith("#console")
    desktop = requests.get(dcv_url, timeout=10)
    assert desktop.status_code == 200, desktop.text
    assert "DCV authenticated: signed in as teacher" in desktop.text
    assert meeting_id in desktop.text
    replay = requests.get(dcv_url, timeout=10)
    assert replay.status_code == 403 and "already used" in replay.text
    reload = requests.get(desktop_link, timeout=10)  # a reload of the desktop tab still authenticates
    assert reload.status_code == 200 and "DCV authenticated: signed in as teacher" in reload.text

    assert status() == "IN_PROGRESS"

    wait_until("TERMINATED", lambda: status() == "TERMINATED", max(0, hard_stop - time.monotonic()) + 15, stack)
    final = api.get(f"{stack.url}/api/v1/meetings/{meeting_id}", timeout=10).json()
    assert final["termination_reason"] == "SCHEDULED_END"
    wait_until(
        "no instance left running",
        lambda: instances(("pending", "running", "stopping", "stopped")) == [] or None,
        10,
        stack,
    )
