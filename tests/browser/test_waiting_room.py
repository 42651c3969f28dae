"""A participant waits for the desktops, watching the steps advance live, and lands on the desktop."""

import re
from datetime import UTC, datetime, timedelta

import pytest

from tests.browser.conftest import log_in

pytestmark = pytest.mark.browser

# Every change of a step's state, reported to the test as it happens (it survives the redirect).
RECORD_STEPS = """() => {
  const report = () => window.stepChanged(
    Array.from(document.querySelectorAll('#steps li')).map((li) => li.dataset.step + ':' + li.dataset.state).join(' '));
  new MutationObserver(report).observe(document.getElementById('steps'), {attributes: true, subtree: true});
  report();
}"""


def test_the_waiting_room_follows_the_desktop_live_and_opens_it(live_stack, new_context, screenshot):
    meeting = live_stack.make_meeting(minutes_from_now=30)  # inside the join window, before the launch lead

    teacher = new_context().new_page()
    log_in(teacher)
    teacher.goto(f"/meetings/{meeting['id']}")
    assert teacher.locator("#meeting-status").inner_text() == "Scheduled"

    context = new_context(permissions=["camera", "microphone"])
    page = context.new_page()
    changes: list[str] = []
    page.expose_function("stepChanged", lambda states: changes.append(states))
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: frame == page.main_frame and navigations.append(frame.url))

    page.goto(meeting["student_link"])
    page.evaluate(RECORD_STEPS)
    assert page.locator("h1").inner_text() == "Joining as the student"
    assert page.locator("#steps li[data-step=scheduled]").get_attribute("data-state") == "current"
    page.wait_for_selector("#devices[data-state=granted]")
    page.wait_for_selector("#waiting[data-live=socket]")  # subscribed to the status push
    screenshot(page, "waiting-room.png")

    # The teacher waits too, in a browser whose WebSocket never connects: polling alone must do.
    without_socket = new_context(permissions=["camera", "microphone"])
    without_socket.add_init_script("window.WebSocket = undefined;")
    teacher_waiting = without_socket.new_page()
    teacher_waiting.goto(meeting["teacher_link"])
    assert teacher_waiting.locator("#waiting").get_attribute("data-live") == "polling"

    live_stack.move_meeting_to_now(meeting["id"])

    page.wait_for_selector("#steps li[data-step=scheduled][data-state=done]", timeout=30_000)
    # Then it opens the desktop by itself: the stand-in checked the token with Elephant's /dcv/auth.
    page.wait_for_url(re.compile(r"/i-[0-9a-f]+/\?authToken="), timeout=90_000)
    verdict = page.locator("#verdict")
    assert "authenticated" in (verdict.get_attribute("class") or "")
    assert "DCV authenticated: signed in as student" in verdict.inner_text()
    assert "student" in page.content() and meeting["id"] in page.content()
    screenshot(page, "dcv-desktop.png")

    # The steps moved on the same page, without a reload, in order.
    assert [url for url in navigations if "/join/" in url] == [meeting["student_link"]]
    currents = [re.search(r"(\w+):current", change).group(1) for change in changes if ":current" in change]
    print("steps seen:", *changes, sep="\n  ")
    assert currents[0] == "scheduled" and len(currents) >= 3
    assert changes[-1] == "scheduled:done launching:done booting:done health:done ready:done"
    assert currents == sorted(currents, key=["scheduled", "launching", "booting", "health"].index)

    teacher_waiting.wait_for_url(re.compile(r"/i-[0-9a-f]+/\?authToken="), timeout=30_000)
    assert "DCV authenticated: signed in as teacher" in teacher_waiting.locator("#verdict").inner_text()

    # The teacher's meeting page followed without a reload too.
    teacher.wait_for_function(
        "() => document.getElementById('meeting-status').textContent.trim() === 'In progress'", timeout=30_000
    )
    screenshot(teacher, "meeting-detail-live.png")


def test_phone_width_waiting_room(live_stack, new_context, screenshot):
    meeting = live_stack.make_meeting(minutes_from_now=40, student_name="Priya Phone")
    page = new_context(
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        permissions=["camera", "microphone"],
    ).new_page()
    page.goto(meeting["student_link"])
    page.wait_for_selector("#devices[data-state=granted]")
    # Nothing overflows sideways at phone width.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(page, "waiting-room-phone.png")

    # A browser that refuses the camera gets told how to allow it.
    refusing = new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    refusing.add_init_script(
        "navigator.mediaDevices.getUserMedia = () =>"
        " Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));"
    )
    page = refusing.new_page()
    page.goto(meeting["student_link"])
    page.wait_for_selector("#devices[data-state=denied]")
    assert page.locator("#device-help").is_visible()
    assert page.get_by_role("button", name="Check again").is_visible()
    screenshot(page, "waiting-room-camera-blocked.png")


# A signalling socket that pushes one status (LAUNCHED) as soon as the page subscribes.
PUSH_LAUNCHED = """window.WebSocket = function () {
  const socket = this;
  const deliver = (frame) => setTimeout(() => socket.onmessage({data: JSON.stringify(frame)}), 0);
  socket.readyState = 1;
  socket.close = () => {};
  socket.send = (text) => {
    const frame = JSON.parse(text);
    if (frame.action === 'subscribe') deliver({type: 'status', meetingId: frame.meetingId, status: 'LAUNCHED'});
  };
  deliver({type: 'connected', connectionId: 'fake'});
};"""


def test_a_late_poll_answer_never_moves_the_steps_back(live_stack, new_context):
    meeting = live_stack.make_meeting(minutes_from_now=40)
    context = new_context(permissions=["camera", "microphone"])
    context.add_init_script(PUSH_LAUNCHED)
    page = context.new_page()
    stale = {"status": "LAUNCHING", "message": "Your desktop is being launched.", "final": False}

    def answer_from_before_the_push(route):
        if "application/json" in (route.request.headers.get("accept") or ""):
            route.fulfill(status=202, json=stale)
        else:
            route.continue_()

    page.route("**/join/**", answer_from_before_the_push)
    page.goto(meeting["student_link"])
    page.wait_for_function("() => window.elephantWaiting.answers > 0")  # the poll the push set off
    assert page.locator("#steps li[data-step=booting]").get_attribute("data-state") == "current"
    assert page.locator("#steps li[data-step=launching]").get_attribute("data-state") == "done"


def test_too_early_opens_by_itself_on_a_device_whose_clock_runs_ahead(live_stack, new_context):
    meeting = live_stack.make_meeting(minutes_from_now=120)
    page = new_context().new_page()
    # This device believes the link opened a minute ago; Elephant's clock says an hour to go.
    page.clock.install(time=datetime.now(UTC) + timedelta(minutes=61))
    page.goto(meeting["student_link"])
    assert page.locator("#waiting").get_attribute("data-reason") == "too_early"
    page.clock.run_for(2_000)  # asks Elephant, which still says too early
    live_stack.shell(
        f"""
        import json
        from datetime import timedelta
        from django.utils import timezone
        from meetings.models import Meeting
        later = timezone.now() + timedelta(minutes=30)
        print(json.dumps(Meeting.objects.filter(pk="{meeting["id"]}").update(meet_time=later)))
        """
    )
    page.clock.run_for(15_000)
    page.wait_for_selector("#waiting[data-code='202'] #steps")
