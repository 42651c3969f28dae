"""Signalling across real daphne processes sharing a private redis-server.

Two daphnes serve ``elephant.asgi:application`` on free ports, with a SQLite database of
their own holding real meetings and a redis-server started here (so it can be killed and
restarted without touching anyone else's Redis). The presence TTL is shortened to 3 s.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import websockets
from websockets.frames import Close, Frame, Opcode

from devtools.stack import BASE_DIR, free_port, wait_for_port
from tests.support import RedisServer

pytestmark = pytest.mark.e2e

PRESENCE_TTL = 3.0
DAPHNE = str(Path(sys.executable).parent / "daphne")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A private Redis and a migrated SQLite database with three meetings and their tokens."""
    workdir = tmp_path_factory.mktemp("signalling-e2e")
    server = RedisServer().start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ELEPHANT_", "DJANGO_", "CELERY_"))}
    env.update(
        DATABASE_URL=f"sqlite:///{workdir / 'db.sqlite3'}",
        REDIS_URL=server.url,
        ELEPHANT_SIGNALLING_PRESENCE_TTL_SECONDS=str(PRESENCE_TTL),
        PYTHONUNBUFFERED="1",
    )
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=BASE_DIR, env=env, check=True)
    script = (
        "import json; from datetime import timedelta; from django.utils import timezone;"
        "from tests.factories import make_meeting; from meetings.tokens import participant_token as t;"
        "ms = [make_meeting(meet_time=timezone.now() + timedelta(minutes=10)) for _ in range(3)];"
        "print(json.dumps([[m.id, t(meeting_id=m.id, role='teacher'), t(meeting_id=m.id, role='student')]"
        " for m in ms]))"
    )
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=BASE_DIR,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    meetings = json.loads(out.strip().splitlines()[-1])
    yield {"env": env, "redis": server, "meetings": meetings, "workdir": workdir}
    server.stop()


class Daphne:
    def __init__(self, env: dict, workdir: Path, name: str):
        self.port = free_port()
        self.log_path = workdir / f"{name}-{self.port}.log"
        self.proc = subprocess.Popen(
            [DAPHNE, "-b", "127.0.0.1", "-p", str(self.port), "elephant.asgi:application"],
            cwd=BASE_DIR,
            env=env,
            stdout=self.log_path.open("w"),
            stderr=subprocess.STDOUT,
        )
        wait_for_port("127.0.0.1", self.port, 30, name, self.proc)
        self.url = f"ws://127.0.0.1:{self.port}/ws/signalling/"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)


@pytest.fixture
def daphnes(world):
    started = [Daphne(world["env"], world["workdir"], "daphne-a"), Daphne(world["env"], world["workdir"], "daphne-b")]
    try:
        yield started
    except BaseException:
        for d in started:
            print(f"--- {d.log_path.name}\n{d.log()[-3000:]}")
        raise
    finally:
        for d in started:
            d.stop()


class Peer:
    def __init__(self, ws, connection_id: str):
        self.ws, self.id = ws, connection_id

    @classmethod
    async def open(cls, url: str) -> "Peer":
        ws = await websockets.connect(url, origin="http://127.0.0.1")
        hello = json.loads(await ws.recv())
        assert hello["type"] == "connected"
        return cls(ws, hello["connectionId"])

    async def join(self, room: str, token: str) -> dict:
        await self.ws.send(json.dumps({"action": "joinRoom", "roomId": room, "token": token}))
        return await self.frame()

    async def say(self, room: str, message: str):
        await self.ws.send(json.dumps({"action": "sendMsgToRoom", "roomId": room, "message": message}))

    async def text(self, timeout: float = 5) -> str:
        return await asyncio.wait_for(self.ws.recv(), timeout)

    async def frame(self, timeout: float = 5) -> dict:
        return json.loads(await self.text(timeout))


async def pair_across(daphnes, meeting) -> tuple[Peer, Peer]:
    room, teacher_token, student_token = meeting
    a = await Peer.open(daphnes[0].url)
    b = await Peer.open(daphnes[1].url)
    assert (await a.join(room, teacher_token))["type"] == "joined"
    assert (await b.join(room, student_token))["participants"] == [a.id]
    assert await a.frame() == {"type": "newParticipant", "participantConnectionId": b.id}
    return a, b


def presence(world, room: str) -> list[str]:
    client = redis.Redis.from_url(world["redis"].url)
    try:
        return sorted(m.decode() for m in client.zrange(f"elephant:sig:room:{room}", 0, -1))
    finally:
        client.close()


