"""The signalling socket, ``/ws/signalling/``: WebRTC rooms and meeting status push.

Protocol, limits and close codes: README "Signalling". The consumer keeps the shape of
the Channels multichat example (authenticate, dispatch on ``action``, errors as frames).
It talks to the process hub only through the hub's public methods (``join``,
``announce_join``, ``participants``, ``leave``, ``relay``, ``subscribe``, ``unsubscribe``)
and is, to the hub, a ``signalling.hub.RoomMember``: ``connection_id``, ``deliver(text)``,
``evicted(room_id)``. Neither reads the other's attributes.

One departure from Channels' ordinary base class, measured: ``__call__`` is AsyncConsumer's
without the per-socket channel-layer channel, without a task per frame and without
``aclose_old_connections`` (a thread hop) per frame; the hub reads one channel for every
socket of the process, and only the access check touches the database, through
``database_sync_to_async``. ``bench/relay.py --only bare,elephant,split --duration 4
--idle 500``, interleaved runs on one 2-CPU machine (rt/s as a fraction of the bare relay,
median of 2-5 runs): this loop 0.32x, 23.6 KiB per idle socket; the ordinary
``AsyncConsumer.__call__`` 0.11x, 32.7 KiB; the ordinary ``__call__`` with no channel and
no ``aclose_old_connections`` (only the task per frame left) 0.26x, 26.7 KiB.
"""

import asyncio
import json
import logging
import math
import re
import secrets
import time
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from meetings.models import MEETING_ID_REGEX
from signalling.hub import frame, get_hub
from signalling.limits import TokenBucket, socket_counts
from signalling.selectors import meeting_access
from signalling.services import meeting_start_from_room

logger = logging.getLogger(__name__)

# Close codes (documented in README "Signalling").
CLOSE_TOO_BIG = 1009  # a frame larger than MAX_FRAME_BYTES; daphne itself closes 1009 above 1 MiB
CLOSE_SEND_FAILED = 1011  # a send to this socket failed (it was closing already)
CLOSE_AUTH_FAILED = 4003  # ELEPHANT_SIGNALLING_AUTH_FAILURES failed joinRoom/subscribe attempts
CLOSE_REPLACED = 4009  # the same participant connected again; this older socket is closed
# In no room and no subscription ELEPHANT_SIGNALLING_JOIN_SECONDS after connecting, or
# ELEPHANT_SIGNALLING_IDLE_SECONDS after leaving the last one. No frame resets that clock.
CLOSE_IDLE = 4408
CLOSE_TOO_MANY_SOCKETS = 4429  # over ELEPHANT_SIGNALLING_MAX_SOCKETS(_PER_ADDRESS): refused on connect

MAX_FRAME_BYTES = 1024 * 1024
MAX_ROOMS_PER_CONNECTION = 8
_MEETING_ID = re.compile(MEETING_ID_REGEX)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999: no JSON number can say what it became
        raise ValueError(f"{text[:32]} is out of range")
    return value


# Strict JSON: NaN, Infinity and out-of-range numbers are refused, never relayed as non-JSON.
_decoder = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


