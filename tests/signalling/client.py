"""Test sockets to the real ASGI application."""

import json

from channels.testing import WebsocketCommunicator

from elephant.asgi import application


class Client:
    """A socket to the real ASGI application, as a browser would open it."""

    def __init__(self, communicator: WebsocketCommunicator, connection_id: str):
        self.ws = communicator
        self.id = connection_id

    async def send(self, **frame):
        await self.ws.send_to(text_data=json.dumps(frame))

    async def recv(self, timeout: float = 2):
        return json.loads(await self.ws.receive_from(timeout))

    async def recv_text(self, timeout: float = 2) -> str:
        return await self.ws.receive_from(timeout)

    async def silent(self, timeout: float = 0.2) -> bool:
        return await self.ws.receive_nothing(timeout)

    async def join(self, room_id: str, token: str | None = None) -> dict:
        frame = {"action": "joinRoom", "roomId": room_id}
        if token:
            frame["token"] = token
        await self.send(**frame)
        return await self.recv()

    async def close(self):
        await self.ws.disconnect()


def communicator_for(query: str = "", headers: list | None = None, client: str | None = None) -> WebsocketCommunicator:
    path = "/ws/signalling/" + (f"?{query}" if query else "")
    communicator = WebsocketCommunicator(
        application, path, headers=[(b"origin", b"http://testserver"), *(headers or [])]
    )
    if client is not None:  # the peer address daphne puts in the scope (the application starts on connect)
        communicator.scope["client"] = [client, 40000]
    return communicator


async def open_socket(query: str = "", headers: list | None = None, client: str | None = None) -> Client:
    communicator = communicator_for(query, headers, client)
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    hello = json.loads(await communicator.receive_from())
    assert hello["type"] == "connected"
    return Client(communicator, hello["connectionId"])