async def test_peers_on_two_daphnes_relay_in_order_and_a_killed_process_leaves_the_room(world, daphnes):
    room = world["meetings"][0][0]
    a, b = await pair_across(daphnes, world["meetings"][0])
    offer = json.dumps({"type": "offer", "sdp": "v=0"})
    await a.say(room, offer)
    assert await b.text() == offer
    for i in range(50):
        await b.say(room, f"candidate {i}")
    assert [await a.text() for _ in range(50)] == [f"candidate {i}" for i in range(50)]
    assert presence(world, room) == sorted([a.id, b.id])

    # The student's process dies without a close frame: the teacher hears of it within seconds.
    daphnes[1].proc.send_signal(signal.SIGKILL)
    daphnes[1].proc.wait()
    started = time.monotonic()
    assert await a.frame(timeout=4 * PRESENCE_TTL) == {"type": "participantLeft", "participantConnectionId": b.id}
    assert time.monotonic() - started < 3 * PRESENCE_TTL
    assert presence(world, room) == [a.id]
    await a.ws.close()


async def test_a_pair_idle_past_redis_socket_timeout_still_relays(world, daphnes):
    # redis-py 8 reads time out after 5 s by default, racing channels-redis' 5 s BZPOPMIN:
    # a quiet channel layer used to die with 1011 after ~5 s. Stay quiet well past both.
    room = world["meetings"][1][0]
    a, b = await pair_across(daphnes, world["meetings"][1])
    await asyncio.sleep(12)
    await a.say(room, "still there?")
    assert await b.text() == "still there?"
    await b.say(room, "yes")
    assert await a.text() == "yes"
    for d in daphnes:
        assert "Timeout reading" not in d.log()
        assert "Exception inside application" not in d.log()
    await a.ws.close()
    await b.ws.close()


async def test_redis_restart_mid_session_recovers_and_leaves_no_ghost(world, daphnes):
    room, teacher_token, student_token = world["meetings"][2]
    a, b = await pair_across(daphnes, world["meetings"][2])

    world["redis"].stop()
    await b.ws.close()  # leaves while Redis is down: its leave cannot be recorded
    await asyncio.sleep(1)
    world["redis"].start()  # empty: presence and groups are gone

    # The teacher's socket stayed open, hears that the student left, and the room has no ghost.
    assert await a.frame(timeout=6 * PRESENCE_TTL) == {"type": "participantLeft", "participantConnectionId": b.id}
    deadline = time.monotonic() + 3 * PRESENCE_TTL
    while presence(world, room) != [a.id] and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert presence(world, room) == [a.id]

    # The student comes back through the other process; relay works both ways again.
    b2 = await Peer.open(daphnes[1].url)
    assert (await b2.join(room, student_token))["participants"] == [a.id]
    assert await a.frame() == {"type": "newParticipant", "participantConnectionId": b2.id}
    await a.say(room, "welcome back")
    assert await b2.text() == "welcome back"
    await b2.say(room, "thanks")
    assert await a.text() == "thanks"
    for d in daphnes:
        assert "Exception inside application" not in d.log()
    await a.ws.close()
    await b2.ws.close()


async def test_a_peer_closing_while_it_is_sent_to_does_not_take_the_sender_down(world, daphnes):
    # Between a client's close frame and the end of its TCP connection, daphne still hands
    # sends for that socket to autobahn, which raises "Attempt to send on a closed protocol".
    # A peer that is not reading keeps that window open: its buffers are full, so the TCP
    # connection cannot finish closing. The sender must not pay for it.
    room, teacher_token, student_token = world["meetings"][0]
    a = await Peer.open(daphnes[0].url)
    b = await Peer.open(daphnes[0].url)
    assert (await a.join(room, teacher_token))["type"] == "joined"
    assert (await b.join(room, student_token))["participants"] == [a.id]
    assert await a.frame() == {"type": "newParticipant", "participantConnectionId": b.id}
    b.ws.transport.pause_reading()
    for _ in range(150):  # ~15 MB: more than the kernel buffers hold
        await a.say(room, "x" * 100_000)
    await asyncio.sleep(0.5)
    close = Frame(Opcode.CLOSE, Close(1000, "").serialize()).serialize(mask=True, extensions=[])
    b.ws.transport.write(close)
    await asyncio.sleep(0.5)
    await a.say(room, "anyone?")
    await a.ws.send(json.dumps({"action": "ping"}))
    assert await a.frame() == {"type": "pong"}
    b.ws.transport.abort()
    assert await a.frame(timeout=3 * PRESENCE_TTL) == {"type": "participantLeft", "participantConnectionId": b.id}
    assert "Exception inside application" not in daphnes[0].log()
    await a.ws.close()
