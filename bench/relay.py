"""Signalling relay benchmark: `.venv/bin/python bench/relay.py [--duration 8] [--rooms 50] [--idle 2000]`.

Starts, in one run on this machine, each on free ports with a private redis-server and a
private SQLite database (real meetings, real participant tokens):

  bare       a bare asyncio `websockets` relay speaking the same frames (the baseline)
  tutorial   the Channels tutorial consumer: group_send to the room for every message,
             RedisChannelLayer, under daphne (the sender gets its own message back, as there)
  elephant   Elephant's consumer (elephant.asgi:application) under one daphne
  split      Elephant on two daphne processes, every room's two peers on different ones

and drives each with ``--rooms`` rooms x 2 peers in closed-loop ping-pong (one message in
flight per room, ~200-byte payloads) for ``--duration`` seconds after a 1 s warm-up. Prints
round trips per second, p50/p99 round-trip time and the ratios to the baseline, then the
resident memory per idle connection of one Elephant daphne holding ``--idle`` sockets
(joined into rooms in pairs). The driver runs in this process and shares the CPUs with the
servers, as it does for every target. The per-connection rate limit is lifted for the
run (ELEPHANT_SIGNALLING_RATE_*, and the socket caps and join deadline): it is policy, not relay cost.
"""

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
if str(BASE_DIR) not in sys.path:
    sys.path.insert(0, str(BASE_DIR))

PAYLOAD_PAD = "x" * 180  # an ICE candidate or a small SDP fragment
ORIGIN = "http://127.0.0.1"


# --- the tutorial consumer (imported by daphne as bench.relay:tutorial_application) ----------
_tutorial_app = None


async def tutorial_application(scope, receive, send):
    global _tutorial_app
    if _tutorial_app is None:
        _tutorial_app = _build_tutorial_app()
    return await _tutorial_app(scope, receive, send)


def _build_tutorial_app():
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "elephant.settings")
    django.setup()
    from channels.generic.websocket import AsyncWebsocketConsumer
    from channels.routing import URLRouter
    from django.urls import path

    class ChatConsumer(AsyncWebsocketConsumer):
        # https://channels.readthedocs.io/en/latest/tutorial/part_3.html
        async def connect(self):
            self.room_group_name = f"chat_{self.scope['url_route']['kwargs']['room_name']}"
            await self.channel_layer.group_add(self.room_group_name, self.channel_name)
            await self.accept()

        async def disconnect(self, close_code):
            await self.channel_layer.group_discard(self.room_group_name, self.channel_name)

        async def receive(self, text_data):
            message = json.loads(text_data)["message"]
            await self.channel_layer.group_send(self.room_group_name, {"type": "chat.message", "message": message})

        async def chat_message(self, event):
            await self.send(text_data=json.dumps({"message": event["message"]}))

    return URLRouter([path("ws/chat/<str:room_name>/", ChatConsumer.as_asgi())])


# --- the bare relay (run as `relay.py --serve-bare PORT`) -----------------------------------
async def serve_bare(port: int) -> None:
    import websockets

    rooms: dict[str, set] = {}

    async def handler(ws):
        joined = set()
        try:
            async for text in ws:
                frame = json.loads(text)
                action = frame.get("action")
                if action == "joinRoom":
                    room = frame["roomId"]
                    rooms.setdefault(room, set()).add(ws)
                    joined.add(room)
                    await ws.send(json.dumps({"type": "joined", "roomId": room}))
                elif action == "sendMsgToRoom":
                    message = frame["message"]
                    for peer in rooms.get(frame["roomId"], ()):
                        if peer is not ws:
                            await peer.send(message)
        finally:
            for room in joined:
                rooms[room].discard(ws)

    async with websockets.serve(handler, "127.0.0.1", port, max_size=2**20, compression=None):
        await asyncio.Future()


# --- driver ---------------------------------------------------------------------------------
class Target:
    def __init__(self, name: str, urls: tuple[str, str], kind: str):
        self.name, self.urls, self.kind = name, urls, kind


async def _open(url: str):
    import websockets

    return await websockets.connect(url, origin=ORIGIN, max_size=2**20, compression=None, open_timeout=20)


async def _join(ws, room: str, token: str) -> None:
    await ws.send(json.dumps({"action": "joinRoom", "roomId": room, "token": token}))
    while True:
        frame = json.loads(await ws.recv())
        if frame.get("type") == "joined":
            return
        if frame.get("type") == "error":
            raise RuntimeError(f"join failed: {frame}")


