"""Hypothesis-generated frames against the consumer, through the real ASGI application.

Any JSON value in any field, random text (lone surrogates included: the test transport carries
them, daphne's UTF-8 decoding would refuse them), binary frames, deep nesting, NaN and
Infinity. For every frame: no close (1011 or any other), every frame the socket gets back is
strict JSON, and the socket still answers a ping. A staff observer sits in the same room and
checks what gets relayed: the sent string itself, or strict JSON, never ``NaN``.
"""

import json
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from meetings.tokens import participant_token
from tests.factories import make_meeting, make_staff
from tests.signalling.client import open_socket
from tests.signalling.test_consumers import session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

ROOM, OTHER_ROOM, STUDENT_TOKEN, TEACHER_TOKEN = "$room", "$other", "$student", "$teacher"
ACTIONS = ["joinRoom", "sendMsgToRoom", "leaveRoom", "subscribe", "ping"]


def _refuse(name):
    raise ValueError(name)


strict = json.JSONDecoder(parse_constant=_refuse)
characters = st.characters(codec=None, categories=None)  # every code point, surrogates included
texts = st.text(alphabet=characters, max_size=24)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=16,
)
ids = st.sampled_from([ROOM, OTHER_ROOM, "aaaaaaaaaaaaaaaa"]) | json_values
frames_objects = st.fixed_dictionaries(
    {"action": st.sampled_from(ACTIONS) | json_values},
    optional={
        "roomId": ids,
        "meetingId": ids,
        "token": st.sampled_from([STUDENT_TOKEN, TEACHER_TOKEN]) | json_values,
        "message": json_values,
    },
)
nesting = st.tuples(st.sampled_from(["[", '{"a":', '{"action":"ping","x":[']), st.integers(1, 60_000))
frames = st.one_of(
    st.tuples(st.just("object"), frames_objects, st.booleans()),
    st.tuples(st.just("text"), st.text(alphabet=characters, max_size=200)),
    st.tuples(st.just("json"), json_values),
    st.tuples(st.just("nested"), nesting),
    st.tuples(st.just("binary"), st.binary(max_size=64)),
    st.tuples(
        st.just("constant"),
        st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", '{"action":"ping","x":-1e400}', "[NaN]"]),
    ),
)


def encode(generated, placeholders):
    """The ASGI message for one generated frame (empty ones included), and its string message if any."""
    kind, value = generated[0], generated[1]
    if kind == "binary":
        return {"type": "websocket.receive", "bytes": value}, None
    if kind in ("text", "constant"):
        return {"type": "websocket.receive", "text": value}, None
    if kind == "json":
        return {"type": "websocket.receive", "text": json.dumps(value)}, None
    if kind == "nested":
        opener, depth = value  # kept under 1 MiB, where the socket is closed 1009 by design
        return {"type": "websocket.receive", "text": opener * min(depth, 1_000_000 // len(opener))}, None
    content = {key: placeholders.get(item, item) if isinstance(item, str) else item for key, item in value.items()}
    message = content.get("message")
    text = json.dumps(content, ensure_ascii=generated[2])
    return {"type": "websocket.receive", "text": text}, message if isinstance(message, str) else None


async def answers_until_pong(client) -> list[str]:
    """Ping, then every frame up to the pong; a close fails the test."""
    await client.ws.send_to(text_data='{"action":"ping"}')
    texts = []
    while True:
        output = await client.ws.receive_output(timeout=5)
        assert output["type"] == "websocket.send", output  # never a close: the socket stays usable
        if output.get("text") == '{"type":"pong"}':
            return texts
        texts.append(output["text"] if output.get("text") is not None else output["bytes"])


@pytest.fixture
async def room(settings):
    """A room with a staff observer in it, and the socket to fuzz (limits lifted: they are tested elsewhere)."""
    settings.ELEPHANT_SIGNALLING_RATE_BURST = 10**9
    settings.ELEPHANT_SIGNALLING_AUTH_FAILURES = 10**9
    settings.ELEPHANT_SIGNALLING_JOIN_SECONDS = 600
    settings.ELEPHANT_SIGNALLING_IDLE_SECONDS = 600
    meeting = await database_sync_to_async(make_meeting)(meet_time=timezone.now() + timedelta(minutes=10))
    other = await database_sync_to_async(make_meeting)(meet_time=timezone.now() + timedelta(days=3))
    placeholders = {
        ROOM: meeting.id,
        OTHER_ROOM: other.id,
        STUDENT_TOKEN: participant_token(meeting_id=meeting.id, role="student"),
        TEACHER_TOKEN: participant_token(meeting_id=meeting.id, role="teacher"),
    }
    observer = await open_socket(headers=[await session_cookie(await database_sync_to_async(make_staff)())])
    assert (await observer.join(meeting.id))["type"] == "joined"
    kinds = []
    yield placeholders, observer, await open_socket(), kinds
    # Over a few hundred examples every kind of frame came up (the sockets stayed open throughout).
    assert len(kinds) >= 300
    assert {"object", "text", "json", "nested", "binary", "constant"} <= set(kinds)


@hypothesis_settings(
    max_examples=2000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(generated=frames)
async def test_fuzzed_frames_never_close_the_socket(room, generated):
    placeholders, observer, fuzzed, kinds = room
    kinds.append(generated[0])
    received, message = encode(generated, placeholders)
    await fuzzed.ws.send_input(received)
    for text in await answers_until_pong(fuzzed):
        answer = strict.decode(text)  # server frames are strict JSON objects with a type
        assert isinstance(answer, dict) and answer["type"] in {"error", "joined", "status"}, answer
    for text in await answers_until_pong(observer):
        if text != message:  # a string message is the whole frame; anything else is strict JSON
            strict.decode(text)
