"""Frames any socket may send, before it is in a room: over the real ASGI application."""

import pytest
from channels.testing import WebsocketCommunicator

from elephant.asgi import application
from tests.signalling.client import open_socket


async def test_connected_first_then_ping_pong():
    client = await open_socket()
    assert len(client.id) >= 12
    await client.send(action="ping")
    assert await client.recv() == {"type": "pong"}
    await client.close()


async def test_connection_ids_are_unique():
    a, b = await open_socket(), await open_socket()
    assert a.id != b.id
    await a.close()
    await b.close()


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{not json", "bad_json"),
        ("[1, 2]", "bad_frame"),
        ('"joinRoom"', "bad_frame"),
        ("42", "bad_frame"),
        ("{}", "unknown_action"),
        ('{"action": null}', "unknown_action"),
        ('{"action": "dance"}', "unknown_action"),
        ('{"action": ["joinRoom"]}', "unknown_action"),
        ('{"action": "sendMsgToRoom", "roomId": "aaaaaaaaaaaaaaaa", "message": "x"}', "not_joined"),
        ('{"action": "leaveRoom", "roomId": "aaaaaaaaaaaaaaaa"}', "not_joined"),
        ('{"action": "joinRoom"}', "bad_request"),
        ('{"action": "joinRoom", "roomId": "../etc"}', "bad_request"),
        ('{"action": "subscribe", "meetingId": 7}', "bad_request"),
        # Any JSON shape in any field (these raised TypeError: unhashable, and closed 1011).
        ('{"action": "sendMsgToRoom", "roomId": [1], "message": "x"}', "not_joined"),
        ('{"action": "sendMsgToRoom", "roomId": {"a": 1}, "message": "x"}', "not_joined"),
        ('{"action": "leaveRoom", "roomId": {}}', "not_joined"),
        ('{"action": "leaveRoom", "roomId": [[]]}', "not_joined"),
        ('{"action": "joinRoom", "roomId": ["aaaaaaaaaaaaaaaa"]}', "bad_request"),
        ('{"action": "joinRoom", "roomId": 1.5}', "bad_request"),
        ('{"action": "subscribe", "meetingId": {"x": []}}', "bad_request"),
        ('{"action": {"a": 1}}', "unknown_action"),
        ('{"action": true}', "unknown_action"),
        # Nesting deeper than the parser's recursion limit, well under the size limit (RecursionError).
        ("[" * 50_000, "bad_json"),
        ('{"action": "ping", "x": ' + "[" * 50_000 + "]" * 50_000 + "}", "bad_json"),
        # Not JSON, though Python's parser takes them (and then relayed them as non-JSON text).
        ('{"action": "ping", "x": NaN}', "bad_json"),
        ('{"action": "ping", "x": Infinity}', "bad_json"),
        ('{"action": "ping", "x": -Infinity}', "bad_json"),
        ('{"action": "ping", "x": 1e999}', "bad_json"),
        ("NaN", "bad_json"),
    ],
)
async def test_client_errors_are_error_frames_and_the_socket_stays_open(text, code):
    client = await open_socket()
    await client.ws.send_to(text_data=text)
    error = await client.recv()
    assert error["type"] == "error"
    assert error["code"] == code
    assert error["message"]
    await client.send(action="ping")
    assert await client.recv() == {"type": "pong"}
    await client.close()


async def test_binary_frame_is_an_error_frame():
    client = await open_socket()
    await client.ws.send_to(bytes_data=b"\x00\x01")
    assert (await client.recv())["code"] == "bad_frame"
    await client.close()


@pytest.mark.parametrize(
    "send",
    [
        {"bytes_data": b"\x00\x01"},
        {"text_data": "x" * (140 * 1024)},  # over ELEPHANT_SIGNALLING_MAX_MESSAGE_BYTES: too_large
        {"text_data": "{not json"},
    ],
    ids=["binary", "oversize", "garbage"],
)
async def test_every_frame_spends_from_the_rate_limit(send, settings):
    settings.ELEPHANT_SIGNALLING_RATE_BURST = 5
    settings.ELEPHANT_SIGNALLING_RATE_PER_SECOND = 0.001
    client = await open_socket()
    for _ in range(12):
        await client.ws.send_to(**send)
    answers = [(await client.recv())["code"] for _ in range(6)]
    assert answers[5] == "rate_limited"
    assert len(set(answers[:5])) == 1 and answers[0] != "rate_limited"
    assert await client.silent()  # the other six were dropped
    await client.close()


async def test_origin_is_checked(settings):
    # Channels' denier is an ordinary consumer reading the channel layer; an in-memory layer
    # spares the test cancelling a channels-redis receive, which can hang at loop close.
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    communicator = WebsocketCommunicator(application, "/ws/signalling/", headers=[(b"origin", b"https://evil.example")])
    connected, _ = await communicator.connect()
    assert not connected