async def drive(target: Target, rooms: list[tuple[str, str, str]], duration: float) -> dict:
    """Closed-loop ping-pong in every room; returns rt/s and RTT percentiles (ms)."""
    pairs = []
    for room, token_a, token_b in rooms:
        if target.kind == "tutorial":
            a = await _open(f"{target.urls[0]}/ws/chat/{room}/")
            b = await _open(f"{target.urls[1]}/ws/chat/{room}/")
        else:
            a = await _open(target.urls[0] + "/ws/signalling/")
            b = await _open(target.urls[1] + "/ws/signalling/")
            await _join(a, room, token_a)
            await _join(b, room, token_b)
        pairs.append((room, a, b))
    await asyncio.sleep(0.5)

    def wrap(room: str, payload: str) -> str:
        if target.kind == "tutorial":
            return json.dumps({"message": payload})
        return json.dumps({"action": "sendMsgToRoom", "roomId": room, "message": payload})

    def mine(text: str, who: str) -> bool:
        return text.startswith(who) if target.kind != "tutorial" else f'"{who}' in text[:16]

    state = {"measuring": False, "stop": False}
    rtts: list[float] = []

    async def pinger(room, ws):
        seq = 0
        while not state["stop"]:
            seq += 1
            started = time.perf_counter()
            await ws.send(wrap(room, f"a|{seq}|{PAYLOAD_PAD}"))
            while True:
                text = await ws.recv()
                if mine(text, "b|"):
                    break
            if state["measuring"]:
                rtts.append(time.perf_counter() - started)

    async def ponger(room, ws):
        while True:
            text = await ws.recv()
            if mine(text, "a|"):
                await ws.send(wrap(room, "b|" + PAYLOAD_PAD))

    tasks = [asyncio.ensure_future(pinger(room, a)) for room, a, _ in pairs]
    tasks += [asyncio.ensure_future(ponger(room, b)) for room, _, b in pairs]
    await asyncio.sleep(1.0)
    state["measuring"] = True
    await asyncio.sleep(duration)
    state["measuring"] = False
    count = len(rtts)
    state["stop"] = True
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for _, a, b in pairs:
        await a.close()
        await b.close()
    ordered = sorted(rtts[:count])
    if not ordered:
        raise RuntimeError(f"{target.name}: no round trips completed")
    return {
        "rt_s": count / duration,
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
    }


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def idle_memory(url: str, pid: int, rooms: list[tuple[str, str, str]]) -> tuple[float, int]:
    sockets = []
    # Warm the process (imports, pools) before the baseline reading.
    warm = await _open(url + "/ws/signalling/")
    await _join(warm, rooms[0][0], rooms[0][1])
    await asyncio.sleep(1)
    before = rss_kb(pid)
    batch = []
    for room, token_a, token_b in rooms[1:]:
        batch.append((room, token_a))
        batch.append((room, token_b))
    for i in range(0, len(batch), 100):
        part = batch[i : i + 100]
        chunk = await asyncio.gather(*(_open(url + "/ws/signalling/") for _ in part))
        await asyncio.gather(*(_join(ws, room, token) for ws, (room, token) in zip(chunk, part, strict=True)))
        sockets += chunk
    await asyncio.sleep(3)
    after = rss_kb(pid)
    count = len(sockets)
    for ws in sockets + [warm]:
        await ws.close()
    return (after - before) * 1024 / count, count


# --- processes ------------------------------------------------------------------------------
def free_port() -> int:
    from devtools.stack import free_port as stack_free_port

    return stack_free_port()


def wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    from devtools.stack import wait_for_port

    wait_for_port("127.0.0.1", port, 30, what, proc)


