"""The signalling socket over the real ASGI application (origin check, auth middleware, router)."""

import asyncio
import json
import time
from datetime import timedelta

import pytest
import time_machine
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.contrib.sessions.backends.db import SessionStore
from django.db import OperationalError
from django.utils import timezone

from meetings.models import Meeting, MeetingEvent, MeetingStatus
from meetings.services import meeting_transition
from meetings.tokens import participant_token
from signalling import hub as hub_module
from signalling.consumers import SignallingConsumer
from signalling.hub import get_hub
from signalling.presence import Presence
from tests.factories import make_meeting, make_staff, make_teacher
from tests.signalling.client import communicator_for, open_socket

pytestmark = pytest.mark.django_db(transaction=True)


def token(meeting, role):
    return participant_token(meeting_id=meeting.id, role=role)


@pytest.fixture
async def meeting():
    return await database_sync_to_async(make_meeting)(meet_time=timezone.now() + timedelta(minutes=10))


async def pair(meeting):
    teacher = await open_socket()
    student = await open_socket()
    joined = await teacher.join(meeting.id, token(meeting, "teacher"))
    assert joined == {"type": "joined", "roomId": meeting.id, "participants": []}
    joined = await student.join(meeting.id, token(meeting, "student"))
    assert joined == {"type": "joined", "roomId": meeting.id, "participants": [teacher.id]}
    assert await teacher.recv() == {"type": "newParticipant", "participantConnectionId": student.id}
    return teacher, student


async def session_cookie(user) -> tuple[bytes, bytes]:
    def create():
        session = SessionStore()
        session["_auth_user_id"] = str(user.pk)
        session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
        session["_auth_user_hash"] = user.get_session_auth_hash()
        session.create()
        return session.session_key

    return (b"cookie", f"sessionid={await database_sync_to_async(create)()}".encode())


# --- rooms and relay ----------------------------------------------------------------------------
async def test_relay_string_is_the_whole_frame_never_echoed(meeting):
    teacher, student = await pair(meeting)
    offer = json.dumps({"type": "offer", "sdp": "v=0\r\n..."})
    await teacher.send(action="sendMsgToRoom", roomId=meeting.id, message=offer)
    assert await student.recv_text() == offer
    assert await teacher.silent()
    await student.send(action="sendMsgToRoom", roomId=meeting.id, message={"type": "answer", "sdp": "x"})
    assert json.loads(await teacher.recv_text()) == {"type": "answer", "sdp": "x"}
    await student.send(action="sendMsgToRoom", roomId=meeting.id, message="hello world!")
    assert await teacher.recv_text() == "hello world!"
    assert await student.silent()
    await teacher.close()
    await student.close()


async def test_relay_keeps_order(meeting):
    teacher, student = await pair(meeting)
    for i in range(100):
        await teacher.send(action="sendMsgToRoom", roomId=meeting.id, message={"type": "candidate", "n": i})
    received = [json.loads(await student.recv_text())["n"] for _ in range(100)]
    assert received == list(range(100))
    await teacher.close()
    await student.close()


async def test_missing_message_is_bad_request(meeting):
    teacher, student = await pair(meeting)
    await teacher.send(action="sendMsgToRoom", roomId=meeting.id)
    assert (await teacher.recv())["code"] == "bad_request"
    assert await student.silent()


async def test_leave_room_tells_the_others_and_stops_relay(meeting):
    teacher, student = await pair(meeting)
    await student.send(action="leaveRoom", roomId=meeting.id)
    assert await teacher.recv() == {"type": "participantLeft", "participantConnectionId": student.id}
    await student.send(action="sendMsgToRoom", roomId=meeting.id, message="late")
    assert (await student.recv())["code"] == "not_joined"
    assert await teacher.silent()


async def test_dropped_socket_is_a_participant_left(meeting):
    teacher, student = await pair(meeting)
    await student.close()
    assert await teacher.recv() == {"type": "participantLeft", "participantConnectionId": student.id}
    hub = await get_hub()
    assert [m.connection_id for m in await hub.presence.members(meeting.id)] == [teacher.id]


async def test_join_twice_is_idempotent(meeting):
    teacher, student = await pair(meeting)
    again = await student.join(meeting.id, token(meeting, "student"))
    assert again == {"type": "joined", "roomId": meeting.id, "participants": [teacher.id]}
    assert await teacher.silent()


