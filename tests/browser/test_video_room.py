"""Two browsers meet in the video room, and meet again after one of them reloads."""

import pytest

pytestmark = pytest.mark.browser

CONNECTED = (
    "() => window.elephantRoom && window.elephantRoom.pc && window.elephantRoom.pc.connectionState === 'connected'"
)

# Resolves once the remote <video> has presented `frames` new frames with a real picture.
REMOTE_FRAMES = """(frames) => new Promise((resolve) => {
  const video = document.getElementById('remote-video');
  const start = video.currentTime;
  let seen = 0;
  const next = () => video.requestVideoFrameCallback(() => {
    seen += 1;
    if (seen >= frames && video.videoWidth > 0 && video.currentTime > start) {
      resolve({width: video.videoWidth, height: video.videoHeight, advanced: video.currentTime - start});
    } else next();
  });
  next();
})"""


def wait_until_playing(page) -> dict:
    page.wait_for_function(CONNECTED, timeout=20_000)
    page.wait_for_selector("#conn-state[data-state=connected]")
    return page.evaluate(REMOTE_FRAMES, 15)


def test_two_participants_connect_and_reconnect_after_a_reload(live_stack, new_context, screenshot):
    meeting = live_stack.make_meeting(minutes_from_now=20)
    teacher = new_context(permissions=["camera", "microphone"]).new_page()
    student = new_context(permissions=["camera", "microphone"]).new_page()

    teacher.goto(meeting["teacher_room"])
    teacher.wait_for_selector("#conn-state[data-state=waiting]")
    student.goto(meeting["student_room"])

    for page in (teacher, student):
        playing = wait_until_playing(page)
        assert playing["width"] > 0 and playing["height"] > 0 and playing["advanced"] > 0
    assert "Connected with Stu Student" in teacher.locator("#conn-state").inner_text()
    assert "Connected with Tina Teacher" in student.locator("#conn-state").inner_text()
    screenshot(teacher, "video-room.png", full_page=False)

    # Mute and camera off are visible states of the buttons.
    student.get_by_role("button", name="Mute").click()
    assert student.locator("#toggle-mic").get_attribute("aria-pressed") == "true"
    assert student.evaluate("window.elephantRoom.stream.getAudioTracks()[0].enabled") is False
    student.get_by_role("button", name="Turn camera off").click()
    assert student.evaluate("window.elephantRoom.stream.getVideoTracks()[0].enabled") is False
    student.get_by_role("button", name="Turn camera on").click()

    # The student reloads: a new socket, a new offer, a new connection on both sides.
    old_pc = teacher.evaluate_handle("window.elephantRoom.pc")
    student.reload()
    for page in (student, teacher):
        playing = wait_until_playing(page)
        assert playing["width"] > 0 and playing["advanced"] > 0
    assert teacher.evaluate("(old) => window.elephantRoom.pc !== old", old_pc)

    # Leaving tells the other side, which waits for them to come back.
    student.get_by_role("button", name="Leave").click()
    student.wait_for_selector("#conn-state[data-state=left]")
    teacher.wait_for_selector("#conn-state[data-state=waiting]")
    screenshot(student, "video-room-left.png", full_page=False)