class Processes:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str, argv: list[str], env: dict, port: int) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(argv, cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        wait_port(port, proc, name)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def make_env(workdir: Path, redis_url: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ELEPHANT_", "DJANGO_", "DATABASE_URL"))}
    env.update(
        DJANGO_SETTINGS_MODULE="elephant.settings",
        DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY="bench-relay-secret-key-not-for-production-0123456789",
        DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
        DJANGO_LOG_LEVEL="WARNING",
        DATABASE_URL=f"sqlite:///{workdir / 'bench.sqlite3'}",
        REDIS_URL=redis_url,
        ELEPHANT_SIGNALLING_RATE_PER_SECOND="1000000",
        ELEPHANT_SIGNALLING_RATE_BURST="1000000",
        ELEPHANT_SIGNALLING_MAX_SOCKETS="1000000",  # the caps too: every bench socket comes from 127.0.0.1
        ELEPHANT_SIGNALLING_MAX_SOCKETS_PER_ADDRESS="1000000",
        ELEPHANT_SIGNALLING_JOIN_SECONDS="600",
        PYTHONUNBUFFERED="1",
    )
    return env


def make_meetings(env: dict, count: int) -> list[tuple[str, str, str]]:
    """Migrate the bench database and create ``count`` meetings; return (id, teacher token, student token)."""
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=BASE_DIR, env=env, check=True, capture_output=True
    )
    os.environ.update(env)
    import django

    django.setup()
    from datetime import timedelta

    from django.utils import timezone

    from meetings.models import Meeting
    from meetings.tokens import participant_token

    now = timezone.now()
    meetings = Meeting.objects.bulk_create(
        Meeting(teacher_name="Bench Teacher", student_name="Bench Student", meet_time=now + timedelta(minutes=5))
        for _ in range(count)
    )
    return [
        (m.id, participant_token(meeting_id=m.id, role="teacher"), participant_token(meeting_id=m.id, role="student"))
        for m in meetings
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per target (default 8)")
    parser.add_argument("--rooms", type=int, default=50, help="rooms of 2 peers (default 50)")
    parser.add_argument("--idle", type=int, default=2000, help="idle sockets for the memory figure (default 2000)")
    parser.add_argument("--only", default="", help="comma-separated targets: bare,tutorial,elephant,split")
    parser.add_argument("--serve-bare", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        asyncio.run(serve_bare(args.serve_bare))
        return
    if not shutil.which("redis-server"):
        sys.exit("redis-server is needed on PATH")

    workdir = Path(tempfile.mkdtemp(prefix="elephant-bench-"))
    procs = Processes(workdir)
    try:
        redis_port = free_port()
        procs.start(
            "redis",
            ["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
            os.environ.copy(),
            redis_port,
        )
        env = make_env(workdir, f"redis://127.0.0.1:{redis_port}/0")
        rooms = make_meetings(env, args.rooms + args.idle // 2 + 1)
        ping_rooms, idle_rooms = rooms[: args.rooms], rooms[args.rooms :]
        daphne = str(Path(sys.executable).parent / "daphne")

        def start_daphne(name: str, app: str) -> tuple[str, subprocess.Popen]:
            port = free_port()
            proc = procs.start(name, [daphne, "-b", "127.0.0.1", "-p", str(port), app], env, port)
            return f"ws://127.0.0.1:{port}", proc

        wanted = set(filter(None, args.only.split(","))) or {"bare", "tutorial", "elephant", "split"}
        results: dict[str, dict] = {}
        elephant_url = elephant_pid = None
        if "bare" in wanted:
            port = free_port()
            procs.start("bare", [sys.executable, __file__, "--serve-bare", str(port)], env, port)
            url = f"ws://127.0.0.1:{port}"
            results["bare"] = asyncio.run(drive(Target("bare", (url, url), "bare"), ping_rooms, args.duration))
        if "tutorial" in wanted:
            url, _ = start_daphne("tutorial", "bench.relay:tutorial_application")
            results["tutorial"] = asyncio.run(
                drive(Target("tutorial", (url, url), "tutorial"), ping_rooms, args.duration)
            )
        if "elephant" in wanted or "split" in wanted or args.idle:
            elephant_url, proc = start_daphne("elephant", "elephant.asgi:application")
            elephant_pid = proc.pid
        if "elephant" in wanted:
            results["elephant"] = asyncio.run(
                drive(Target("elephant", (elephant_url, elephant_url), "elephant"), ping_rooms, args.duration)
            )
        if "split" in wanted:
            other_url, _ = start_daphne("elephant2", "elephant.asgi:application")
            results["split"] = asyncio.run(
                drive(Target("split", (elephant_url, other_url), "elephant"), ping_rooms, args.duration)
            )
        report(results, args)
        if args.idle:
            per_socket, count = asyncio.run(idle_memory(elephant_url, elephant_pid, idle_rooms))
            print(
                f"\nmemory per idle connection (elephant, one daphne, {count} joined sockets): "
                f"{per_socket / 1024:.1f} KiB"
            )
    finally:
        procs.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def report(results: dict, args) -> None:
    print(
        f"\n{args.rooms} rooms x 2 peers, closed-loop ping-pong, {args.duration:g} s per target, {os.cpu_count()} CPUs"
    )
    print(f"{'target':<10} {'rt/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'rt/s vs bare':>13} {'p99 vs bare':>12}")
    bare = results.get("bare")
    for name, r in results.items():
        ratio = f"{r['rt_s'] / bare['rt_s']:.2f}x" if bare else "-"
        p99 = f"{r['p99_ms'] / bare['p99_ms']:.2f}x" if bare else "-"
        print(f"{name:<10} {r['rt_s']:>9.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {ratio:>13} {p99:>12}")
    if "split" in results and "tutorial" in results:
        print(f"split vs tutorial: {results['split']['rt_s'] / results['tutorial']['rt_s']:.1f}x rt/s")


if __name__ == "__main__":
    main()
