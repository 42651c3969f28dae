"""Real-browser tests: headless Debian Chromium, driven by Playwright, against the real stack.

One stack for all of them (package-scoped: it stops, and so does Playwright's event loop in the
main thread, before the asyncio tests that follow run), started through ``devtools.stack.Stack`` as `make run` starts
it (daphne, Celery worker and beat, moto server, DCV stand-in), on free ports, with a private
Redis server and a SQLite file of its own, short sweeps and a short simulated boot. Meetings are
made through the stack's own database with ``manage.py shell``. Screenshots go to
tests/artifacts/; ``ELEPHANT_UPDATE_SCREENSHOTS=1`` also copies the README's ones to docs/screenshots/.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from devtools.stack import BASE_DIR, Stack, free_port
from tests.notifications.smtp import SmtpSink
from tests.support import RedisServer, require_tool

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]
ARTIFACTS = BASE_DIR / "tests" / "artifacts"
README_SCREENSHOTS = BASE_DIR / "docs" / "screenshots"
# The screenshots the README shows (the README shows them).
README_SHOTS = [
    "login.png",
    "dashboard.png",
    "schedule-errors.png",
    "meeting-detail.png",
    "waiting-room.png",
    "waiting-room-phone.png",
    "video-room.png",
    "dcv-desktop.png",
]
# Demo accounts made by `ensure_demo_users` (the stack's prepare step).
TEACHER = ("teacher", "elephant-teacher")


def _missing(what: str):
    require_tool(what, False)


def _clean_env(tmp: Path, redis_url: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ELEPHANT_", "DJANGO_", "CELERY_"))}
    env.update(
        AWS_SHARED_CREDENTIALS_FILE=str(tmp / "no-aws-credentials"),
        AWS_CONFIG_FILE=str(tmp / "no-aws-config"),
        DATABASE_URL=f"sqlite:///{tmp / 'browser.sqlite3'}",
        REDIS_URL=redis_url,
        ELEPHANT_SIM_BOOT_SECONDS="4",
        ELEPHANT_SWEEP_SECONDS="1",
        # What a new image starts from: the stand-in's few seconds, so the learned lead is seconds too
        # and a session half an hour away waits, scheduled, as it would for a real desktop's lead.
        ELEPHANT_BOOT_PRIOR='{"windows": {"cold": [4, 8], "warm": [4, 8]}, "linux": {"cold": [4, 8], "warm": [4, 8]}}',
        ELEPHANT_ICE_SERVERS="[]",  # no STUN on the internet: the two browsers share a host
        PYTHONUNBUFFERED="1",
    )
    return env


class BrowserStack:
    """The running stack plus what the tests need from it."""

    def __init__(self, stack: Stack):
        self.stack = stack
        self.url = stack.url

    def shell(self, code: str) -> dict:
        """Run Django code against the stack's database; its last printed line is JSON."""
        result = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", textwrap.dedent(code)],
            cwd=BASE_DIR,
            env=self.stack.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout.strip().splitlines()[-1])

    def make_meeting(self, *, minutes_from_now: float, student_name: str = "Stu Student") -> dict:
        return self.shell(
            f"""
            import json
            from datetime import timedelta
            from django.contrib.auth import get_user_model
            from django.utils import timezone
            from meetings.links import meeting_links, room_link
            from meetings.services import meeting_schedule
            teacher = get_user_model().objects.get(username="{TEACHER[0]}")
            meeting = meeting_schedule(
                teacher=teacher, teacher_name="Tina Teacher", teacher_email="", student_name="{student_name}",
                student_email="", meet_time=timezone.now() + timedelta(minutes={minutes_from_now}),
                time_zone="Europe/Berlin", duration_minutes=60, actor="test",
            )
            print(json.dumps({{
                "id": meeting.id, **meeting_links(meeting),
                "teacher_room": room_link(meeting_id=meeting.id, role="teacher"),
                "student_room": room_link(meeting_id=meeting.id, role="student"),
            }}))
            """
        )

    def move_meeting_to_now(self, meeting_id: str) -> None:
        """The session starts now, due for launch at once: the launch sweep picks it up at its next run."""
        self.shell(
            f"""
            import json
            from django.utils import timezone
            from meetings.models import Meeting
            now = timezone.now()
            print(json.dumps(Meeting.objects.filter(pk="{meeting_id}").update(meet_time=now, launch_at=now)))
            """
        )


@pytest.fixture(scope="package")
def live_stack(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        _missing(f"{CHROMIUM} is not installed (apt-get install chromium)")
    tmp = tmp_path_factory.mktemp("browser-stack")
    redis = RedisServer().start()
    smtp = SmtpSink().start()  # the stack's mail goes to a real SMTP server (tests/browser/test_invitations.py)
    env = {**_clean_env(tmp, redis.url), "DJANGO_EMAIL_URL": smtp.url}
    stack = Stack(web_port=free_port(), env=env, workdir=tmp, quiet=True)
    try:
        stack.start()
        live = BrowserStack(stack)
        live.smtp = smtp
        yield live
    except BaseException:
        for log in sorted(tmp.glob("*.log")):
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}")
        raise
    finally:
        stack.stop()
        redis.stop()
        smtp.stop()


@pytest.fixture(scope="package")
def browser(live_stack):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def new_context(browser, live_stack):
    """Browser contexts (separate cookie jars: separate people), closed after the test."""
    contexts = []

    def make(**options):
        options.setdefault("base_url", live_stack.url)
        options.setdefault("viewport", {"width": 1280, "height": 800})
        options.setdefault("timezone_id", "Europe/Berlin")
        options.setdefault("locale", "en-GB")
        context = browser.new_context(**options)
        context.set_default_timeout(20_000)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()


@pytest.fixture(scope="package")
def screenshot():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    taken = []

    def shoot(page, name: str, *, full_page: bool = True) -> Path:
        path = ARTIFACTS / name
        page.screenshot(path=str(path), full_page=full_page)
        taken.append(name)
        return path

    yield shoot
    if os.environ.get("ELEPHANT_UPDATE_SCREENSHOTS") == "1":
        README_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for name in README_SHOTS:
            if name in taken:
                shutil.copyfile(ARTIFACTS / name, README_SCREENSHOTS / name)


def log_in(page, username: str = TEACHER[0], password: str = TEACHER[1]) -> None:
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/")
