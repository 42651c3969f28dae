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


async def test_origin_is_checked(settings):
    # Channels' denier is an ordinary consumer reading the channel layer; an in-memory layer
    # spares the test cancelling a channels-redis receive, which can hang at loop close.
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    communicator = WebsocketCommunicator(application, "/ws/signalling/", headers=[(b"origin", b"https://evil.example")])
    connected, _ = await communicator.connect()
    assert not connected