class SignallingConsumer(AsyncJsonWebsocketConsumer):
    closed = True  # until connect: nothing to release

    async def __call__(self, scope, receive, send):
        # AsyncConsumer.__call__ without the per-socket channel, the task per frame and the
        # per-frame aclose_old_connections (measured: see the module docstring); the hub
        # delivers everything that comes from other processes.
        self.scope = scope
        self.base_send = send
        self.channel_layer = None
        try:
            while True:
                message = await receive()
                kind = message["type"]
                if kind == "websocket.receive":
                    await self.websocket_receive(message)
                elif kind == "websocket.connect":
                    await self.websocket_connect(message)
                elif kind == "websocket.disconnect":
                    await self.websocket_disconnect(message)
        except StopConsumer:
            pass
        finally:
            # Also after an exception or a cancellation: a consumer left in the hub would be
            # refreshed in Redis forever, a ghost in its rooms.
            await self._release()

    # --- lifecycle ------------------------------------------------------------------------
    async def connect(self):
        self.connection_id = secrets.token_urlsafe(12)
        self.rooms: set[str] = set()
        self.meetings: set[str] = set()
        self.auth_failures = 0
        self.bucket = TokenBucket(
            rate=settings.ELEPHANT_SIGNALLING_RATE_PER_SECOND, burst=settings.ELEPHANT_SIGNALLING_RATE_BURST
        )
        self.rate_error_at = 0.0
        self.max_message = settings.ELEPHANT_SIGNALLING_MAX_MESSAGE_BYTES
        self.idle_seconds = settings.ELEPHANT_SIGNALLING_IDLE_SECONDS
        self.idle_timer = None
        self.closing_task = None
        query = parse_qs(self.scope.get("query_string", b"").decode("latin1"))
        self.url_token = (query.get("t") or [None])[0]
        self.address = (self.scope.get("client") or [None])[0]
        self.hub = await get_hub()
        self.sockets = socket_counts()
        if not self.sockets.claim(
            self.address,
            per_process=settings.ELEPHANT_SIGNALLING_MAX_SOCKETS,
            per_address=settings.ELEPHANT_SIGNALLING_MAX_SOCKETS_PER_ADDRESS,
        ):
            # Accepted first, so that the client sees the code rather than a failed handshake.
            await self.accept()
            return await super().close(CLOSE_TOO_MANY_SOCKETS)
        self.closed = False  # from here on _release gives the slot back
        await self.accept()
        await self.send_frame(type="connected", connectionId=self.connection_id)
        self._arm_idle_timer(settings.ELEPHANT_SIGNALLING_JOIN_SECONDS)

    async def disconnect(self, code):
        await self._release()

    async def close(self, code=None, reason=None):
        await self._release()
        try:
            await super().close(code, reason)
        except Exception:  # the socket is closing already
            pass

    async def _release(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.sockets.release(self.address)
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        for room_id in list(self.rooms):
            self.rooms.discard(room_id)
            await self.hub.leave(self, room_id)
        for meeting_id in list(self.meetings):
            await self.hub.unsubscribe(self, meeting_id)
        self.meetings.clear()

    # --- signalling.hub.RoomMember ---------------------------------------------------------
    async def deliver(self, text: str) -> None:
        try:
            await self.base_send({"type": "websocket.send", "text": text})
        except Exception:
            # The socket is closing (autobahn refuses sends from the close frame until daphne
            # sees the TCP connection end, which a peer that stopped reading can put off
            # indefinitely). Leave its rooms now; never fail whoever was sending to it.
            if not self.closed and self.closing_task is None:
                self.closing_task = asyncio.ensure_future(self.close(CLOSE_SEND_FAILED))

    async def evicted(self, room_id: str) -> None:
        self.rooms.discard(room_id)
        await self.close(CLOSE_REPLACED)

    async def room_closed(self, room_id: str) -> None:
        self.rooms.discard(room_id)
        self._arm_idle_timer(self.idle_seconds)

    # --- frames ---------------------------------------------------------------------------
    async def send_frame(self, **fields) -> None:
        await self.deliver(frame(**fields))

    async def send_error(self, code: str, message: str, action=None) -> None:
        if action is None:
            await self.send_frame(type="error", code=code, message=message)
        else:
            await self.send_frame(type="error", code=code, message=message, action=action)

    async def receive(self, text_data=None, bytes_data=None):
        if self.closed:
            return
        # Every frame spends from the bucket first, binary and oversize ones included.
        if not self.bucket.take():
            now = time.monotonic()
            if now - self.rate_error_at >= 1.0:  # one error a second, the rest are dropped silently
                self.rate_error_at = now
                await self.send_error("rate_limited", "Too many frames; this one was dropped. Slow down.")
            return
        if text_data is None:
            if len(bytes_data or b"") > MAX_FRAME_BYTES:
                return await self.close(CLOSE_TOO_BIG)
            return await self.send_error("bad_frame", "Send JSON text frames, not binary ones.")
        size = len(text_data)
        if size * 4 > self.max_message:  # only then can the UTF-8 form be too large
            size = len(text_data.encode(errors="surrogatepass"))
            if size > MAX_FRAME_BYTES:
                return await self.close(CLOSE_TOO_BIG)
            if size > self.max_message:
                return await self.send_error("too_large", f"Frames are limited to {self.max_message} bytes.")
        try:
            content = _decoder.decode(text_data)
        except (ValueError, RecursionError):  # RecursionError: 50,000 '[' fit in a frame
            return await self.send_error("bad_json", "The frame is not valid JSON (NaN and Infinity are not).")
        if not isinstance(content, dict):
            return await self.send_error("bad_frame", 'A frame must be a JSON object with an "action".')
        action = content.get("action")
        handler = self.actions.get(action) if isinstance(action, str) else None
        if handler is None:
            if action is None:
                return await self.send_error("unknown_action", 'The frame has no "action".')
            shown = str(action)[:64]
            return await self.send_error("unknown_action", f"Unknown action {shown!r}.", shown)
        await handler(self, content)

    # --- actions --------------------------------------------------------------------------
    async def send_msg_to_room(self, content: dict) -> None:
        room_id = content.get("roomId")
        if not isinstance(room_id, str) or room_id not in self.rooms:
            return await self.send_error("not_joined", "Join the room before sending to it.", "sendMsgToRoom")
        if "message" not in content:
            return await self.send_error("bad_request", 'sendMsgToRoom needs a "message".', "sendMsgToRoom")
        message = content["message"]
        if isinstance(message, str):
            # A JSON escape can make a lone surrogate, which no WebSocket text frame can carry.
            if not message.isascii() and not _encodable(message):
                return await self.send_error("bad_request", "message is not valid Unicode.", "sendMsgToRoom")
            text = message
        else:
            try:
                text = json.dumps(message, separators=(",", ":"), allow_nan=False)
            except (ValueError, RecursionError):
                return await self.send_error("bad_request", "message is nested too deeply.", "sendMsgToRoom")
        await self.hub.relay(self, room_id, text)

    async def join_room(self, content: dict) -> None:
        room_id = content.get("roomId")
        if not isinstance(room_id, str) or not _MEETING_ID.match(room_id):
            return await self.send_error("bad_request", "roomId must be a meeting id.", "joinRoom")
        if room_id in self.rooms:
            return await self.send_frame(
                type="joined", roomId=room_id, participants=self.hub.participants(self, room_id)
            )
        access = await self._authorize(room_id, content, "joinRoom")
        if access is None:
            return
        if access.terminal:
            return await self.send_error("room_closed", "This meeting has ended.", "joinRoom")
        if access.by_token and not access.in_join_window:
            return await self.send_error("room_closed", "The room is open only around the meeting time.", "joinRoom")
        if len(self.rooms) >= MAX_ROOMS_PER_CONNECTION:
            return await self.send_error("too_many_rooms", "Leave a room first.", "joinRoom")
        self.rooms.add(room_id)  # before the hub's awaits: a close meanwhile leaves the room
        try:
            participants = await self.hub.join(self, room_id, access.identity)
        except Exception:
            self.rooms.discard(room_id)
            logger.warning("join %s failed", room_id, exc_info=True)
            return await self.send_error("unavailable", "Rooms are unavailable for a moment; retry.", "joinRoom")
        if participants is None:
            self.rooms.discard(room_id)
            return await self.send_error("room_full", "The room is full.", "joinRoom")
        if self.closed:  # the socket went away while Redis answered
            return await self.hub.leave(self, room_id)
        self._disarm_idle_timer()
        await self.send_frame(type="joined", roomId=room_id, participants=participants)
        await self.hub.announce_join(self, room_id)
        if access.starts_meeting:
            await self._start_meeting(room_id, access.identity)

    async def leave_room(self, content: dict) -> None:
        room_id = content.get("roomId")
        if not isinstance(room_id, str) or room_id not in self.rooms:
            return await self.send_error("not_joined", "You are not in that room.", "leaveRoom")
        self.rooms.discard(room_id)
        await self.hub.leave(self, room_id)
        self._arm_idle_timer(self.idle_seconds)

    async def subscribe(self, content: dict) -> None:
        meeting_id = content.get("meetingId")
        if not isinstance(meeting_id, str) or not _MEETING_ID.match(meeting_id):
            return await self.send_error("bad_request", "meetingId must be a meeting id.", "subscribe")
        access = await self._authorize(meeting_id, content, "subscribe")
        if access is None:
            return
        if meeting_id not in self.meetings:
            try:
                await self.hub.subscribe(self, meeting_id)
            except Exception:
                logger.warning("subscribe %s failed", meeting_id, exc_info=True)
                return await self.send_error("unavailable", "Status is unavailable for a moment; retry.", "subscribe")
            self.meetings.add(meeting_id)
            self._disarm_idle_timer()
        # The current status, so a client never misses a change made before it subscribed.
        await self.send_frame(
            type="status",
            meetingId=meeting_id,
            status=access.status,
            previousStatus="",
            reason=access.reason,
            ready=access.ready,
            terminal=access.terminal,
        )

    async def ping(self, content: dict) -> None:
        await self.send_frame(type="pong")

    actions = {
        "sendMsgToRoom": send_msg_to_room,
        "joinRoom": join_room,
        "leaveRoom": leave_room,
        "subscribe": subscribe,
        "ping": ping,
    }

    # --- helpers --------------------------------------------------------------------------
    async def _authorize(self, meeting_id: str, content: dict, action: str):
        token = content.get("token") or self.url_token
        if not isinstance(token, str):
            token = None
        try:
            access = await database_sync_to_async(meeting_access)(
                meeting_id=meeting_id, token=token, user=self.scope.get("user")
            )
        except Exception:
            logger.warning("access check for %s failed", meeting_id, exc_info=True)
            await self.send_error("unavailable", "Access cannot be checked for a moment; retry.", action)
            return None
        if access is not None:
            return access
        self.auth_failures += 1
        await self.send_error("forbidden", "No access to this meeting: check the link's token.", action)
        if self.auth_failures >= settings.ELEPHANT_SIGNALLING_AUTH_FAILURES:
            await self.close(CLOSE_AUTH_FAILED)
        return None

    async def _start_meeting(self, meeting_id: str, role: str) -> None:
        # A participant is in the video room: the session has started (HEALTHY -> IN_PROGRESS).
        try:
            await database_sync_to_async(meeting_start_from_room)(meeting_id=meeting_id, role=role)
        except Exception:  # the join stands; the DCV authentication or the next join starts it
            logger.warning("could not start meeting %s on a room join", meeting_id, exc_info=True)

    def _arm_idle_timer(self, seconds: float) -> None:
        # A deadline, not a silence: frames (garbage or pings) never push it back.
        if self.rooms or self.meetings or self.closed or self.idle_timer is not None:
            return
        self.idle_timer = asyncio.get_running_loop().call_later(seconds, self._idle_check)

    def _disarm_idle_timer(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None

    def _idle_check(self) -> None:
        self.idle_timer = None
        if self.rooms or self.meetings or self.closed:
            return
        self.closing_task = asyncio.ensure_future(self.close(CLOSE_IDLE))


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
