"""The mirror's write guard right after a transition (issue 12, item 17; moto over HTTP).

The conditional write expects the status the app last mirrored, not the meeting's status now: right
after a transition the two differ, and guarding on the new one would fail the condition, count a
conflict that is none and write twice. Every other conflict test changes data without a transition.
"""

# ruff: noqa: F811  (the fixtures imported from dynamo_support are used as arguments)

import pytest

from meetings.models import MeetingStatus
from meetings.services import meeting_cancel, meeting_start_on_join, meeting_transition
from mirror import dynamo
from mirror.models import MirrorState
from mirror.services import mirror_flush
from tests.factories import make_meeting, make_ready_meeting
from tests.mirror.dynamo_support import ddb, ddb_calls, mirrored  # noqa: F401


def start(meeting):
    assert meeting_start_on_join(meeting=meeting, role="teacher")


def launch(meeting):
    assert meeting_transition(
        meeting=meeting, to_status=MeetingStatus.LAUNCHING, allowed_from={MeetingStatus.SCHEDULED}
    )


def cancel(meeting):
    assert meeting_cancel(meeting=meeting, actor="test")


@pytest.mark.parametrize(
    ("make", "transition", "before", "after"),
    [
        (make_ready_meeting, start, "HEALTHY", "IN_PROGRESS"),
        (make_meeting, launch, "SCHEDULED", "LAUNCHING"),
        (make_meeting, cancel, "SCHEDULED", "CANCELLED"),
    ],
    ids=["start", "launch", "cancel"],
)
def test_a_flush_right_after_a_transition_writes_once_without_a_conflict(
    ddb, ddb_calls, make, transition, before, after
):
    meeting = mirrored(make())
    assert dynamo.item_get(meeting.id)["status"] == before
    ddb_calls.clear()

    transition(meeting)
    result = mirror_flush()

    assert (result.written, result.conflicts, result.failed) == (1, 0, 0)
    assert ddb_calls["UpdateItem"] == 1
    item = dynamo.item_get(meeting.id)
    meeting.refresh_from_db()
    assert (item["status"], item["version"]) == (after, meeting.version)
    state = MirrorState.objects.get(pk=meeting.pk)
    assert (state.mirrored_status, state.mirrored_version, state.attempts) == (after, meeting.version, 0)