async def test_lone_surrogate_message_is_refused_not_relayed(meeting):
    teacher, student = await pair(meeting)
    # Valid JSON whose string holds a lone surrogate: no text frame can carry it, and daphne
    # would raise encoding it for the student, inside the teacher's task.
    await teacher.ws.send_to(text_data=f'{{"action": "sendMsgToRoom", "roomId": "{meeting.id}", "message": "\\ud800"}}')
    error = await teacher.recv()
    assert (error["code"], error["action"]) == ("bad_request", "sendMsgToRoom")
    assert await student.silent()
    await teacher.send(action="sendMsgToRoom", roomId=meeting.id, message="h\u00e9llo")
    assert await student.recv_text() == "h\u00e9llo"


async def test_a_peer_whose_socket_fails_is_dropped_and_the_sender_carries_on(meeting):
    teacher, student = await pair(meeting)
    hub = await get_hub()

    async def closed_protocol(message):
        raise RuntimeError("Attempt to send on a closed protocol")  # what autobahn raises while closing

    hub.rooms[meeting.id][student.id].base_send = closed_protocol
    await teacher.send(action="sendMsgToRoom", roomId=meeting.id, message="are you there?")
    assert await teacher.recv() == {"type": "participantLeft", "participantConnectionId": student.id}
    await teacher.send(action="ping")
    assert await teacher.recv() == {"type": "pong"}
    assert [m.connection_id for m in await hub.presence.members(meeting.id)] == [teacher.id]


async def test_a_consumer_that_crashes_leaves_its_room(meeting, monkeypatch):
    teacher, student = await pair(meeting)

    async def boom(consumer, content):
        raise RuntimeError("boom")

    monkeypatch.setitem(SignallingConsumer.actions, "ping", boom)
    await student.send(action="ping")
    with pytest.raises(RuntimeError):
        await student.ws.receive_output()
    assert await teacher.recv() == {"type": "participantLeft", "participantConnectionId": student.id}
    hub = await get_hub()
    assert list(hub.rooms[meeting.id]) == [teacher.id]
    assert [m.connection_id for m in await hub.presence.members(meeting.id)] == [teacher.id]


async def test_database_outage_is_an_error_frame_not_a_dropped_socket(meeting, monkeypatch):
    teacher, student = await pair(meeting)

    def down(**kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr("signalling.consumers.meeting_access", down)
    await student.send(action="subscribe", meetingId=meeting.id, token=token(meeting, "student"))
    error = await student.recv()
    assert (error["code"], error["action"]) == ("unavailable", "subscribe")
    await student.send(action="sendMsgToRoom", roomId=meeting.id, message="still here")
    assert await teacher.recv_text() == "still here"


# --- who may enter ---------------------------------------------------------------------------------
async def test_token_in_socket_url(meeting):
    client = await open_socket(f"t={token(meeting, 'student')}")
    assert (await client.join(meeting.id))["type"] == "joined"


async def test_token_of_another_meeting_is_forbidden(meeting):
    other = await database_sync_to_async(make_meeting)()
    client = await open_socket()
    error = await client.join(meeting.id, token(other, "teacher"))
    assert error["code"] == "forbidden"
    assert error["action"] == "joinRoom"


async def test_three_failed_authentications_close_the_socket(meeting):
    client = await open_socket()
    assert (await client.join(meeting.id))["code"] == "forbidden"
    assert (await client.join(meeting.id, "forged"))["code"] == "forbidden"
    await client.send(action="subscribe", meetingId="zzzzzzzzzzzzzzzz", token="x")
    assert (await client.recv())["code"] == "forbidden"
    assert await client.ws.receive_output() == {"type": "websocket.close", "code": 4003}


async def test_logged_in_teacher_and_staff(meeting):
    teacher = await database_sync_to_async(make_teacher)()
    staff = await database_sync_to_async(make_staff)()
    stranger = await database_sync_to_async(make_teacher)("stranger")
    meeting.teacher = teacher
    await database_sync_to_async(meeting.save)()
    as_teacher = await open_socket(headers=[await session_cookie(teacher)])
    assert (await as_teacher.join(meeting.id))["type"] == "joined"
    as_staff = await open_socket(headers=[await session_cookie(staff)])
    assert (await as_staff.join(meeting.id))["participants"] == [as_teacher.id]
    as_stranger = await open_socket(headers=[await session_cookie(stranger)])
    assert (await as_stranger.join(meeting.id))["code"] == "forbidden"


async def test_unknown_meeting_is_forbidden():
    client = await open_socket()
    fake = "abcdefabcdefabcd"
    assert (await client.join(fake, participant_token(meeting_id=fake, role="teacher")))["code"] == "forbidden"


async def test_ended_meeting_and_closed_window(meeting):
    ended = await database_sync_to_async(make_meeting)(status=MeetingStatus.TERMINATED)
    client = await open_socket()
    assert (await client.join(ended.id, token(ended, "teacher")))["code"] == "room_closed"
    far = await database_sync_to_async(make_meeting)(meet_time=timezone.now() + timedelta(days=3))
    assert (await client.join(far.id, token(far, "teacher")))["code"] == "room_closed"
    # Not authentication failures: the socket is still open.
    await client.send(action="ping")
    assert await client.recv() == {"type": "pong"}


@pytest.mark.parametrize(
    ("edge", "offset", "answer"),
    [
        ("opens", -1, "room_closed"),
        ("opens", 0, "joined"),
        ("hard_stop", 0, "joined"),
        ("hard_stop", 1, "room_closed"),
    ],
)
async def test_join_window_edges_to_the_second(edge, offset, answer):
    # Stuck IN_PROGRESS past its hard stop (the sweep has not ended it): the status alone would let it in.
    meet_time = timezone.now().replace(microsecond=0) - timedelta(days=1)
    stuck = await database_sync_to_async(make_meeting)(meet_time=meet_time, status=MeetingStatus.IN_PROGRESS)
    at = stuck.join_opens_at if edge == "opens" else stuck.hard_stop_at
    with time_machine.travel(at + timedelta(seconds=offset), tick=False):
        client = await open_socket()
        reply = await client.join(stuck.id, token(stuck, "student"))
    assert reply.get("code", reply["type"]) == answer


async def test_a_room_closes_when_its_meeting_ends(meeting):
    teacher, student = await pair(meeting)
    hub = await get_hub()

    def end():
        meeting_transition(
            meeting=meeting,
            to_status=MeetingStatus.CANCELLED,
            allowed_from={MeetingStatus.SCHEDULED},
            reason="CANCELLED_BY_TEACHER",
        )

    await database_sync_to_async(end)()
    for client in (teacher, student):
        closed = await client.recv(timeout=2)
        assert (closed["type"], closed["roomId"], closed["status"]) == ("roomClosed", meeting.id, "CANCELLED")
    await teacher.send(action="sendMsgToRoom", roomId=meeting.id, message="anyone?")
    assert (await teacher.recv())["code"] == "not_joined"
    assert await student.silent()
    assert (await student.join(meeting.id, token(meeting, "student")))["code"] == "room_closed"
    assert meeting.id not in hub.rooms
    assert await hub.presence.members(meeting.id) == []
    await teacher.send(action="ping")  # told and removed, not disconnected
    assert await teacher.recv() == {"type": "pong"}


async def test_a_participant_joining_the_room_starts_the_session():
    def ready():
        meeting = make_meeting(meet_time=timezone.now() + timedelta(minutes=2), status=MeetingStatus.HEALTHY)
        return meeting

    meeting = await database_sync_to_async(ready)()
    status = database_sync_to_async(lambda: Meeting.objects.get(pk=meeting.id).status)
    staff = await database_sync_to_async(make_staff)()
    observer = await open_socket(headers=[await session_cookie(staff)])
    assert (await observer.join(meeting.id))["type"] == "joined"
    subscriber = await open_socket()
    await subscriber.send(action="subscribe", meetingId=meeting.id, token=token(meeting, "student"))
    assert (await subscriber.recv())["status"] == "HEALTHY"
    assert await status() == MeetingStatus.HEALTHY  # staff watching, a waiting room subscribed: not a start
    student = await open_socket()
    assert (await student.join(meeting.id, token(meeting, "student")))["type"] == "joined"
    assert await status() == MeetingStatus.IN_PROGRESS
    pushed = await subscriber.recv(timeout=2)
    assert (pushed["status"], pushed["previousStatus"]) == ("IN_PROGRESS", "HEALTHY")
    events = database_sync_to_async(
        lambda: list(MeetingEvent.objects.filter(meeting_id=meeting.id).values_list("to_status", flat=True))
    )
    assert (await events()).count(MeetingStatus.IN_PROGRESS) == 1
    teacher = await open_socket()
    assert (await teacher.join(meeting.id, token(meeting, "teacher")))["type"] == "joined"
    assert (await events()).count(MeetingStatus.IN_PROGRESS) == 1


# --- limits -----------------------------------------------------------------------------------------
async def test_message_size_limit(meeting):
    teacher, student = await pair(meeting)
    envelope = json.dumps({"action": "sendMsgToRoom", "roomId": meeting.id, "message": ""})
    fits = "x" * (128 * 1024 - len(envelope))
    await teacher.send(action="sendMsgToRoom", roomId=meeting.id, message=fits)
    assert await student.recv_text() == fits
    await teacher.send(action="sendMsgToRoom", roomId=meeting.id, message=fits + "é")
    assert (await teacher.recv())["code"] == "too_large"
    assert await student.silent()
    await teacher.send(action="sendMsgToRoom", roomId=meeting.id, message="x" * (1024 * 1024))
    assert await teacher.ws.receive_output() == {"type": "websocket.close", "code": 1009}
    assert await student.recv() == {"type": "participantLeft", "participantConnectionId": teacher.id}


async def test_rate_limit(meeting, settings):
    settings.ELEPHANT_SIGNALLING_RATE_BURST = 5
    settings.ELEPHANT_SIGNALLING_RATE_PER_SECOND = 2
    client = await open_socket()
    for _ in range(8):
        await client.send(action="ping")
    frames = [await client.recv() for _ in range(6)]
    assert frames[:5] == [{"type": "pong"}] * 5
    assert frames[5]["code"] == "rate_limited"
    assert await client.silent()  # one error a second, the rest dropped
    await asyncio.sleep(0.6)
    await client.send(action="ping")
    assert await client.recv() == {"type": "pong"}


async def test_room_capacity(meeting, settings):
    settings.ELEPHANT_ROOM_CAPACITY = 2
    # Held: a socket whose communicator is garbage-collected is released like a dropped one.
    teacher, student = await pair(meeting)
    staff = await database_sync_to_async(make_staff)()
    observer = await open_socket(headers=[await session_cookie(staff)])
    assert (await observer.join(meeting.id))["code"] == "room_full"


async def test_idle_unbound_socket_is_closed(meeting, settings):
    settings.ELEPHANT_SIGNALLING_JOIN_SECONDS = 0.3
    idle = await open_socket()
    teacher, student = await pair(meeting)
    assert await idle.ws.receive_output(timeout=2) == {"type": "websocket.close", "code": 4408}
    await asyncio.sleep(0.4)
    await teacher.send(action="sendMsgToRoom", roomId=meeting.id, message="still here")
    assert await student.recv_text() == "still here"


async def test_frames_do_not_keep_an_unbound_socket_open(settings):
    settings.ELEPHANT_SIGNALLING_JOIN_SECONDS = 0.5
    settings.ELEPHANT_SIGNALLING_IDLE_SECONDS = 3600  # the old clock: silence; these sockets are never silent
    garbage, pinging = await open_socket(), await open_socket()
    started = time.monotonic()
    closes = {}
    while len(closes) < 2 and time.monotonic() - started < 3:
        for name, client, text in (("garbage", garbage, "{not json"), ("pinging", pinging, '{"action": "ping"}')):
            if name in closes:
                continue
            await client.ws.send_to(text_data=text)
            output = await client.ws.receive_output(timeout=1)
            if output["type"] == "websocket.close":
                closes[name] = (output["code"], time.monotonic() - started)
        await asyncio.sleep(0.05)
    assert closes["garbage"][0] == closes["pinging"][0] == 4408
    assert all(0.45 < at < 1.0 for _, at in closes.values())


async def test_a_socket_that_leaves_its_last_room_must_join_again_in_time(meeting, settings):
    settings.ELEPHANT_SIGNALLING_JOIN_SECONDS = 0.3
    settings.ELEPHANT_SIGNALLING_IDLE_SECONDS = 0.6
    client = await open_socket()
    assert (await client.join(meeting.id, token(meeting, "teacher")))["type"] == "joined"
    await asyncio.sleep(0.5)  # in a room: no deadline
    await client.send(action="leaveRoom", roomId=meeting.id)
    left_at = time.monotonic()
    await client.send(action="ping")
    assert await client.recv() == {"type": "pong"}
    assert await client.ws.receive_output(timeout=2) == {"type": "websocket.close", "code": 4408}
    assert 0.55 < time.monotonic() - left_at < 1.2


async def test_sockets_per_client_address_are_capped(settings):
    settings.ELEPHANT_SIGNALLING_MAX_SOCKETS_PER_ADDRESS = 2
    first = await open_socket(client="198.51.100.7")
    second = await open_socket(client="198.51.100.7")
    over = communicator_for(client="198.51.100.7")
    assert await over.connect() == (True, None)  # accepted, so that the client can read the code
    assert await over.receive_output() == {"type": "websocket.close", "code": 4429}
    other = await open_socket(client="203.0.113.9")  # another address is not affected
    await first.close()
    again = await open_socket(client="198.51.100.7")  # a closed socket gives its place back
    for client in (second, other, again):
        await client.send(action="ping")
        assert await client.recv() == {"type": "pong"}


async def test_sockets_per_process_are_capped(settings):
    settings.ELEPHANT_SIGNALLING_MAX_SOCKETS = 3
    clients = [await open_socket(client=f"192.0.2.{n}") for n in range(3)]
    over = communicator_for(client="192.0.2.99")
    assert await over.connect() == (True, None)
    assert await over.receive_output() == {"type": "websocket.close", "code": 4429}
    await clients[0].close()
    await open_socket(client="192.0.2.99")


# --- presence ---------------------------------------------------------------------------------------
async def test_reconnecting_participant_is_not_shown_twice(meeting):
    teacher, student = await pair(meeting)
    again = await open_socket()
    assert (await again.join(meeting.id, token(meeting, "student")))["participants"] == [teacher.id]
    assert await student.ws.receive_output() == {"type": "websocket.close", "code": 4009}
    assert await teacher.recv() == {"type": "participantLeft", "participantConnectionId": student.id}
    assert await teacher.recv() == {"type": "newParticipant", "participantConnectionId": again.id}
    hub = await get_hub()
    assert sorted(m.connection_id for m in await hub.presence.members(meeting.id)) == sorted([teacher.id, again.id])
    await student.close()  # the old socket's late close says nothing more
    assert await teacher.silent()


async def test_member_of_a_vanished_process_disappears(meeting, settings):
    settings.ELEPHANT_SIGNALLING_PRESENCE_TTL_SECONDS = 0.6
    teacher = await open_socket()
    await teacher.join(meeting.id, token(meeting, "teacher"))
    hub = await get_hub()
    # A student on another process that then dies: it joined, and never refreshes.
    ghost = Presence(get_channel_layer().connection(0), get_channel_layer().prefix)
    await ghost.join(
        room_id=meeting.id, connection_id="ghost", identity="student", process="signalling.dead!x", ttl=0.6, capacity=4
    )
    assert await teacher.recv() == {"type": "newParticipant", "participantConnectionId": "ghost"}
    started = time.monotonic()
    assert await teacher.recv(timeout=5) == {"type": "participantLeft", "participantConnectionId": "ghost"}
    assert time.monotonic() - started < 3
    assert [m.connection_id for m in await hub.presence.members(meeting.id)] == [teacher.id]


async def test_messages_from_another_process_reach_local_members(meeting):
    teacher, student = await pair(meeting)
    hub = await get_hub()
    items = [
        ["join", meeting.id, "remote1", "signalling.other!x"],
        ["msg", meeting.id, "remote1", "from afar"],
        ["left", meeting.id, "remote1"],
    ]
    await get_channel_layer().send(hub.channel, {"type": "signalling.batch", "items": items})
    for client in (teacher, student):
        assert await client.recv() == {"type": "newParticipant", "participantConnectionId": "remote1"}
        assert await client.recv_text() == "from afar"
        assert await client.recv() == {"type": "participantLeft", "participantConnectionId": "remote1"}


async def test_redis_outage_bounds_what_waits_for_other_processes(monkeypatch):
    monkeypatch.setattr(hub_module, "OUTBOX_RETRY_SECONDS", 0.3)
    monkeypatch.setattr(hub_module, "OUTBOX_MAX_ITEMS", 500)
    hub = await get_hub()

    async def unreachable(channel, message):
        raise ConnectionError("Connection refused")

    monkeypatch.setattr(hub.layer, "send", unreachable)
    process = "signalling.other!x"
    for i in range(800):
        hub.post(process, ("msg", "aaaaaaaaaaaaaaaa", "c", str(i)))
    assert sum(map(len, hub.outbox.values())) <= 500
    # Once the first batch has waited its 10 s (here 0.3 s), what queued behind it is as
    # stale: dropped with it, not retried batch after batch for another 10 s each.
    await asyncio.sleep(0.6)
    assert process not in hub.flushers
    assert not hub.outbox


# --- status push ------------------------------------------------------------------------------------
async def test_subscribe_needs_access(meeting):
    client = await open_socket()
    await client.send(action="subscribe", meetingId=meeting.id)
    assert (await client.recv())["code"] == "forbidden"


async def test_a_failed_subscribe_does_not_unsubscribe_another_socket(meeting, monkeypatch, settings):
    settings.ELEPHANT_SIGNALLING_PRESENCE_TTL_SECONDS = 0.6
    first, second = await open_socket(), await open_socket()
    hub = await get_hub()
    group_add = hub.layer.group_add
    release = asyncio.Event()

    async def slow_then_failing(group, channel):
        await release.wait()
        raise ConnectionError("Connection reset by peer")

    monkeypatch.setattr(hub.layer, "group_add", slow_then_failing)
    await first.send(action="subscribe", meetingId=meeting.id, token=token(meeting, "teacher"))
    await asyncio.sleep(0.1)
    monkeypatch.setattr(hub.layer, "group_add", group_add)
    await second.send(action="subscribe", meetingId=meeting.id, token=token(meeting, "student"))
    assert (await second.recv())["type"] == "status"
    release.set()
    assert (await first.recv())["code"] == "unavailable"
    await asyncio.sleep(0.5)  # a presence refresh

    def launch():
        meeting_transition(meeting=meeting, to_status=MeetingStatus.LAUNCHING, allowed_from={MeetingStatus.SCHEDULED})

    await database_sync_to_async(launch)()
    assert (await second.recv(timeout=1))["status"] == "LAUNCHING"
    assert await first.silent()


async def test_status_reaches_a_subscriber_within_a_second_of_commit(meeting):
    client = await open_socket()
    await client.send(action="subscribe", meetingId=meeting.id, token=token(meeting, "student"))
    current = await client.recv()
    assert current["type"] == "status"
    assert current["status"] == "SCHEDULED"
    assert current["ready"] is False

    def launch():
        meeting_transition(
            meeting=meeting,
            to_status=MeetingStatus.LAUNCHING,
            allowed_from={MeetingStatus.SCHEDULED},
            reason="LAUNCH",
        )
        return time.monotonic()

    committed_at = await database_sync_to_async(launch)()
    pushed = await client.recv(timeout=1)
    assert time.monotonic() - committed_at < 1
    assert pushed == {
        "type": "status",
        "meetingId": meeting.id,
        "status": "LAUNCHING",
        "previousStatus": "SCHEDULED",
        "reason": "LAUNCH",
        "ready": False,
        "terminal": False,
    }

    def healthy():
        meeting_transition(
            meeting=meeting,
            to_status=MeetingStatus.HEALTHY,
            allowed_from={MeetingStatus.LAUNCHING},
            reason="BOTH_HEALTHY",
        )

    await database_sync_to_async(healthy)()
    pushed = await client.recv(timeout=1)
    assert (pushed["status"], pushed["ready"]) == ("HEALTHY", True)


async def test_rolled_back_change_pushes_nothing(meeting):
    from django.db import transaction

    client = await open_socket()
    await client.send(action="subscribe", meetingId=meeting.id, token=token(meeting, "teacher"))
    await client.recv()

    def launch_then_fail():
        try:
            with transaction.atomic():
                meeting_transition(
                    meeting=meeting, to_status=MeetingStatus.LAUNCHING, allowed_from={MeetingStatus.SCHEDULED}
                )
                raise RuntimeError("boom")
        except RuntimeError:
            pass

    await database_sync_to_async(launch_then_fail)()
    assert await client.silent(0.5)
